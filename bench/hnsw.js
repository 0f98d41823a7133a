// HNSW benchmark: Cairn's graph against hnswlib-node, in one run, on the same data and queries.
//
//   node bench/hnsw.js                          # both datasets (~5 min on 2 idle cores)
//   node bench/hnsw.js clustered                # one of them: clustered | fashion
//   BENCH_TIME_MS=500 node bench/hnsw.js        # shorter tinybench tasks (default 1000 ms)
//   HNSW_N=20000 node bench/hnsw.js clustered   # fewer base vectors (quick check, targets not comparable)
//   HNSW_EFS=16,32,64,128,256,512 node bench/hnsw.js clustered   # wider beams too (must include 64)
//
// Datasets (both l2, M=16, efConstruction=200):
// - clustered: 100k x 128 seeded gaussian mixture (50 centres ~ N(0,1), points = centre +
//   N(0, 0.5^2)), 1,000 held-out queries from the same mixture;
// - fashion: Fashion-MNIST, the 60k x 784 training images as raw 0..255 pixels, queries = the
//   first 1,000 test images. Debian ships them: `bash bench/setup-datasets.sh`.
//
// Each index is built in its own `node` child process so that its peak RSS is its own (VmHWM on
// Linux, see maxRssBytes; process.resourceUsage().maxRSS elsewhere). A third child only loads the
// dataset: its peak is the floor both builds share. Cairn builds by upserting batches of 5,000
// records and awaiting waitForIndex (the background indexer inserts on all cores); hnswlib-node
// builds with an addPoint loop (one core). Both children persist their index (Cairn: checkpoint +
// close; hnswlib: writeIndex), and this process opens both for the query measurements, so nothing
// is built twice. The first query after Cairn's open is the "open + first query" figure; a final
// step deletes Cairn's persisted graph (data/*.hnsw), reopens, and times the rebuild.
//
// Recall@10 counts the returned ids whose true distance is within the exact 10th-nearest
// distance (so ties at the boundary do not count against either engine). The exact neighbours
// are computed once per dataset, by brute force in JS on worker threads, and cached under
// bench/.bench-data/hnsw/.
//
// Single-query QPS: one tinybench suite per dataset, a task per engine and ef, each cycling through
// the 1,000 queries; Cairn through the async `query` (awaited one at a time) and through
// `querySync` (the same search on the JS thread, no thread-pool hop), hnswlib-node through
// `searchKnn` after `setEf`. The QPS column is runs / total time (1000 / mean latency). "Same
// recall" compares each Cairn point with hnswlib-node's QPS interpolated at Cairn's recall.
// hnswlib-node compiles with node-gyp's default flags (SSE2, no -march=native); Cairn picks its
// distance kernel at run time.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { gunzipSync } from 'node:zlib';

import { open } from 'cairndb';
import hnswlib from 'hnswlib-node';
import { Bench } from 'tinybench';
import { mulberry32 as rng } from '../test/fixtures/mulberry32.mjs';

const { HierarchicalNSW } = hnswlib;
const here = dirname(fileURLToPath(import.meta.url));
const selfPath = fileURLToPath(import.meta.url);
export const DATA_DIR = join(here, '.bench-data', 'hnsw');

const M = 16;
const EF_CONSTRUCTION = 200;
const K = 10;
/** The beams issue 13 names (HNSW_EFS=16,32,...,512 adds wider ones, e.g. to find where recall
 *  reaches 0.95 at 1M); REF_EF is the one the build and rebuild rows quote recall at. */
const REF_EF = 64;
const EFS = beams(process.env.HNSW_EFS ?? '16,32,64,128');
/** hnswlib-node also runs at ef 12, below the list, only so that its QPS can be interpolated at
 *  Cairn's recall for ef 16 when that recall falls just under hnswlib-node's own at ef 16. */
const PEER_EFS = [12, ...EFS];
const QUERIES = 1_000;
const UPSERT_BATCH = 5_000;
const TIME_MS = Number(process.env.BENCH_TIME_MS ?? 1000);
const WARMUP_MS = Math.min(200, TIME_MS / 4);
const FASHION_DIR = '/usr/share/datasets/fashion-mnist';
const COLLECTION = 'vectors';

