// Scrub throughput: GB/s of db.scrub() over a store of at least 1 GB, with 2 piscina workers,
// 1 worker, and a single-threaded loop on the main thread (concurrency 0); and the whole-file
// xxh3 alone, native against @node-rs/xxhash (streaming and one-shot) on the same files.
//
//   node bench/scrub.js                    # builds $TMPDIR/cairn-bench-scrub-1024 once (~1 GB of vectors)
//   SCRUB_BENCH_MB=256 node bench/scrub.js # a smaller store
//
// From the page cache by default; after dropping the caches too when this process may write
// /proc/sys/vm/drop_caches (root on a real machine), otherwise that row is skipped and says why.
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { execSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { xxh3 } from '@node-rs/xxhash';
import { open } from 'cairn';
import { Bench } from 'tinybench';

const here = dirname(fileURLToPath(import.meta.url));
const MB = Number(process.env.SCRUB_BENCH_MB ?? 1024);
// Outside bench/.bench-data, which other suites clear; SCRUB_BENCH_DIR to choose the file system.
const DIR = process.env.SCRUB_BENCH_DIR ?? join(tmpdir(), `cairn-bench-scrub-${MB}`);
// Large vectors keep the row count (and the HNSW build) small for a given size.
const DIM = 16384;
const ROWS = Math.ceil((MB * 1e6) / (DIM * 4));
const TARGET_GBPS = 8;

// The native module, for the hash-only rows (the package exposes no such API).
const { nativeModule } = await import(pathToFileURL(join(here, '../packages/cairn/dist/native.js')).href);

async function build() {
  const marker = join(DIR, '.complete');
  if (existsSync(marker)) return;
  rmSync(DIR, { recursive: true, force: true });
  mkdirSync(DIR, { recursive: true });
  const t0 = performance.now();
  const db = await open(DIR, { sync: 'none' });
  const docs = await db.createCollection('docs', { dim: DIM, metric: 'l2', m: 4, efConstruction: 16 });
  const v = new Float32Array(DIM);
  for (let i = 0; i < ROWS; i += 16) {
    const records = [];
    for (let j = i; j < Math.min(ROWS, i + 16); j++) {
      for (let k = 0; k < DIM; k += 97) v[k] = Math.sin(j * 7 + k);
      records.push({ id: `row-${j}`, vector: v.slice(), metadata: { j } });
    }
    await docs.upsert(records);
  }
  await db.checkpoint();
  await db.snapshot();
  await db.close();
  writeFileSync(marker, '');
  console.log(`built ${ROWS} rows x ${DIM}d in ${((performance.now() - t0) / 1000).toFixed(1)}s`);
}

function storeFiles(dir, sub = '') {
  const out = [];
  for (const n of readdirSync(join(dir, sub))) {
    const rel = sub ? `${sub}/${n}` : n;
    const st = statSync(join(dir, rel));
    if (st.isDirectory()) out.push(...storeFiles(dir, rel));
    else if (rel !== 'LOCK' && !rel.startsWith('wal/') && !rel.startsWith('.')) out.push({ path: join(dir, rel), ino: st.ino, size: st.size });
  }
  return out;
}

function dropCaches() {
  try {
    execSync('sync');
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    return null;
  } catch (e) {
    return e.code ?? String(e);
  }
}

await build();
// Each inode once (the snapshot hard-links the checkpoint files), as the scrub reads them.
const seen = new Set();
const files = storeFiles(DIR).filter((f) => !seen.has(f.ino) && seen.add(f.ino));
const totalBytes = files.reduce((s, f) => s + f.size, 0);
console.log(`store ${DIR}: ${files.length} distinct files, ${(totalBytes / 1e9).toFixed(2)} GB`);

const db = await open(DIR);
const last = {};
const scrubTask = (concurrency, deep = false) => async () => {
  const r = await db.scrub({ concurrency, deep });
  if (r.corrupt.length) throw new Error(`unexpected damage: ${JSON.stringify(r.corrupt[0])}`);
  last[concurrency] = r;
};
const jsStreaming = () => {
  const buf = Buffer.allocUnsafe(1 << 20);
  for (const f of files) {
    const h = xxh3.Xxh3.withSeed();
    const fd = openSync(f.path, 'r');
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; ) h.update(n === buf.length ? buf : buf.subarray(0, n));
    closeSync(fd);
    h.digest();
  }
};
const jsOneShot = () => {
  for (const f of files) xxh3.xxh64(readFileSync(f.path));
};
const nativeWhole = () => {
  const scan = nativeModule.scanOpen(null);
  for (const f of files) nativeModule.verifyFile(scan, f.path, 'blob', null, null);
  nativeModule.scanClose(scan);
};

const bench = new Bench({ name: 'scrub', time: 0, iterations: 3, warmupIterations: 1 });
bench
  .add('scrub, 2 piscina workers', scrubTask(2))
  .add('scrub, 1 piscina worker', scrubTask(1))
  .add('scrub, main-thread loop (concurrency 0)', scrubTask(0))
  .add('scrub deep (every record hashed too), 2 piscina workers', scrubTask(2, true))
  .add('whole-file xxh3 only: native, main thread', nativeWhole)
  .add('whole-file xxh3 only: @node-rs/xxhash streaming 1 MiB, main thread', jsStreaming)
  .add('whole-file xxh3 only: @node-rs/xxhash one-shot, main thread', jsOneShot);
await bench.run();

const rows = bench.tasks.map((t) => {
  const ms = t.result?.latency?.mean ?? t.result?.period ?? NaN;
  return { Task: t.name, 'mean ms': Math.round(ms), 'GB/s (page cache)': +(totalBytes / 1e6 / ms).toFixed(2) };
});
const cannotDrop = dropCaches();
if (cannotDrop === null) {
  for (const [i, concurrency] of [2, 1, 0].entries()) {
    dropCaches();
    const t0 = performance.now();
    await scrubTask(concurrency)();
    rows[i]['GB/s (caches dropped)'] = +(totalBytes / 1e6 / (performance.now() - t0)).toFixed(2);
  }
} else {
  console.log(`cold-cache rows skipped: cannot drop the page cache here (${cannotDrop})`);
}
await db.close();
console.table(rows);
const two = rows[0]['GB/s (page cache)'];
console.table([
  { Target: `scrub with 2 workers >= ${TARGET_GBPS} GB/s from cache`, Measured: `${two} GB/s`, Met: two >= TARGET_GBPS ? 'yes' : 'NO' },
  { Target: '2 workers / 1 worker', Measured: (two / rows[1]['GB/s (page cache)']).toFixed(2), Met: '' },
  { Target: 'native / @node-rs/xxhash streaming (hash only)', Measured: (rows[4]['GB/s (page cache)'] / rows[5]['GB/s (page cache)']).toFixed(2), Met: '' },
]);
