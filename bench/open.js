// Open + first query: Cairn's `open` of a checkpointed store followed by one `query`, against
// hnswlib-node's `readIndex` followed by one `searchKnn` on an index of the same vectors, in the
// same run. Each timed open runs in a fresh child process (nothing warm in the heap; the files
// are in the page cache for both, as after any recent use), alternating Cairn and hnswlib-node,
// and the median of the runs is reported with the ratio and the load average.
//
//   node bench/open.js                       # clustered 100k x 128, and Fashion-MNIST 60k x 784 if installed
//   node bench/open.js clustered             # one of them: clustered | fashion
//   OPEN_RUNS=11 node bench/open.js          # timed runs per engine (default 7)
//   OPEN_N=20000 node bench/open.js clustered   # fewer vectors (quick check, targets not comparable)
//
// Data: clustered = seeded gaussian mixture (50 centres, sd 0.5 around them), l2; fashion = the
// Fashion-MNIST training images as raw 0..255 pixels (`bash bench/setup-datasets.sh`), l2.
// Both engines use M=16, efConstruction=200, ef=50, k=10. Each record carries small metadata
// ({ i, tag }), as stores usually do. The stores are built once and cached under
// bench/.bench-data/open/ (delete that directory after a data file format change).
//
// Targets (issue 13): 100k x 128 <= 150 ms, 60k x 784 <= 300 ms.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';

import { open } from 'cairndb';
import hnswlib from 'hnswlib-node';

const here = dirname(fileURLToPath(import.meta.url));
const selfPath = fileURLToPath(import.meta.url);
const DATA_DIR = join(here, '.bench-data', 'open');
const RUNS = Number(process.env.OPEN_RUNS ?? 7);
const M = 16;
const EF_CONSTRUCTION = 200;
const EF = 50;
const K = 10;
const BATCH = 5_000;
const FASHION_DIR = '/usr/share/datasets/fashion-mnist';
const TARGET_MS = { clustered: 150, fashion: 300 };

/** xorshift32 in [0, 1), and Box-Muller normals from it. */
function normals(seed) {
  let s = seed >>> 0 || 1;
  const uniform = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
  return { uniform, normal: () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform()) };
}

function clustered(n) {
  const dim = 128;
  const { uniform, normal } = normals(1234);
  const centres = Float32Array.from({ length: 50 * dim }, normal);
  const draw = (count) => {
    const out = new Float32Array(count * dim);
    for (let i = 0; i < count; i++) {
      const c = Math.floor(uniform() * 50) * dim;
      for (let d = 0; d < dim; d++) out[i * dim + d] = centres[c + d] + 0.5 * normal();
    }
    return out;
  };
  return { dim, n, base: draw(n), query: draw(1) };
}

/** Fashion-MNIST IDX3 images (big-endian header, then u8 pixels) as f32. */
function fashion(limit) {
  const pixels = (file, max) => {
    const buf = gunzipSync(readFileSync(join(FASHION_DIR, file)));
    const count = Math.min(buf.readUInt32BE(4), max);
    const dim = buf.readUInt32BE(8) * buf.readUInt32BE(12);
    return { count, dim, v: Float32Array.from(buf.subarray(16, 16 + count * dim)) };
  };
  const train = pixels('train-images-idx3-ubyte.gz', limit);
  const test = pixels('t10k-images-idx3-ubyte.gz', 1);
  return { dim: train.dim, n: train.count, base: train.v, query: test.v };
}

const DATASETS = {
  clustered: { make: (n) => clustered(n ?? 100_000), available: () => true },
  fashion: { make: (n) => fashion(n ?? 60_000), available: () => existsSync(join(FASHION_DIR, 'train-images-idx3-ubyte.gz')) },
};

function paths(name) {
  const dir = join(DATA_DIR, `${name}-${process.env.OPEN_N ?? 'full'}`);
  return { dir, store: join(dir, 'cairn'), hnswlib: join(dir, 'hnswlib.bin'), query: join(dir, 'query.json'), ready: join(dir, 'ready') };
}