function beams(list) {
  const efs = list.split(',').map(Number);
  if (!efs.includes(REF_EF) || efs.some((ef) => !Number.isInteger(ef) || ef < K || ef > 4096)) {
    throw new Error(`HNSW_EFS must list integers in ${K}..4096 and include ${REF_EF}: ${list}`);
  }
  return efs.sort((a, b) => a - b);
}

/** The issue's targets. */
const TARGETS = {
  build: 'build time <= 0.5x hnswlib-node at equal or better recall',
  qps: 'single-query QPS >= 1.0x hnswlib-node at equal recall',
  open: 'open + first query, 100k x 128 <= 150 ms',
  rss: 'peak RSS of the build <= 1.3x hnswlib-node',
};

// ---- datasets ------------------------------------------------------------------------------

function gaussianSource(seed) {
  const uniform = rng(seed);
  let spare = null;
  return () => {
    if (spare !== null) {
      const s = spare;
      spare = null;
      return s;
    }
    const u = 1 - uniform();
    const v = uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  };
}

function clusteredDataset(n) {
  const dim = 128;
  const clusters = 50;
  const gauss = gaussianSource(42);
  const pick = rng(7);
  const centres = Float32Array.from({ length: clusters * dim }, () => gauss());
  const sample = (count) => {
    const out = new Float32Array(count * dim);
    for (let i = 0; i < count; i++) {
      const c = Math.floor(pick() * clusters) * dim;
      for (let d = 0; d < dim; d++) out[i * dim + d] = centres[c + d] + 0.5 * gauss();
    }
    return out;
  };
  const base = sample(n);
  return { name: 'clustered', label: `clustered ${n / 1000}k x ${dim}`, dim, n, base, queries: sample(QUERIES) };
}

/** IDX3 image file (big-endian header: magic 0x00000803, count, rows, cols; then u8 pixels). */
function readIdxImages(file, limit) {
  const buf = gunzipSync(readFileSync(file));
  const magic = buf.readUInt32BE(0);
  if (magic !== 0x803) throw new Error(`${file}: not an IDX3 image file (magic ${magic.toString(16)})`);
  const count = Math.min(buf.readUInt32BE(4), limit);
  const dim = buf.readUInt32BE(8) * buf.readUInt32BE(12);
  const out = new Float32Array(count * dim);
  for (let i = 0; i < out.length; i++) out[i] = buf[16 + i];
  return { count, dim, vectors: out };
}

function fashionDataset(limit) {
  const train = readIdxImages(join(FASHION_DIR, 'train-images-idx3-ubyte.gz'), limit);
  const test = readIdxImages(join(FASHION_DIR, 't10k-images-idx3-ubyte.gz'), QUERIES);
  const label = `fashion-mnist ${train.count / 1000}k x ${train.dim}`;
  return { name: 'fashion', label, dim: train.dim, n: train.count, base: train.vectors, queries: test.vectors };
}

function fashionAvailable() {
  return existsSync(join(FASHION_DIR, 'train-images-idx3-ubyte.gz')) && existsSync(join(FASHION_DIR, 't10k-images-idx3-ubyte.gz'));
}

function generateDataset(name) {
  const limit = process.env.HNSW_N ? Number(process.env.HNSW_N) : undefined;
  if (name === 'clustered') return clusteredDataset(limit ?? 100_000);
  if (name === 'fashion') return fashionDataset(limit ?? 60_000);
  throw new Error(`unknown dataset '${name}' (clustered | fashion)`);
}

function cacheFile(name) {
  return join(DATA_DIR, `${name}-${process.env.HNSW_N ?? 'full'}-v1.f32`);
}

/** Float32Array over a file's bytes, without a second copy (the children's RSS floor). */
function floats(buf, byteOffset, count) {
  if ((buf.byteOffset + byteOffset) % 4 === 0) return new Float32Array(buf.buffer, buf.byteOffset + byteOffset, count);
  return new Float32Array(buf.buffer.slice(buf.byteOffset + byteOffset, buf.byteOffset + byteOffset + count * 4));
}

/**
 * The dataset, generated or decoded once and cached as one raw file (a JSON header line, then
 * base and query vectors as little-endian f32), which the build children read as it is.
 */
