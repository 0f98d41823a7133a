// Filtered search and filter-driven reads/deletes, beside peers in the same run.
//
//   node bench/filter.js                       # both parts
//   node bench/filter.js query                 # one of them: query | bulk
//   FILTER_N=50000 FILTER_DIM=64 node bench/filter.js query   # another size (default 100k x 128)
//   FILTER_CACHE=1 node bench/filter.js query  # keep both built indexes in .bench-data for the next run
//   BULK_N=1000000 node bench/filter.js bulk   # count/deleteWhere rows (default 1M)
//   BENCH_TIME_MS=1000 BENCH_PASSES=4 node bench/filter.js   # time per task, split in passes
//
// query: a clustered gaussian mixture (50 centres ~ N(0,1), points = centre + N(0, 0.5^2); l2,
// M=16, efConstruction=200; 100k x 128, the size, by default). Every row gets a random
// bucket 0..999 as metadata `{ b }`; filters `b < 500`, `b < 100`, `b < 10` and `b == 0` match
// 50%, 10%, 1% and 0.1% of rows. Cairn answers `query(q, { k: 10, ef, filter })` first without a
// payload index, then after `createIndex('b', { type: 'number' })`; hnswlib-node answers
// `searchKnn(q, 10, label => bucket[label] < 500)` (its filter function over the same labels),
// after `setEf(ef)`. Both at ef 64 and 128. Recall@10 of both against the exact filtered
// neighbours, computed by brute force in JS over the matching rows, for 200 held-out queries.
// QPS is single queries awaited one at a time (tinybench: runs / total time), measured in
// BENCH_PASSES short passes that alternate which task runs first; the table gives the median
// pass's QPS, the median of the per-pass ratios and their range, and the load average.
//
// bulk: BULK_N rows (dim 4, metadata `{ b, tag }`) in Cairn and in SQLite (better-sqlite3, WAL,
// synchronous=FULL; table (id TEXT PRIMARY KEY, vector BLOB, metadata TEXT)). Timed once each:
// count of a 10% filter without and with an index (SQLite: json_extract without, an expression
// index with), and deleting the 10% (Cairn: one deleteWhere, one WAL record; SQLite: one DELETE
// in a transaction).
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

import { open } from 'cairndb';
import hnswlib from 'hnswlib-node';
import { Bench } from 'tinybench';

import { mulberry32 as rng } from '../test/fixtures/mulberry32.mjs';
import { durableSqlite } from './lib/sqlite.js';

const { HierarchicalNSW } = hnswlib;
const here = dirname(fileURLToPath(import.meta.url));
const DATA = join(here, '.bench-data', 'filter');
const TIME_MS = Number(process.env.BENCH_TIME_MS ?? 2000);
const N = Number(process.env.FILTER_N ?? 100_000);
const DIM = Number(process.env.FILTER_DIM ?? 128);
const PASSES = Number(process.env.BENCH_PASSES ?? 4);
const CACHE = process.env.FILTER_CACHE === '1';
const BULK_N = Number(process.env.BULK_N ?? 1_000_000);
const K = 10;
const QUERIES = 200;
const EFS = [64, 128];
const FILTERS = [
  { name: '50%', share: 0.5, cairn: { b: { $lt: 500 } }, fn: (b) => b < 500 },
  { name: '10%', share: 0.1, cairn: { b: { $lt: 100 } }, fn: (b) => b < 100 },
  { name: '1%', share: 0.01, cairn: { b: { $lt: 10 } }, fn: (b) => b < 10 },
  { name: '0.1%', share: 0.001, cairn: { b: 0 }, fn: (b) => b === 0 },
];

const load = () =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');

function gauss(uniform) {
  return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
}

