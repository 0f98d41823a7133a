// Recovery drill benchmark: `runDrill` on a 100,000 x 128 store, one-shot timings (a drill
// damages its copy, so a repeated suite makes no sense), each scenario beside its peer in the
// same run: `cp -r` of the same store for accidental-delete, `cp -r` of a full file:// backup of it
// (without and with a `sync` of the copy) for disk-loss, hnswlib-node's build of the same vectors
// with the same graph parameters for index-loss. Writes the table between
// the drill markers of bench/README.md.
//
//   node bench/drill.js                  # DRILL_ROWS (100000), DRILL_DIM (128)
//   DRILL_CLUSTER=0 node bench/drill.js  # without the cluster scenarios (run when /usr/bin/etcd exists)
//   DRILL_ROWS=174763 DRILL_DIM=1536 DRILL_INTRINSIC=16 DRILL_TABLE=drill-1gb \
//     DRILL_SCENARIOS=process-kill,segment-corruption,accidental-delete,disk-loss node bench/drill.js
//                                        # 1 GB of vectors; the table goes between the drill-1gb markers
//
// DRILL_SCENARIOS picks scenarios (default: all); hnswlib-node's peer build runs only with index-loss.
//
// Data under bench/.bench-data/drill (gitignored), removed at the end unless KEEP_DATA=1. The
// scratch area is on the same file system, so restores link snapshot files.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { BackupManager, open, runDrill, SEED_CLAIMS } from 'cairndb';
import hnswlib from 'hnswlib-node';
import { rng } from './random.js';

const { HierarchicalNSW } = hnswlib;
const here = dirname(fileURLToPath(import.meta.url));
const ROOT = join(here, '.bench-data', 'drill');
const ROWS = Number(process.env.DRILL_ROWS ?? 100_000);
const DIM = Number(process.env.DRILL_DIM ?? 128);
/** Graph parameters of the store and of the hnswlib-node peer. */
const GRAPH = { m: Number(process.env.DRILL_M ?? 16), efConstruction: Number(process.env.DRILL_EFC ?? 64) };
const CLUSTER = process.env.DRILL_CLUSTER !== '0' && existsSync('/usr/bin/etcd');
const SCENARIOS = process.env.DRILL_SCENARIOS?.split(',');
const WITH_HNSWLIB = SCENARIOS === undefined || SCENARIOS.includes('index-loss');
const README = join(here, 'README.md');
const TABLE = process.env.DRILL_TABLE ?? 'drill';
const BEGIN = `<!-- ${TABLE}:begin -->`;
const END = `<!-- ${TABLE}:end -->`;

const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
const ms = (t) => Math.round(t);
const fmt = (t) => (t === null ? '—' : t < 1000 ? `${Math.round(t)} ms` : `${(t / 1000).toFixed(2)} s`);

rmSync(ROOT, { recursive: true, force: true });
mkdirSync(ROOT, { recursive: true });
const source = join(ROOT, 'store');
const rand = rng(7);
const base = new Float32Array(ROWS * DIM);
// DRILL_INTRINSIC=k: each vector is a fixed random DIM x k map of k uniform coordinates plus a
// little noise, the low intrinsic dimension of real embeddings. Uniform random 1536-d vectors
// are not navigable by a small graph: a row's own vector then misses it, and the drill's
// first-query check (which needs the probe row back) fails for reasons no recovery causes.
const INTRINSIC = Number(process.env.DRILL_INTRINSIC ?? 0);
if (INTRINSIC > 0) {
  const map = Float32Array.from({ length: DIM * INTRINSIC }, () => rand() * 2 - 1);
  const z = new Float32Array(INTRINSIC);
  for (let i = 0; i < ROWS; i++) {
    for (let k = 0; k < INTRINSIC; k++) z[k] = rand() * 2 - 1;
    for (let d = 0; d < DIM; d++) {
      let x = 0.05 * (rand() * 2 - 1);
      for (let k = 0; k < INTRINSIC; k++) x += map[d * INTRINSIC + k] * z[k];
      base[i * DIM + d] = x / Math.sqrt(INTRINSIC);
    }
  }
} else for (let i = 0; i < base.length; i++) base[i] = rand() * 2 - 1;

console.log(`building ${ROWS} x ${DIM} (m ${GRAPH.m}, efConstruction ${GRAPH.efConstruction}); load average ${load()}`);
const db = await open(source);
const col = await db.createCollection('docs', { dim: DIM, metric: 'l2', ...GRAPH });
for (let from = 0; from < ROWS; from += 2000) {
  const records = [];
  for (let i = from; i < Math.min(ROWS, from + 2000); i++) records.push({ id: `doc-${i}`, vector: base.subarray(i * DIM, (i + 1) * DIM), metadata: { n: i } });
  await col.upsert(records);
}
await col.waitForIndex();
await db.checkpoint();
await db.close();