function loadDataset(name) {
  const file = cacheFile(name);
  if (!existsSync(file)) {
    const ds = generateDataset(name);
    const { base, queries, ...meta } = ds;
    const header = Buffer.from(`${JSON.stringify(meta)}\n`.padEnd(256, ' '));
    mkdirSync(DATA_DIR, { recursive: true });
    writeFileSync(
      file,
      Buffer.concat([header, Buffer.from(base.buffer, base.byteOffset, base.byteLength), Buffer.from(queries.buffer, queries.byteOffset, queries.byteLength)]),
    );
  }
  const buf = readFileSync(file);
  const meta = JSON.parse(buf.subarray(0, 256).toString());
  const base = floats(buf, 256, meta.n * meta.dim);
  const queries = floats(buf, 256 + base.byteLength, (buf.length - 256 - base.byteLength) / 4);
  return { ...meta, base, queries };
}

function row(v, i, dim) {
  return v.subarray(i * dim, (i + 1) * dim);
}

function l2sq(a, b) {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let d = 0;
  for (; d + 3 < a.length; d += 4) {
    const x0 = a[d] - b[d];
    const x1 = a[d + 1] - b[d + 1];
    const x2 = a[d + 2] - b[d + 2];
    const x3 = a[d + 3] - b[d + 3];
    s0 += x0 * x0;
    s1 += x1 * x1;
    s2 += x2 * x2;
    s3 += x3 * x3;
  }
  for (; d < a.length; d++) s0 += (a[d] - b[d]) ** 2;
  return s0 + s1 + s2 + s3;
}

// ---- exact neighbours (worker threads, cached) ---------------------------------------------

/** Worker body: exact top-K ids and the K-th distance for queries [from, to). */
function groundTruthWorker({ base, queries, dim, n, from, to }) {
  const b = new Float32Array(base);
  const q = new Float32Array(queries);
  const ids = new Int32Array((to - from) * K);
  const kth = new Float64Array(to - from);
  const bestD = new Float64Array(K);
  const bestI = new Int32Array(K);
  const qv = new Float64Array(dim);
  for (let qi = from; qi < to; qi++) {
    for (let d = 0; d < dim; d++) qv[d] = q[qi * dim + d];
    bestD.fill(Infinity);
    bestI.fill(-1);
    for (let i = 0; i < n; i++) {
      // Exact in float64; stops early once past the current K-th distance.
      const at = i * dim;
      const bound = bestD[K - 1];
      let d = 0;
      for (let j = 0; j < dim; j += 16) {
        const end = Math.min(j + 16, dim);
        for (let x = j; x < end; x++) {
          const diff = qv[x] - b[at + x];
          d += diff * diff;
        }
        if (d >= bound) break;
      }
      if (d >= bound) continue;
      let j = K - 1;
      while (j > 0 && bestD[j - 1] > d) {
        bestD[j] = bestD[j - 1];
        bestI[j] = bestI[j - 1];
        j--;
      }
      bestD[j] = d;
      bestI[j] = i;
    }
    ids.set(bestI, (qi - from) * K);
    kth[qi - from] = bestD[K - 1];
  }
  parentPort.postMessage({ ids, kth }, [ids.buffer, kth.buffer]);
}

async function groundTruth(ds) {
  const file = join(DATA_DIR, `${ds.name}-${ds.n}-gt-v1.bin`);
  const nq = ds.queries.length / ds.dim;
  if (existsSync(file)) {
    const buf = readFileSync(file);
    const ids = new Int32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + nq * K * 4));
    const kth = new Float64Array(buf.buffer.slice(buf.byteOffset + nq * K * 4, buf.byteOffset + nq * K * 4 + nq * 8));
    return { ids, kth, seconds: 0, cached: true };
  }
  const started = performance.now();
  const share = (v) => {
    const sab = new SharedArrayBuffer(v.byteLength);
    new Float32Array(sab).set(v);
    return sab;
  };
  const base = share(ds.base);
  const queries = share(ds.queries);
  const workers = 2;
  const parts = await Promise.all(
    Array.from({ length: workers }, (_, w) => {
      const from = Math.floor((nq * w) / workers);
      const to = Math.floor((nq * (w + 1)) / workers);
      return new Promise((resolve, reject) => {
        const worker = new Worker(selfPath, { workerData: { base, queries, dim: ds.dim, n: ds.n, from, to } });
        worker.once('message', (m) => resolve({ from, ...m }));
        worker.once('error', reject);
      });
    }),
  );
  const ids = new Int32Array(nq * K);
  const kth = new Float64Array(nq);
  for (const p of parts) {
    ids.set(p.ids, p.from * K);
    kth.set(p.kth, p.from);
  }
  mkdirSync(DATA_DIR, { recursive: true });
  writeFileSync(file, Buffer.concat([Buffer.from(ids.buffer), Buffer.from(kth.buffer)]));
  return { ids, kth, seconds: (performance.now() - started) / 1000, cached: false };
}