function dataset() {
  const g = gauss(rng(42));
  const pick = rng(7);
  const centres = Float32Array.from({ length: 50 * DIM }, () => g());
  const sample = (count) => {
    const out = new Float32Array(count * DIM);
    for (let i = 0; i < count; i++) {
      const c = Math.floor(pick() * 50) * DIM;
      for (let d = 0; d < DIM; d++) out[i * DIM + d] = centres[c + d] + 0.5 * g();
    }
    return out;
  };
  const bucketOf = rng(99);
  return { base: sample(N), queries: sample(QUERIES), bucket: Int32Array.from({ length: N }, () => Math.floor(bucketOf() * 1000)) };
}

function exactFiltered(data, q, accept) {
  const best = [];
  for (let i = 0; i < N; i++) {
    if (!accept(data.bucket[i])) continue;
    let d = 0;
    for (let j = 0; j < DIM; j++) {
      const x = data.base[i * DIM + j] - data.queries[q * DIM + j];
      d += x * x;
    }
    if (best.length < K || d < best[best.length - 1][0]) {
      best.push([d, i]);
      best.sort((a, b) => a[0] - b[0]);
      if (best.length > K) best.pop();
    }
  }
  return best;
}

/** Returned ids whose true distance is within the exact k-th distance (ties do not count against). */
function recall(data, truth, q, ids) {
  const want = truth[q];
  if (want.length === 0) return 1;
  const kth = want[want.length - 1][0] * (1 + 1e-5) + 1e-9;
  let hit = 0;
  for (const i of ids) {
    let d = 0;
    for (let j = 0; j < DIM; j++) {
      const x = data.base[i * DIM + j] - data.queries[q * DIM + j];
      d += x * x;
    }
    if (d <= kth) hit++;
  }
  return Math.min(hit, want.length) / want.length;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Cairn's store and hnswlib-node's graph over the data: built, or with FILTER_CACHE=1 reused
 *  from an earlier run of the same size (the peer's build alone takes minutes on one core). */
async function buildBoth(data) {
  const dir = join(DATA, `query-${N}x${DIM}`);
  const peerFile = join(DATA, `hnswlib-${N}x${DIM}.bin`);
  const cached = CACHE && existsSync(join(dir, 'DONE')) && existsSync(peerFile);
  if (!cached) {
    rmSync(dir, { recursive: true, force: true });
    rmSync(peerFile, { force: true });
  }
  mkdirSync(DATA, { recursive: true });
  let t = performance.now();
  const db = await open(dir, { sync: 'none' });
  let docs;
  if (cached) {
    docs = db.collection('v');
    for (const i of docs.indexes()) await docs.dropIndex(i.field);
  } else {
    docs = await db.createCollection('v', { dim: DIM, metric: 'l2', m: 16, efConstruction: 200 });
    for (let i = 0; i < N; i += 5000) {
      const recs = [];
      for (let j = i; j < Math.min(N, i + 5000); j++)
        recs.push({ id: String(j), vector: data.base.subarray(j * DIM, (j + 1) * DIM), metadata: { b: data.bucket[j] } });
      await docs.upsert(recs);
    }
  }
  await docs.waitForIndex();
  const cairnBuild = performance.now() - t;
  t = performance.now();
  const h = new HierarchicalNSW('l2', DIM);
  if (cached) h.readIndexSync(peerFile);
  else {
    h.initIndex(N, 16, 200, 100);
    for (let i = 0; i < N; i++) h.addPoint(Array.from(data.base.subarray(i * DIM, (i + 1) * DIM)), i);
  }
  const hnswBuild = performance.now() - t;
  if (CACHE && !cached) {
    h.writeIndexSync(peerFile);
    await db.checkpoint();
    writeFileSync(join(dir, 'DONE'), '');
  }
  const what = cached ? 'reopened (FILTER_CACHE)' : 'built';
  console.log(`${what}: cairn ${(cairnBuild / 1000).toFixed(1)} s (all cores), hnswlib-node ${(hnswBuild / 1000).toFixed(1)} s (one core); load ${load()}`);
  return { db, docs, h, dir };
}

async function queryPart() {
  console.log(`filtered query: clustered ${N / 1000}k x ${DIM}, ${QUERIES} queries, k=${K}; cpus ${cpus().length}; load ${load()}`);
  const data = dataset();
  const { db, docs, h, dir } = await buildBoth(data);
  const truth = FILTERS.map((f) => Array.from({ length: QUERIES }, (_, q) => exactFiltered(data, q, f.fn)));
  const qs = Array.from({ length: QUERIES }, (_, q) => data.queries.subarray(q * DIM, (q + 1) * DIM));
  const qArrays = qs.map((q) => Array.from(q));
  const rows = [];
  for (const indexed of [false, true]) {
    if (indexed) {
      const t = performance.now();
      await docs.createIndex('b', { type: 'number' });
      console.log(`createIndex('b', number) over ${N} rows: ${(performance.now() - t).toFixed(0)} ms (includes the checkpoint)`);
    }
    for (const [fi, f] of FILTERS.entries()) {
      for (const ef of EFS) {
        let cairnRecall = 0;
        let peerRecall = 0;
        for (let q = 0; q < QUERIES; q++) {
          const hits = await docs.query(qs[q], { k: K, ef, filter: f.cairn });
          cairnRecall += recall(
            data,
            truth[fi],
            q,
            hits.map((x) => Number(x.id)),
          );
        }
        h.setEf(ef);
        for (let q = 0; q < QUERIES; q++) peerRecall += recall(data, truth[fi], q, h.searchKnn(qArrays[q], K, (l) => f.fn(data.bucket[l])).neighbors);
        // Short passes, the two tasks in alternating order, so that the shared machine's load,
        // which changes within seconds, falls on both alike; the figure is the median pass.
        const perPass = { cairn: [], peer: [], ratio: [] };
        for (let pass = 0; pass < PASSES; pass++) {
          const bench = new Bench({ time: TIME_MS / PASSES, warmupTime: Math.min(100, TIME_MS / PASSES / 4) });
          let i = 0;
          let j = 0;
          const cairnTask = [
            'cairn',
            async () => {
              await docs.query(qs[i++ % QUERIES], { k: K, ef, filter: f.cairn });
            },
          ];
          const peerTask = [
            'hnswlib-node',
            () => {
              h.setEf(ef);
              h.searchKnn(qArrays[j++ % QUERIES], K, (l) => f.fn(data.bucket[l]));
            },
          ];
          for (const [name, fn] of pass % 2 ? [peerTask, cairnTask] : [cairnTask, peerTask]) bench.add(name, fn);
          await bench.run();
          const qps = (name) => {
            const task = bench.tasks.find((x) => x.name === name);
            return task.runs / (task.result.totalTime / 1000);
          };
          perPass.cairn.push(qps('cairn'));
          perPass.peer.push(qps('hnswlib-node'));
          perPass.ratio.push(qps('cairn') / qps('hnswlib-node'));
        }
        const row = {
          filter: f.name,
          index: indexed ? 'yes' : 'no',
          ef,
          'cairn QPS': Math.round(median(perPass.cairn)),
          'cairn recall': (cairnRecall / QUERIES).toFixed(3),
          'hnswlib QPS': Math.round(median(perPass.peer)),
          'hnswlib recall': (peerRecall / QUERIES).toFixed(3),
          ratio: median(perPass.ratio).toFixed(2),
          'ratio range': `${Math.min(...perPass.ratio).toFixed(2)}-${Math.max(...perPass.ratio).toFixed(2)}`,
          load: load(),
        };
        rows.push(row);
        console.log(JSON.stringify(row));
      }
    }
  }
  console.table(rows);
  await db.close();
  if (!CACHE) rmSync(dir, { recursive: true, force: true });
}

async function bulkPart() {
  console.log(`count and deleteWhere: ${BULK_N.toLocaleString()} rows (dim 4); cpus ${cpus().length}; load ${load()}`);
  const dir = join(DATA, 'bulk');
  const sqlitePath = join(DATA, 'bulk.sqlite');
  rmSync(dir, { recursive: true, force: true });
  rmSync(sqlitePath, { force: true });
  mkdirSync(DATA, { recursive: true });
  const pick = rng(5);
  const buckets = Int32Array.from({ length: BULK_N }, () => Math.floor(pick() * 1000));
  const db = await open(dir, { sync: 'group' });
  const docs = await db.createCollection('rows', { dim: 4, metric: 'l2' });
  const sql = durableSqlite(sqlitePath);
  sql.exec('CREATE TABLE rows (id TEXT PRIMARY KEY, vector BLOB, metadata TEXT)');
  const insert = sql.prepare('INSERT INTO rows VALUES (?, ?, ?)');
  const insertMany = sql.transaction((recs) => {
    for (const r of recs) insert.run(r.id, Buffer.from(r.vector.buffer), JSON.stringify(r.metadata));
  });
  for (let i = 0; i < BULK_N; i += 20_000) {
    const recs = [];
    for (let j = i; j < Math.min(BULK_N, i + 20_000); j++) {
      recs.push({ id: `r${String(j).padStart(7, '0')}`, vector: new Float32Array([j % 7, j % 11, j % 13, 1]), metadata: { b: buckets[j], tag: `t${j % 5}` } });
    }
    await docs.upsert(recs);
    insertMany(recs);
  }
  // The background graph build would compete with the timings below.
  await docs.waitForIndex();
  const filter = { b: { $lt: 100 } };
  const expected = buckets.filter((b) => b < 100).length;
  const time = async (f) => {
    const t = performance.now();
    const v = await f();
    return [performance.now() - t, v];
  };
  const rows = [];
  const add = (what, cairnMs, peerMs, check) => {
    rows.push({ what, 'cairn ms': cairnMs.toFixed(1), 'sqlite ms': peerMs.toFixed(1), ratio: (peerMs / cairnMs).toFixed(2), check, load: load() });
    console.log(JSON.stringify(rows[rows.length - 1]));
  };
  const [c1, n1] = await time(() => docs.count({ filter }));
  const [s1, m1] = await time(() => sql.prepare("SELECT COUNT(*) AS n FROM rows WHERE json_extract(metadata, '$.b') < 100").get().n);
  add('count 10%, no index', c1, s1, `${n1} = ${m1} = ${expected}`);
  const [ci] = await time(() => docs.createIndex('b', { type: 'number' }));
  const [si] = await time(() => sql.exec("CREATE INDEX rows_b ON rows (json_extract(metadata, '$.b'))"));
  add('create index on b', ci, si, 'cairn: build + checkpoint');
  const [c2, n2] = await time(() => docs.count({ filter }));
  const [s2, m2] = await time(() => sql.prepare("SELECT COUNT(*) AS n FROM rows WHERE json_extract(metadata, '$.b') < 100").get().n);
  add('count 10%, index', c2, s2, `${n2} = ${m2}`);
  const [c3, d3] = await time(() => docs.deleteWhere(filter));
  const [s3, m3] = await time(() => sql.prepare("DELETE FROM rows WHERE json_extract(metadata, '$.b') < 100").run().changes);
  add('delete 10% (one atomic batch)', c3, s3, `${d3.deleted} = ${m3}`);
  console.table(rows);
  sql.close();
  await db.close();
  rmSync(dir, { recursive: true, force: true });
  rmSync(sqlitePath, { force: true });
  for (const suffix of ['-wal', '-shm']) rmSync(sqlitePath + suffix, { force: true });
}

const parts = process.argv.slice(2);
if (parts.length === 0 || parts.includes('query')) await queryPart();
if (parts.length === 0 || parts.includes('bulk')) await bulkPart();
