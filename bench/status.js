// `cairn status` (inspectStore) on a large store with a WAL tail after its checkpoint, beside the
// work it used to do first: reading every checkpoint data file whole. Both run in the same
// process on the same page-cached files; the figure is the ratio of their mean times, with the
// load average, and the bytes one status call reads (/proc/self/io rchar).
//
//   node bench/status.js                               # 200k x 128 rows, 2,000 ops in the tail
//   STATUS_TAIL=100 node bench/status.js               # a short tail: ids looked up, no file read whole
//   STATUS_N=20000 BENCH_TIME_MS=300 node bench/status.js   # quick check
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { inspectStore, open, recoverableRange } from 'cairndb';
import { Bench } from 'tinybench';
import { vectorOf } from './random.js';

const here = dirname(fileURLToPath(import.meta.url));
const N = Number(process.env.STATUS_N ?? 200_000);
const TAIL = Number(process.env.STATUS_TAIL ?? 2_000);
const DIM = 128;
const TIME = Number(process.env.BENCH_TIME_MS ?? 1000);
const DIR = join(here, '.bench-data', `status-${N}`);

function rchar() {
  return Number(/rchar: (\d+)/.exec(readFileSync('/proc/self/io', 'utf8'))?.[1]);
}

rmSync(DIR, { recursive: true, force: true });
const db = await open(DIR, { sync: 'none' });
const docs = await db.createCollection('docs', { dim: DIM, metric: 'l2' });
for (let start = 0; start < N; start += 5000) {
  await docs.upsert(
    Array.from({ length: Math.min(5000, N - start) }, (_, k) => ({ id: `r${start + k}`, vector: vectorOf(start + k, DIM), metadata: { i: start + k } })),
  );
}
await docs.waitForIndex();
await db.checkpoint();
// The tail: overwrites of existing rows, new rows and deletes, in the WAL only.
for (let i = 0; i < TAIL; i += 100) {
  await docs.upsert(Array.from({ length: 50 }, (_, k) => ({ id: `r${(i + k) * 37}`, vector: vectorOf(i + k, DIM) })));
  await docs.upsert(Array.from({ length: 40 }, (_, k) => ({ id: `new${i + k}`, vector: vectorOf(i + k, DIM) })));
  await docs.delete(Array.from({ length: 10 }, (_, k) => `r${(i + k) * 53 + 1}`));
}
const want = await docs.count();
const dataDir = join(DIR, 'data');
const dataFiles = readdirSync(dataDir).filter((f) => f.endsWith('.seg'));
const dataBytes = dataFiles.reduce((n, f) => n + readFileSync(join(dataDir, f)).length, 0);

const s = await inspectStore(DIR);
if (s.collections[0].count !== want) throw new Error(`status counts ${s.collections[0].count}, the store ${want}`);
const before = rchar();
await inspectStore(DIR);
const statusRead = rchar() - before;
const beforeRange = rchar();
await recoverableRange(DIR);
const rangeRead = rchar() - beforeRange;

const bench = new Bench({ time: TIME });
bench.add('cairn status (inspectStore)', async () => {
  await inspectStore(DIR);
});
bench.add('peer: read every checkpoint data file', () => {
  for (const f of dataFiles) readFileSync(join(dataDir, f));
});
await bench.run();
console.table(bench.table());
const [a, b] = bench.tasks.map((t) => t.result.latency.mean);
console.log(
  `rows ${N} x ${DIM}, tail ${TAIL} ops; data files ${(dataBytes / 1e6).toFixed(1)} MB; one status call read ${(statusRead / 1e6).toFixed(2)} MB,` +
    ` of which the recoverable range's WAL scan ${(rangeRead / 1e6).toFixed(2)} MB; status / read-data-files time ratio ${(a / b).toFixed(3)}; load average ${loadavg()
      .map((x) => x.toFixed(1))
      .join(' ')}`,
);
await db.close();
rmSync(DIR, { recursive: true, force: true });