/** Build both stores once: Cairn (upsert, waitForIndex, checkpoint, close) and hnswlib-node. */
async function build(name) {
  const p = paths(name);
  if (existsSync(p.ready)) return;
  rmSync(p.dir, { recursive: true, force: true });
  mkdirSync(p.dir, { recursive: true });
  const ds = DATASETS[name].make(process.env.OPEN_N ? Number(process.env.OPEN_N) : undefined);
  const started = performance.now();
  const db = await open(p.store);
  const col = await db.createCollection('vectors', { dim: ds.dim, metric: 'l2', m: M, efConstruction: EF_CONSTRUCTION });
  const index = new hnswlib.HierarchicalNSW('l2', ds.dim);
  index.initIndex(ds.n, M, EF_CONSTRUCTION, 100);
  for (let from = 0; from < ds.n; from += BATCH) {
    const records = [];
    for (let i = from; i < Math.min(ds.n, from + BATCH); i++) {
      const vector = ds.base.subarray(i * ds.dim, (i + 1) * ds.dim);
      records.push({ id: String(i), vector, metadata: { i, tag: `t${i % 16}` } });
      index.addPoint(Array.from(vector), i);
    }
    await col.upsert(records);
  }
  await col.waitForIndex();
  await db.checkpoint();
  await db.close();
  index.writeIndexSync(p.hnswlib);
  writeFileSync(p.query, JSON.stringify(Array.from(ds.query)));
  writeFileSync(p.ready, '');
  console.log(`${name}: built ${ds.n} x ${ds.dim} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

/** One timed open + first query in this (fresh) process; prints { openMs, queryMs, hits }. */
async function child(engine, name) {
  const p = paths(name);
  const query = JSON.parse(readFileSync(p.query, 'utf8'));
  if (engine === 'cairn') {
    const q = Float32Array.from(query);
    const t0 = performance.now();
    const db = await open(p.store, { create: false });
    const t1 = performance.now();
    const hits = await db.collection('vectors').query(q, { k: K, ef: EF });
    const t2 = performance.now();
    const pending = db.collection('vectors').indexStats().pending;
    const rebuilds = db.recoveryReport.indexRebuilds.length;
    await db.close();
    if (pending > 0 || rebuilds > 0) throw new Error(`the persisted graph was not used (pending ${pending}, rebuilds ${rebuilds})`);
    return { openMs: t1 - t0, queryMs: t2 - t1, hits: hits.map((h) => Number(h.id)) };
  }
  const t0 = performance.now();
  const index = new hnswlib.HierarchicalNSW('l2', query.length);
  await index.readIndex(p.hnswlib);
  const t1 = performance.now();
  index.setEf(EF);
  const { neighbors } = index.searchKnn(query, K);
  const t2 = performance.now();
  return { openMs: t1 - t0, queryMs: t2 - t1, hits: neighbors };
}

function runChild(engine, name) {
  const out = execFileSync(process.execPath, [selfPath, '--child', engine, name], { env: process.env, maxBuffer: 1 << 20 });
  return JSON.parse(out.toString().trim().split('\n').at(-1));
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');

async function main() {
  const names = process.argv[2] ? [process.argv[2]] : Object.keys(DATASETS);
  console.log(`node ${process.version}, ${availableParallelism()} cores, ${RUNS} runs per engine, median; load average ${load()}`);
  const rows = [];
  for (const name of names) {
    if (!DATASETS[name]) throw new Error(`unknown dataset '${name}' (clustered | fashion)`);
    if (!DATASETS[name].available()) {
      console.log(`${name}: not installed (bash bench/setup-datasets.sh), skipped`);
      continue;
    }
    await build(name);
    const before = load();
    const runs = { cairn: [], hnswlib: [] };
    // One untimed run each pulls the files into the page cache.
    runChild('cairn', name);
    runChild('hnswlib', name);
    for (let r = 0; r < RUNS; r++) {
      runs.cairn.push(runChild('cairn', name));
      runs.hnswlib.push(runChild('hnswlib', name));
    }
    const overlap = runs.cairn[0].hits.filter((h) => runs.hnswlib[0].hits.includes(h)).length;
    const total = (rs) => median(rs.map((r) => r.openMs + r.queryMs));
    const [c, h] = [total(runs.cairn), total(runs.hnswlib)];
    rows.push({
      dataset: name,
      'cairn open ms': Number(median(runs.cairn.map((r) => r.openMs)).toFixed(1)),
      'cairn query ms': Number(median(runs.cairn.map((r) => r.queryMs)).toFixed(1)),
      'cairn total ms': Number(c.toFixed(1)),
      'hnswlib total ms': Number(h.toFixed(1)),
      'cairn/hnswlib': Number((c / h).toFixed(2)),
      'target ms': TARGET_MS[name],
      'top-10 overlap': overlap,
      'load before / after': `${before} / ${load()}`,
    });
  }
  console.table(rows);
}

if (process.argv[2] === '--child') {
  process.stdout.write(`${JSON.stringify(await child(process.argv[3], process.argv[4]))}\n`);
} else {
  await main();
}