/** Mean recall@K: returned ids within the exact K-th distance (tolerance for float32 rounding). */
function recallOf(ds, gt, results) {
  let found = 0;
  results.forEach((ids, qi) => {
    const limit = gt.kth[qi] * (1 + 1e-5) + 1e-6;
    const q = row(ds.queries, qi, ds.dim);
    for (const id of new Set(ids.slice(0, K))) {
      if (id >= 0 && id < ds.n && l2sq(q, row(ds.base, id, ds.dim)) <= limit) found++;
    }
  });
  return found / (results.length * K);
}

// ---- child processes: builds and the dataset-only floor ------------------------------------

function storeDir(ds) {
  return join(DATA_DIR, `${ds.name}-${ds.n}-cairn`);
}

function hnswlibFile(ds) {
  return join(DATA_DIR, `${ds.name}-${ds.n}.hnswlib`);
}

/**
 * Peak RSS of this process. On Linux, VmHWM of /proc/self/status: resourceUsage().maxRSS
 * (getrusage) keeps the parent's RSS at fork across execve, so every child would report at
 * least this (large) orchestrating process's footprint. Elsewhere, maxRSS.
 */
function maxRssBytes() {
  try {
    const hwm = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (hwm) return Number(hwm[1]) * 1024;
  } catch {
    // No procfs: fall through.
  }
  return process.resourceUsage().maxRSS * 1024;
}

const CHILD_ROLES = {
  async floor(ds) {
    return { rss: maxRssBytes(), checksum: ds.base[ds.base.length - 1] };
  },

  async hnswlib(ds) {
    const index = new HierarchicalNSW('l2', ds.dim);
    const started = performance.now();
    index.initIndex(ds.n, M, EF_CONSTRUCTION, 100);
    for (let i = 0; i < ds.n; i++) index.addPoint(Array.from(row(ds.base, i, ds.dim)), i);
    const buildS = (performance.now() - started) / 1000;
    const rss = maxRssBytes();
    const file = hnswlibFile(ds);
    rmSync(file, { force: true });
    index.writeIndexSync(file);
    return { buildS, rss, rssPersisted: maxRssBytes(), fileBytes: statSync(file).size };
  },

  async cairn(ds) {
    const dir = storeDir(ds);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dirname(dir), { recursive: true });
    const db = await open(dir);
    const col = await db.createCollection(COLLECTION, { dim: ds.dim, metric: 'l2', m: M, efConstruction: EF_CONSTRUCTION });
    const started = performance.now();
    for (let from = 0; from < ds.n; from += UPSERT_BATCH) {
      const records = [];
      for (let i = from; i < Math.min(ds.n, from + UPSERT_BATCH); i++) records.push({ id: String(i), vector: row(ds.base, i, ds.dim) });
      await col.upsert(records);
    }
    const upsertS = (performance.now() - started) / 1000;
    await col.waitForIndex();
    const buildS = (performance.now() - started) / 1000;
    const rss = maxRssBytes();
    const stats = col.indexStats();
    const t = performance.now();
    await db.checkpoint();
    const checkpointS = (performance.now() - t) / 1000;
    const rssPersisted = maxRssBytes();
    await db.close();
    return { buildS, upsertS, rss, rssPersisted, stats, checkpointS };
  },
};

function runChild(role, name) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [selfPath, '--child', role, name], { maxBuffer: 1 << 24, env: process.env }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`child ${role} ${name} failed: ${err.message}\n${stderr}`));
      const last = stdout.trim().split('\n').at(-1);
      resolve(JSON.parse(last));
    });
  });
}

// ---- measurements in this process ----------------------------------------------------------

