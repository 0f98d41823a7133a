// Memory that a closed store leaves behind: one process opens a 200k x 32 store, runs a query,
// and closes it, 40 times; RSS is sampled after each close. Peer in the same run: hnswlib-node
// reading the same vectors' index 40 times in one process (readIndex + searchKnn, then dropped).
//
//   node bench/open-close.js                 # 200k x 32, 40 cycles
//   OPEN_CLOSE_N=50000 OPEN_CLOSE_CYCLES=10 node bench/open-close.js   # quick check
//
// Each series runs in its own child process so that one's heap never counts against the other.
// Two Cairn series run: as shipped, and with MALLOC_ARENA_MAX=1 (glibc keeps one arena for every
// thread), which shows how much of any growth belongs to glibc's per-thread arenas.
// The target (issue 13): after 40 cycles, RSS <= 1.2x the RSS after the first.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { open } from 'cairndb';
import hnswlib from 'hnswlib-node';
import { vectorOf } from './random.js';

const here = dirname(fileURLToPath(import.meta.url));
const selfPath = fileURLToPath(import.meta.url);
const N = Number(process.env.OPEN_CLOSE_N ?? 200_000);
const DIM = 32;
const CYCLES = Number(process.env.OPEN_CLOSE_CYCLES ?? 40);
const DATA_DIR = join(here, '.bench-data', `open-close-${N}`);
const STORE_DIR = join(DATA_DIR, 'store');
const HNSW_FILE = join(DATA_DIR, 'hnswlib.bin');

/** Resident set size in bytes, from /proc (process.memoryUsage().rss reads the same value). */
function rssBytes() {
  const status = readFileSync('/proc/self/status', 'utf8');
  const kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]);
  return kb * 1024;
}

async function buildData() {
  if (existsSync(join(DATA_DIR, 'ready'))) return;
  rmSync(DATA_DIR, { recursive: true, force: true });
  mkdirSync(DATA_DIR, { recursive: true });
  const db = await open(STORE_DIR);
  const docs = await db.createCollection('docs', { dim: DIM, metric: 'l2' });
  const index = new hnswlib.HierarchicalNSW('l2', DIM);
  index.initIndex(N, 16, 200);
  for (let start = 0; start < N; start += 5000) {
    const records = [];
    for (let i = start; i < Math.min(N, start + 5000); i++) {
      const vector = vectorOf(i, DIM);
      records.push({ id: `r${i}`, vector, metadata: { i } });
      index.addPoint(Array.from(vector), i);
    }
    await docs.upsert(records);
  }
  await docs.waitForIndex();
  await db.checkpoint();
  await db.close();
  index.writeIndexSync(HNSW_FILE);
  execFileSync('touch', [join(DATA_DIR, 'ready')]);
}

async function cairnCycles() {
  const samples = [];
  const q = vectorOf(N + 7, DIM);
  for (let c = 0; c < CYCLES; c++) {
    const db = await open(STORE_DIR, { create: false });
    await db.collection('docs').query(q, { k: 10 });
    await db.close();
    samples.push(rssBytes());
  }
  return samples;
}

async function hnswlibCycles() {
  const samples = [];
  const q = Array.from(vectorOf(N + 7, DIM));
  for (let c = 0; c < CYCLES; c++) {
    let index = new hnswlib.HierarchicalNSW('l2', DIM);
    index.readIndexSync(HNSW_FILE);
    index.searchKnn(q, 10);
    index = undefined;
    // hnswlib-node has no close: its memory goes when V8 collects the wrapper and then runs the
    // native finalizer, which happens on a later turn of the event loop.
    globalThis.gc?.();
    await new Promise((resolve) => setImmediate(resolve));
    globalThis.gc?.();
    samples.push(rssBytes());
  }
  return samples;
}

const MiB = 1024 * 1024;
function summary(name, samples) {
  const first = samples[0];
  const last = samples[samples.length - 1];
  const peak = Math.max(...samples);
  return {
    series: name,
    'first cycle MiB': Math.round(first / MiB),
    'last cycle MiB': Math.round(last / MiB),
    'peak MiB': Math.round(peak / MiB),
    'last / first': Number((last / first).toFixed(2)),
  };
}

const role = process.argv[2];
if (role === 'cairn') {
  process.stdout.write(JSON.stringify(await cairnCycles()));
} else if (role === 'hnswlib') {
  process.stdout.write(JSON.stringify(await hnswlibCycles()));
} else {
  const before = loadavg();
  await buildData();
  const run = (series, env) =>
    JSON.parse(execFileSync(process.execPath, ['--expose-gc', selfPath, series], { env: { ...process.env, ...env }, maxBuffer: 1 << 20 }).toString());
  const shipped = run('cairn', {});
  const oneArena = run('cairn', { MALLOC_ARENA_MAX: '1' });
  const peer = run('hnswlib', {});
  console.log(`open/close ${CYCLES} cycles of a ${N} x ${DIM} store; RSS after each close`);
  console.table([summary('cairn', shipped), summary('cairn, MALLOC_ARENA_MAX=1', oneArena), summary('hnswlib-node readIndex', peer)]);
  const after = loadavg();
  console.log(`load average before ${before.map((l) => l.toFixed(2)).join(' ')}, after ${after.map((l) => l.toFixed(2)).join(' ')}`);
}