const duMb = (dir) => Number(execFileSync('du', ['-sb', dir]).toString().split('\t')[0]) / 1e6;
const storeMb = duMb(source);
// Peers, in the same run.
const cpTarget = join(ROOT, 'cp-peer');
let t = performance.now();
execFileSync('cp', ['-r', source, cpTarget]);
const cpMs = performance.now() - t;
rmSync(cpTarget, { recursive: true, force: true });
// disk-loss's peer: the backup it restores is a full one plus a small incremental, so a full
// backup of the same store is the same bytes. `cp -r` leaves them in the page cache; the restore
// fsyncs what it writes, so the copy is also timed until `sync -f` has made it durable.
const backupDir = join(ROOT, 'peer-backup');
const peerBackups = new BackupManager({ source, target: pathToFileURL(backupDir).href });
await peerBackups.create({ kind: 'full' });
await peerBackups.close();
const backupMb = duMb(backupDir);
execFileSync('sync');
t = performance.now();
execFileSync('cp', ['-r', backupDir, cpTarget]);
const cpBackupMs = performance.now() - t;
execFileSync('sync', ['-f', cpTarget]);
const cpBackupSyncMs = performance.now() - t;
rmSync(cpTarget, { recursive: true, force: true });
rmSync(backupDir, { recursive: true, force: true });
let hnswlibMs = null;
if (WITH_HNSWLIB) {
  const index = new HierarchicalNSW('l2', DIM);
  t = performance.now();
  index.initIndex(ROWS, GRAPH.m, GRAPH.efConstruction, 100);
  for (let i = 0; i < ROWS; i++) index.addPoint(Array.from(base.subarray(i * DIM, (i + 1) * DIM)), i);
  hnswlibMs = performance.now() - t;
}
console.log(
  `peers: cp -r ${fmt(cpMs)}, cp -r of a full backup (${backupMb.toFixed(0)} MB) ${fmt(cpBackupMs)}, with sync ${fmt(cpBackupSyncMs)}, hnswlib-node build ${fmt(hnswlibMs)}; load average ${load()}`,
);

const loadBefore = load();
const report = await runDrill({
  source,
  scratch: join(ROOT, 'scratch'),
  cluster: CLUSTER,
  scenarios: SCENARIOS,
  onProgress: (e) => e.phase === 'end' && console.log(`${e.scenario}: ${e.result.ok ? 'ok' : 'FAILED'} RTO ${fmt(e.result.rtoMs)} RPO ${e.result.rpo}`),
});
const loadAfter = load();

const peer = {
  'index-loss': (r) => `hnswlib-node build ${fmt(hnswlibMs)}; Cairn's graph rebuild ${fmt(r.figures.graphMs)} = ${(r.figures.graphMs / hnswlibMs).toFixed(2)}x`,
  'accidental-delete': (r) =>
    `\`cp -r\` ${fmt(cpMs)}; RTO = ${(r.rtoMs / cpMs).toFixed(2)}x (restore alone ${fmt(r.steps.find((s) => s.name.startsWith('restore'))?.ms ?? null)})`,
  'disk-loss': (r) =>
    `\`cp -r\` of a full backup (${backupMb.toFixed(0)} MB) ${fmt(cpBackupMs)}, with \`sync\` ${fmt(cpBackupSyncMs)}; RTO = ${(r.rtoMs / cpBackupMs).toFixed(2)}x and ${(r.rtoMs / cpBackupSyncMs).toFixed(2)}x (restore alone ${fmt(r.steps.find((s) => s.name.startsWith('restore'))?.ms ?? null)})`,
  'leader-kill': () => 'target: lease TTL 2 s + 2 s',
  'leader-pause': (r) => `target: lease TTL 2 s + 2 s${r.ok ? `; acks after resume: ${r.figures.acksAfterResume}` : ''}`,
};
const rows = report.scenarios.map((r) => ({
  scenario: r.scenario,
  rto: fmt(r.rtoMs),
  rpo: r.rpo === null ? '—' : String(r.rpo),
  automatic: r.automatic ? 'yes' : 'no (operator)',
  claim: SEED_CLAIMS[r.scenario],
  peer: peer[r.scenario]?.(r) ?? '',
  result: r.ok ? 'ok' : `FAILED: ${r.problems.join('; ')}`,
}));
console.table(rows);
for (const r of report.scenarios) console.log(r.scenario, JSON.stringify({ steps: r.steps, figures: r.figures }));

const table = [
  `${ROWS.toLocaleString('en-US')} x ${DIM}${INTRINSIC > 0 ? ` (intrinsic dimension ${INTRINSIC})` : ''} (${((ROWS * DIM * 4) / 2 ** 20).toFixed(0)} MiB of vectors, store ${storeMb.toFixed(0)} MB), m ${GRAPH.m}, efConstruction ${GRAPH.efConstruction}; load average before the drill ${loadBefore}, after ${loadAfter} (${new Date().toISOString().slice(0, 10)}).`,
  '',
  "| scenario | RTO measured | RPO | automatic? | seeds' claim | peer in the same run | result |",
  '|---|---|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.scenario} | ${r.rto} | ${r.rpo} | ${r.automatic} | ${r.claim} | ${r.peer} | ${r.result} |`),
  '',
  `Steps (ms): ${report.scenarios.map((r) => `${r.scenario}: ${r.steps.map((s) => `${s.name} ${ms(s.ms)}`).join(', ')}`).join('; ')}.`,
].join('\n');
const readme = readFileSync(README, 'utf8');
const a = readme.indexOf(BEGIN);
const b = readme.indexOf(END);
if (a >= 0 && b > a) writeFileSync(README, `${readme.slice(0, a + BEGIN.length)}\n${table}\n${readme.slice(b)}`);
else console.log('bench/README.md has no drill markers; table not written');
if (process.env.KEEP_DATA !== '1') rmSync(ROOT, { recursive: true, force: true });
process.exit(report.ok ? 0 : 1);