async function openCairn(ds, probe) {
  const t0 = performance.now();
  const db = await open(storeDir(ds));
  const t1 = performance.now();
  const col = db.collection(COLLECTION);
  await col.query(probe, { k: K, ef: 50 });
  const t2 = performance.now();
  return { db, col, openMs: t1 - t0, firstQueryMs: t2 - t1, rebuilds: db.recoveryReport.indexRebuilds, stats: col.indexStats() };
}

async function openHnswlib(ds, probe) {
  const t0 = performance.now();
  const index = new HierarchicalNSW('l2', ds.dim);
  await index.readIndex(hnswlibFile(ds));
  const t1 = performance.now();
  index.setEf(50);
  index.searchKnn(probe, K);
  const t2 = performance.now();
  return { index, openMs: t1 - t0, firstQueryMs: t2 - t1 };
}

/**
 * hnswlib-node's QPS at Cairn's recall, interpolated in log(QPS) between the two ef points whose
 * recalls bracket it (where several reach it, the fastest). null outside hnswlib's measured range.
 */
function qpsAtRecall(points, recall) {
  const i = points.findIndex((p) => p.recall >= recall);
  if (i < 0) return null;
  const b = points[i];
  if (b.recall === recall) return b.qps;
  if (i === 0) return null;
  const a = points[i - 1];
  const f = (recall - a.recall) / (b.recall - a.recall);
  return Math.exp(Math.log(a.qps) + f * (Math.log(b.qps) - Math.log(a.qps)));
}

const qpsOf = (task) => (task.result.state === 'completed' ? 1000 / task.result.period : NaN);
const fmt = (x, digits = 0) => (x === null || Number.isNaN(x) ? 'n/a' : Number(x.toFixed(digits)));
const mib = (bytes) => fmt(bytes / 2 ** 20, 1);

async function benchDataset(name, out) {
  const ds = loadDataset(name);
  const nq = ds.queries.length / ds.dim;
  const gt = await groundTruth(ds);
  console.log(`${ds.label}: exact neighbours ${gt.cached ? 'from cache' : `computed in ${gt.seconds.toFixed(1)} s`}`);

  const floor = await runChild('floor', name);
  const hl = await runChild('hnswlib', name);
  console.log(`${ds.label}: hnswlib-node built in ${hl.buildS.toFixed(1)} s`);
  const cb = await runChild('cairn', name);
  console.log(`${ds.label}: cairn built in ${cb.buildS.toFixed(1)} s`);

  const qF32 = Array.from({ length: nq }, (_, i) => row(ds.queries, i, ds.dim));
  const qArr = qF32.map((q) => Array.from(q));

  const cairn = await openCairn(ds, qF32[0]);
  const peer = await openHnswlib(ds, qArr[0]);
  if (cairn.rebuilds.length > 0 || cairn.stats.pending > 0) {
    throw new Error(`${ds.label}: the persisted graph was not used on open: ${JSON.stringify(cairn.rebuilds)}`);
  }

  // Recall over all queries at each ef (outside the timed runs). querySync runs the same search
  // as query, so its answers must be the same; a difference fails the run.
  const recall = { cairn: {}, hnswlib: {} };
  for (const ef of PEER_EFS) {
    peer.index.setEf(ef);
    recall.hnswlib[ef] = recallOf(
      ds,
      gt,
      qArr.map((q) => peer.index.searchKnn(q, K).neighbors),
    );
  }
  for (const ef of EFS) {
    const opts = { k: K, ef };
    const c = [];
    for (const q of qF32) {
      const hits = await cairn.col.query(q, opts);
      const same = cairn.col.querySync(q, opts);
      if (JSON.stringify(hits) !== JSON.stringify(same)) throw new Error(`${ds.label}: querySync differs from query at ef=${ef}`);
      c.push(hits.map((h) => Number(h.id)));
    }
    recall.cairn[ef] = recallOf(ds, gt, c);
  }

  const bench = new Bench({ time: TIME_MS, warmupTime: WARMUP_MS, iterations: 10, warmupIterations: 10 });
  for (const ef of PEER_EFS) {
    let i = 0;
    const opts = { k: K, ef };
    if (EFS.includes(ef)) {
      bench.add(`cairn ef=${ef}`, async () => {
        await cairn.col.query(qF32[i++ % nq], opts);
      });
      let s = 0;
      bench.add(`cairn querySync ef=${ef}`, () => {
        cairn.col.querySync(qF32[s++ % nq], opts);
      });
    }
    let j = 0;
    bench.add(
      `hnswlib ef=${ef}`,
      () => {
        peer.index.searchKnn(qArr[j++ % nq], K);
      },
      { beforeAll: () => peer.index.setEf(ef) },
    );
  }
  const loadBefore = loadavg()[0];
  await bench.run();
  const singleLoad = `${loadBefore.toFixed(1)} -> ${loadavg()[0].toFixed(1)}`;
  console.log(`\n${ds.label}: single-query tinybench tasks (1-min load average ${singleLoad})`);
  console.table(bench.table());

  const batch = new Bench({ time: TIME_MS, warmupTime: WARMUP_MS, iterations: 3, warmupIterations: 1 });
  for (const ef of EFS) {
    const opts = { k: K, ef };
    batch.add(`cairn queryBatch(${nq}) ef=${ef}`, async () => {
      await cairn.col.queryBatch(qF32, opts);
    });
  }
  await batch.run();
  console.log(`\n${ds.label}: queryBatch tinybench tasks (one iteration = ${nq} queries)`);
  console.table(batch.table());

  const qps = { cairn: {}, sync: {}, hnswlib: {}, batch: {}, p50: {}, load: singleLoad };
  for (const ef of PEER_EFS) qps.hnswlib[ef] = qpsOf(bench.getTask(`hnswlib ef=${ef}`));
  for (const ef of EFS) {
    qps.cairn[ef] = qpsOf(bench.getTask(`cairn ef=${ef}`));
    qps.sync[ef] = qpsOf(bench.getTask(`cairn querySync ef=${ef}`));
    const p50 = (name) => bench.getTask(name).result.latency?.p50 * 1000;
    qps.p50[ef] = `${fmt(p50(`hnswlib ef=${ef}`))} / ${fmt(p50(`cairn ef=${ef}`))} / ${fmt(p50(`cairn querySync ef=${ef}`))}`;
    qps.batch[ef] = qpsOf(batch.getTask(`cairn queryBatch(${nq}) ef=${ef}`)) * nq;
  }

  await cairn.db.close();
  let rebuild = null;
  if (name === 'clustered') rebuild = await measureRebuild(ds, gt, qF32);

  out.push({ ds, floor, hl, cb, cairn, peer, recall, qps, rebuild });
}

/** Delete the persisted graph, reopen, and time the background rebuild to completion. */
async function measureRebuild(ds, gt, qF32) {
  const dataDir = join(storeDir(ds), 'data');
  const removed = readdirSync(dataDir).filter((f) => f.endsWith('.hnsw'));
  for (const f of removed) rmSync(join(dataDir, f));
  const t0 = performance.now();
  const db = await open(storeDir(ds));
  const t1 = performance.now();
  const col = db.collection(COLLECTION);
  await col.waitForIndex();
  const t2 = performance.now();
  const rebuilds = db.recoveryReport.indexRebuilds;
  const results = [];
  for (const q of qF32) results.push((await col.query(q, { k: K, ef: REF_EF })).map((h) => Number(h.id)));
  const recallRef = recallOf(ds, gt, results);
  await db.close();
  return { removed, openMs: t1 - t0, indexS: (t2 - t1) / 1000, totalS: (t2 - t0) / 1000, rebuilds, recallRef };
}

function report(all) {
  console.log('\n== build (M=16, efConstruction=200) ==');
  console.table(
    all.map(({ ds, hl, cb, recall }) => ({
      dataset: ds.label,
      'hnswlib-node s (1 core)': fmt(hl.buildS, 1),
      'cairn s (upsert+waitForIndex)': fmt(cb.buildS, 1),
      'cairn upsert s': fmt(cb.upsertS, 1),
      'cairn/hnswlib': fmt(cb.buildS / hl.buildS, 2),
      [`recall@10 ef=${REF_EF} cairn/hnswlib`]: `${fmt(recall.cairn[REF_EF], 4)} / ${fmt(recall.hnswlib[REF_EF], 4)}`,
      'cairn checkpoint s': fmt(cb.checkpointS, 2),
    })),
  );

  console.log('\n== recall@10 and single-query QPS (1,000 queries; cairn: await query one at a time, and querySync) ==');
  const rows = [];
  for (const { ds, recall, qps } of all) {
    const points = PEER_EFS.map((ef) => ({ recall: recall.hnswlib[ef], qps: qps.hnswlib[ef] }));
    for (const ef of EFS) {
      const atRecall = qpsAtRecall(points, recall.cairn[ef]);
      const vsPeer = (q) => (atRecall === null ? 'n/a' : fmt(q / atRecall, 2));
      rows.push({
        dataset: ds.label,
        ef,
        'recall hnswlib': fmt(recall.hnswlib[ef], 4),
        'recall cairn': fmt(recall.cairn[ef], 4),
        'QPS hnswlib': fmt(qps.hnswlib[ef]),
        'QPS query': fmt(qps.cairn[ef]),
        'QPS querySync': fmt(qps.sync[ef]),
        'query/hnswlib same ef': fmt(qps.cairn[ef] / qps.hnswlib[ef], 2),
        'querySync/hnswlib same ef': fmt(qps.sync[ef] / qps.hnswlib[ef], 2),
        'hnswlib QPS @ cairn recall': fmt(atRecall),
        'query/hnswlib same recall': vsPeer(qps.cairn[ef]),
        'querySync/hnswlib same recall': vsPeer(qps.sync[ef]),
        'p50 us hnswlib / query / querySync': qps.p50[ef],
      });
    }
    console.log(`${ds.label}: 1-min load average over the single-query suite ${qps.load}`);
  }
  console.table(rows);

  console.log('\n== batch QPS: cairn queryBatch (all cores) ==');
  console.table(
    all.flatMap(({ ds, qps }) =>
      EFS.map((ef) => ({
        dataset: ds.label,
        ef,
        'cairn queryBatch QPS': fmt(qps.batch[ef]),
        'vs cairn single query': fmt(qps.batch[ef] / qps.cairn[ef], 2),
        'vs hnswlib searchKnn (1 core)': fmt(qps.batch[ef] / qps.hnswlib[ef], 2),
      })),
    ),
  );

  console.log('\n== open + first query (after checkpoint + close; ef=50) ==');
  console.table(
    all.map(({ ds, cairn, peer }) => ({
      dataset: ds.label,
      'cairn open ms': fmt(cairn.openMs, 1),
      'cairn first query ms': fmt(cairn.firstQueryMs, 2),
      'cairn total ms': fmt(cairn.openMs + cairn.firstQueryMs, 1),
      'hnswlib readIndex + first query ms': fmt(peer.openMs + peer.firstQueryMs, 1),
      'cairn/hnswlib': fmt((cairn.openMs + cairn.firstQueryMs) / (peer.openMs + peer.firstQueryMs), 2),
    })),
  );

  const rebuilt = all.filter((r) => r.rebuild);
  if (rebuilt.length > 0) {
    console.log('\n== rebuild: persisted graph deleted, open, waitForIndex ==');
    console.table(
      rebuilt.map(({ ds, hl, rebuild }) => ({
        dataset: ds.label,
        deleted: rebuild.removed.join(' '),
        'open ms': fmt(rebuild.openMs, 1),
        'index s': fmt(rebuild.indexS, 1),
        'total s': fmt(rebuild.totalS, 1),
        'vs hnswlib build': fmt(rebuild.totalS / hl.buildS, 2),
        'indexRebuilds reported': rebuild.rebuilds.length > 0 ? `yes: ${rebuild.rebuilds[0].reason.slice(-60)}` : 'NO',
        [`recall@10 ef=${REF_EF} after`]: fmt(rebuild.recallRef, 4),
      })),
    );
  }

  console.log('\n== memory: peak RSS of the build child (VmHWM), index bytes per vector ==');
  console.table(
    all.map(({ ds, floor, hl, cb }) => ({
      dataset: ds.label,
      'dataset-only MiB': mib(floor.rss),
      'hnswlib-node MiB': mib(hl.rss),
      'cairn MiB': mib(cb.rss),
      'cairn/hnswlib': fmt(cb.rss / hl.rss, 2),
      'above floor cairn/hnswlib': fmt((cb.rss - floor.rss) / (hl.rss - floor.rss), 2),
      // Persisting included: hnswlib-node's writeIndexSync, Cairn's checkpoint.
      'incl. persist hnswlib / cairn MiB': `${mib(hl.rssPersisted)} / ${mib(cb.rssPersisted)}`,
      'cairn indexStats B/vector': fmt(cb.stats.bytes / cb.stats.indexed),
      'hnswlib file B/vector': fmt(hl.fileBytes / ds.n),
      'raw vector B': ds.dim * 4,
    })),
  );

  console.log('\n== targets ==');
  const mark = (ok) => (ok ? 'met' : 'MISSED');
  const targets = [];
  for (const { ds, hl, cb, recall, qps, cairn, rebuild } of all) {
    const buildRatio = cb.buildS / hl.buildS;
    const recallOk = recall.cairn[REF_EF] >= recall.hnswlib[REF_EF] - 0.005;
    targets.push({
      dataset: ds.label,
      target: TARGETS.build,
      value: `${fmt(buildRatio, 2)}x, recall ef=${REF_EF} ${fmt(recall.cairn[REF_EF], 3)} vs ${fmt(recall.hnswlib[REF_EF], 3)}`,
      verdict: mark(buildRatio <= 0.5 && recallOk),
    });
    const points = PEER_EFS.map((ef) => ({ recall: recall.hnswlib[ef], qps: qps.hnswlib[ef] }));
    for (const [api, of] of [
      ['query', qps.cairn],
      ['querySync', qps.sync],
    ]) {
      const ratios = EFS.map((ef) => {
        const at = qpsAtRecall(points, recall.cairn[ef]);
        return at === null ? null : of[ef] / at;
      }).filter((r) => r !== null);
      const worst = ratios.length ? Math.min(...ratios) : null;
      targets.push({
        dataset: ds.label,
        target: `${TARGETS.qps} (${api})`,
        value: worst === null ? 'n/a (recall ranges do not overlap)' : `worst ${fmt(worst, 2)}x over ef ${EFS.join('/')} (${ratios.length} comparable)`,
        verdict: worst === null ? 'n/a' : mark(worst >= 1.0),
      });
    }
    if (ds.name === 'clustered') {
      const total = cairn.openMs + cairn.firstQueryMs;
      targets.push({
        dataset: ds.label,
        target: TARGETS.open,
        value: `${fmt(total, 1)} ms`,
        verdict: ds.n === 100_000 ? mark(total <= 150) : 'n/a (HNSW_N set)',
      });
      if (rebuild)
        targets.push({
          dataset: ds.label,
          target: 'rebuild reported in recoveryReport.indexRebuilds',
          value: `${rebuild.rebuilds.length} entr${rebuild.rebuilds.length === 1 ? 'y' : 'ies'}`,
          verdict: mark(rebuild.rebuilds.length > 0),
        });
    }
  }
  for (const { ds, hl, cb } of all) {
    targets.push({
      dataset: ds.label,
      target: TARGETS.rss,
      value: `${fmt(cb.rss / hl.rss, 2)}x (${mib(cb.rss)} vs ${mib(hl.rss)} MiB)`,
      verdict: mark(cb.rss / hl.rss <= 1.3),
    });
  }
  console.table(targets);
}

async function main() {
  const args = process.argv.slice(2);
  if (args[0] === '--child') {
    const [, role, name] = args;
    const result = await CHILD_ROLES[role](loadDataset(name));
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  const wanted = args.length > 0 ? args : ['clustered', 'fashion'];
  mkdirSync(DATA_DIR, { recursive: true });
  const load = () =>
    loadavg()
      .map((l) => l.toFixed(1))
      .join(' ');
  console.log(`load average ${load()} on ${availableParallelism()} cores`);
  console.log(`node ${process.version}, tinybench tasks ${TIME_MS} ms (warmup ${WARMUP_MS} ms), k=${K}, M=${M}, efConstruction=${EF_CONSTRUCTION}`);
  const all = [];
  for (const name of wanted) {
    if (name === 'fashion' && !fashionAvailable()) {
      console.log(`fashion: skipped, ${FASHION_DIR} is missing (run: bash bench/setup-datasets.sh)`);
      continue;
    }
    await benchDataset(name, all);
  }
  if (all.length > 0) report(all);
  console.log(`\nload average ${load()} (other processes on the machine skew every figure)`);
}

if (isMainThread) {
  await main();
} else {
  groundTruthWorker(workerData);
}
