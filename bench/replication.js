// Replication benchmark: durable commits/s with 64 concurrent writers at Cairn's write concerns
// w: 'local', 'majority' and 'all' (a primary in this process, two replicas in their own
// processes on loopback), beside PostgreSQL with one synchronous standby
// (synchronous_commit = on) on loopback, started by this script from Debian's packages.
//
//   node bench/replication.js
//   BENCH_TIME_MS=1000 node bench/replication.js   # shorter tasks (default 3000 ms)
//
// One tinybench iteration is a round of 64 concurrent single-record commits, each resolved only
// once durable at its write concern (PostgreSQL: once the standby flushed it). ops/s is rounds;
// commits/s = 64 x rounds/s. The batch tasks commit 10,000 records at once (PostgreSQL: one
// INSERT of 10,000 rows through unnest), reported as records/s.
//
// Then catch-up from empty, on a separate store of CATCHUP_ROWS records (default 20,000):
// Cairn through the WAL stream (a new replica reads the whole log) and through a snapshot
// transfer (snapshotLagRecords: 1; the snapshot is taken beforehand, so the time is export,
// transfer, verify, install and reopen); PostgreSQL through its WAL stream (a standby made
// before the load, started after it, timed until its replay LSN reaches the primary's) and
// through pg_basebackup. MB/s is the WAL bytes (Cairn: cairn_wal_written_bytes_total;
// PostgreSQL: the LSN distance) or the snapshot's file bytes (PostgreSQL: the base backup's),
// over the wall time. The load average (os.loadavg) is printed with every table: the machine
// may be shared.
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, chmodSync, chownSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { loadavg, userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

import { open } from 'cairndb';
import pg from 'pg';
import { Bench } from 'tinybench';
import { freePort } from '../packages/cairn/dist/drill/free-port.js';

const here = dirname(fileURLToPath(import.meta.url));
const DATA_DIR = join(here, '.bench-data', 'replication');
const TIME_MS = Number(process.env.BENCH_TIME_MS ?? 3000);
const WRITERS = 64;
const DIM = 128;
const TOKEN = 'bench-replication-token-0123456789abcdef';
const BATCH = 10_000;
const CATCHUP_ROWS = Number(process.env.CATCHUP_ROWS ?? 20_000);
const TARGET = "majority commits/s >= 0.8x local, and >= 2x PostgreSQL's synchronous standby at 64 writers";

const VECTORS = Array.from({ length: 1024 }, () => Float32Array.from({ length: DIM }, () => Math.random() * 2 - 1));
let nextId = 0;
const record = () => {
  const n = nextId++;
  return { id: `doc-${n}`, vector: VECTORS[n % VECTORS.length], metadata: { n } };
};
const records = (n) => Array.from({ length: n }, record);
const load = () =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');

function spawnReplica(dir, id, address) {
  const p = spawn(process.execPath, [join(here, 'workers', 'replica.js'), dir, id, address, TOKEN], { stdio: ['ignore', 'pipe', 'inherit'] });
  return { p, ready: new Promise((resolve) => p.stdout.once('data', resolve)) };
}

async function stopReplica(r) {
  r.p.kill('SIGTERM');
  await new Promise((resolve) => r.p.on('close', resolve));
}

function dirBytes(d) {
  let n = 0;
  for (const e of readdirSync(d, { withFileTypes: true })) {
    const f = join(d, e.name);
    n += e.isDirectory() ? dirBytes(f) : statSync(f).size;
  }
  return n;
}

// ---- Cairn: a primary here, two replicas as child processes.
async function startCairn() {
  const dir = join(DATA_DIR, 'cairn');
  const db = await open(join(dir, 'n1'), { nodeId: 'n1' });
  const server = await db.serveReplication({ listen: '127.0.0.1:0', token: TOKEN, replicas: ['n2', 'n3'] });
  const replicas = ['n2', 'n3'].map((id) => spawnReplica(join(dir, id), id, server.address));
  await Promise.all(replicas.map((r) => r.ready));
  const docs = await db.createCollection('docs', { dim: DIM });
  return {
    round: (w) => Promise.all(Array.from({ length: WRITERS }, () => docs.upsert([record()], { w, timeoutMs: 30_000 }))),
    batch: (w) => docs.upsert(records(BATCH), { w, timeoutMs: 60_000 }),
    status: () => db.replicationStatus(),
    async stop() {
      await Promise.all(replicas.map(stopReplica));
      await server.close();
      await db.close();
    },
  };
}

/** A fresh store of `rows` records; a new replica catches up through the WAL, another through a snapshot. */
async function cairnCatchUp(rows) {
  const dir = join(DATA_DIR, 'catchup');
  const db = await open(join(dir, 'p'), { nodeId: 'p' });
  try {
    const docs = await db.createCollection('docs', { dim: DIM });
    for (let n = 0; n < rows; n += BATCH) await docs.upsert(records(Math.min(BATCH, rows - n)));
    const walBytes = Number(/^cairn_wal_written_bytes_total\{[^}]*\} (\d+)/m.exec(await db.metrics())?.[1] ?? NaN);
    const caughtUp = async (id) => {
      for (let i = 0; ; i++) {
        const r = db.replicationStatus().replicas.find((x) => x.nodeId === id);
        if (r && r.appliedSeq >= db.lastSeq) return;
        if (i > 120_000) throw new Error(`replica ${id} never caught up`);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    };
    let server = await db.serveReplication({ listen: '127.0.0.1:0', token: TOKEN, replicas: ['c1', 'c2'] });
    let t0 = performance.now();
    const c1 = spawnReplica(join(dir, 'c1'), 'c1', server.address);
    await caughtUp('c1');
    const walSec = (performance.now() - t0) / 1000;
    await stopReplica(c1);
    await server.close();
    // Taken first (with the graph, once indexed), so the timed part is the transfer and install.
    await docs.waitForIndex();
    const snap = await db.snapshot();
    server = await db.serveReplication({ listen: '127.0.0.1:0', token: TOKEN, replicas: ['c1', 'c2'], snapshotLagRecords: 1 });
    t0 = performance.now();
    const c2 = spawnReplica(join(dir, 'c2'), 'c2', server.address);
    await caughtUp('c2');
    const snapSec = (performance.now() - t0) / 1000;
    await stopReplica(c2);
    await server.close();
    return { walBytes, walSec, snapBytes: Number(snap.bytes), snapSec };
  } finally {
    await db.close();
  }
}

// ---- PostgreSQL: a primary and one synchronous standby, as the postgres user when run as root.
const PG_BIN = '/usr/lib/postgresql/15/bin';
function asPg(cmd, args) {
  const root = userInfo().uid === 0;
  const r = spawnSync(root ? 'runuser' : cmd, root ? ['-u', 'postgres', '--', cmd, ...args] : args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr || r.stdout}`);
  return r.stdout;
}

async function startPostgres() {
  const dir = join(DATA_DIR, 'pg');
  mkdirSync(dir, { recursive: true });
  if (userInfo().uid === 0) {
    const pgUser = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
    const uid = Number(pgUser.stdout.trim());
    const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim());
    chownSync(dir, uid, gid);
  }
  chmodSync(dir, 0o700);
  const [p1, p2] = [await freePort(), await freePort()];
  const primary = join(dir, 'primary');
  const standby = join(dir, 'standby');
  asPg(`${PG_BIN}/initdb`, ['-D', primary, '-U', 'postgres', '--auth=trust', '--no-instructions']);
  const common = `listen_addresses = '127.0.0.1'\nunix_socket_directories = '${dir}'\nfsync = on\nsynchronous_commit = on\nmax_connections = 100\n`;
  appendFileSync(join(primary, 'postgresql.conf'), `${common}port = ${p1}\nwal_level = replica\nmax_wal_senders = 4\nsynchronous_standby_names = 'standby1'\n`);
  asPg(`${PG_BIN}/pg_ctl`, ['-D', primary, '-l', join(dir, 'primary.log'), '-w', 'start']);
  asPg(`${PG_BIN}/pg_basebackup`, ['-d', `host=127.0.0.1 port=${p1} user=postgres application_name=standby1`, '-D', standby, '-R', '-X', 'stream']);
  appendFileSync(join(standby, 'postgresql.conf'), `port = ${p2}\n`);
  asPg(`${PG_BIN}/pg_ctl`, ['-D', standby, '-l', join(dir, 'standby.log'), '-w', 'start']);
  const pool = new pg.Pool({ host: '127.0.0.1', port: p1, user: 'postgres', database: 'postgres', max: WRITERS });
  for (let i = 0; i < 100; i++) {
    const { rows } = await pool.query("select sync_state from pg_stat_replication where application_name = 'standby1'");
    if (rows[0]?.sync_state === 'sync') break;
    if (i === 99) throw new Error('the PostgreSQL standby never became synchronous');
    await new Promise((r) => setTimeout(r, 100));
  }
  await pool.query('create table docs (id text primary key, vector bytea, metadata text)');
  const insertMany = (rs) =>
    pool.query('insert into docs select * from unnest($1::text[], $2::bytea[], $3::text[])', [
      rs.map((r) => r.id),
      rs.map((r) => Buffer.from(r.vector.buffer)),
      rs.map((r) => JSON.stringify(r.metadata)),
    ]);
  const lsn = async () => (await pool.query('select pg_current_wal_lsn() as l')).rows[0].l;
  return {
    batch: () => insertMany(records(BATCH)),
    /** Catch-up of a standby made now and started after `rows` are loaded; then a base backup. */
    async catchUp(rows) {
      // The base backup then holds these rows only (beside the cluster's own files), not the
      // rows of the tasks above.
      await pool.query('truncate docs');
      await pool.query('checkpoint');
      const port = await freePort();
      const late = join(dir, 'late');
      asPg(`${PG_BIN}/pg_basebackup`, [
        '-d',
        `host=127.0.0.1 port=${p1} user=postgres application_name=late`,
        '-D',
        late,
        '-R',
        '-X',
        'stream',
        '-C',
        '-S',
        'late',
      ]);
      appendFileSync(join(late, 'postgresql.conf'), `port = ${port}\n`);
      const from = await lsn();
      for (let n = 0; n < rows; n += BATCH) await insertMany(records(Math.min(BATCH, rows - n)));
      const to = await lsn();
      const walBytes = Number((await pool.query('select pg_wal_lsn_diff($1, $2) as d', [to, from])).rows[0].d);
      const t0 = performance.now();
      asPg(`${PG_BIN}/pg_ctl`, ['-D', late, '-l', join(dir, 'late.log'), '-w', 'start']);
      for (let i = 0; ; i++) {
        const { rows: r } = await pool.query("select replay_lsn >= $1::pg_lsn as done from pg_stat_replication where application_name = 'late'", [to]);
        if (r[0]?.done) break;
        if (i > 60_000) throw new Error('the late PostgreSQL standby never caught up');
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      const walSec = (performance.now() - t0) / 1000;
      asPg(`${PG_BIN}/pg_ctl`, ['-D', late, '-m', 'fast', '-w', 'stop']);
      const base = join(dir, 'base');
      const t1 = performance.now();
      asPg(`${PG_BIN}/pg_basebackup`, ['-d', `host=127.0.0.1 port=${p1} user=postgres`, '-D', base, '-X', 'fetch', '-c', 'fast']);
      const baseSec = (performance.now() - t1) / 1000;
      await pool.query("select pg_drop_replication_slot('late')");
      return { walBytes, walSec, snapBytes: dirBytes(base), snapSec: baseSec };
    },
    round: () =>
      Promise.all(
        Array.from({ length: WRITERS }, () => {
          const r = record();
          return pool.query('insert into docs values ($1, $2, $3)', [r.id, Buffer.from(r.vector.buffer), JSON.stringify(r.metadata)]);
        }),
      ),
    async stop() {
      await pool.end();
      for (const d of [standby, primary]) asPg(`${PG_BIN}/pg_ctl`, ['-D', d, '-m', 'fast', '-w', 'stop']);
    },
  };
}

rmSync(DATA_DIR, { recursive: true, force: true });
mkdirSync(DATA_DIR, { recursive: true });
const cairn = await startCairn();
let postgres = null;
try {
  postgres = await startPostgres();
} catch (e) {
  console.error(`PostgreSQL peer unavailable: ${e.message}`);
}
try {
  const bench = new Bench({ time: TIME_MS, warmupTime: Math.min(1000, TIME_MS / 3) });
  // Replica lag sampled every 10 ms while each Cairn task runs (records, and ms on the
  // primary's monotonic clock since the oldest record a replica has not applied was committed).
  const lag = new Map();
  let sampler = null;
  const sample = (name) => {
    const samples = { records: [], ms: [] };
    lag.set(name, samples);
    sampler = setInterval(() => {
      for (const r of cairn.status().replicas) {
        samples.records.push(Number(r.lagRecords));
        samples.ms.push(r.lagMs);
      }
    }, 10);
  };
  const stopSampling = () => clearInterval(sampler);
  for (const w of ['local', 'majority', 'all']) {
    bench.add(`cairn w=${w}`, () => cairn.round(w), { beforeAll: () => sample(`cairn w=${w}`), afterAll: stopSampling });
  }
  if (postgres) bench.add('postgres sync standby', () => postgres.round());
  for (const w of ['local', 'majority', 'all']) bench.add(`cairn 10k batch w=${w}`, () => cairn.batch(w));
  if (postgres) bench.add('postgres 10k batch sync standby', () => postgres.batch());
  const loadBefore = load();
  await bench.run();
  const failed = bench.tasks.filter((t) => !t.result?.latency);
  for (const t of failed) console.error(`task '${t.name}' failed: ${t.result?.error?.stack ?? t.result?.error ?? 'no result'}`);
  if (failed.length > 0) console.error('replication status now:', cairn.status());
  if (failed.length > 0) process.exitCode = 1;
  console.log(`load average (1, 5, 15 min): ${loadBefore} before, ${load()} after`);
  const single = bench.tasks.filter((t) => t.result?.latency && !t.name.includes('10k'));
  const batched = bench.tasks.filter((t) => t.result?.latency && t.name.includes('10k'));
  const rate = Object.fromEntries(single.map((t) => [t.name, (WRITERS * 1000) / t.result.latency.mean]));
  console.table(
    single.map((t) => ({
      task: t.name,
      'commits/s': Math.round(rate[t.name]),
      'ms per round (64 commits)': t.result.latency.mean.toFixed(2),
      'vs cairn w=local': (rate[t.name] / rate['cairn w=local']).toFixed(2),
      ...(postgres ? { 'vs postgres': (rate[t.name] / rate['postgres sync standby']).toFixed(2) } : {}),
    })),
  );
  const brate = Object.fromEntries(batched.map((t) => [t.name, (BATCH * 1000) / t.result.latency.mean]));
  console.log(`\n${BATCH}-record batches (one commit each)`);
  console.table(
    batched.map((t) => ({
      task: t.name,
      'records/s': Math.round(brate[t.name]),
      'ms per batch': t.result.latency.mean.toFixed(1),
      'vs cairn 10k w=local': (brate[t.name] / brate['cairn 10k batch w=local']).toFixed(2),
      ...(postgres ? { 'vs postgres': (brate[t.name] / brate['postgres 10k batch sync standby']).toFixed(2) } : {}),
    })),
  );
  const pct = (xs, p) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
  };
  console.log('\nreplica lag under load (both replicas, sampled every 10 ms)');
  console.table(
    [...lag].map(([task, s]) => ({
      task,
      'records p50': pct(s.records, 50),
      'records p99': pct(s.records, 99),
      'ms p50': pct(s.ms, 50),
      'ms p99': pct(s.ms, 99),
      samples: s.ms.length,
    })),
  );
  console.log(`target: ${TARGET}`);

  console.log(`\ncatch-up from empty, ${CATCHUP_ROWS} records of ${DIM} floats (load average before: ${load()})`);
  const mb = (bytes, sec) => (bytes / 1e6 / sec).toFixed(1);
  const c = await cairnCatchUp(CATCHUP_ROWS);
  const rowsOut = [
    { path: 'cairn WAL stream', MB: (c.walBytes / 1e6).toFixed(1), s: c.walSec.toFixed(2), 'MB/s': mb(c.walBytes, c.walSec) },
    { path: 'cairn snapshot transfer', MB: (c.snapBytes / 1e6).toFixed(1), s: c.snapSec.toFixed(2), 'MB/s': mb(c.snapBytes, c.snapSec) },
  ];
  if (postgres) {
    const p = await postgres.catchUp(CATCHUP_ROWS);
    rowsOut.push(
      { path: 'postgres WAL stream (late standby)', MB: (p.walBytes / 1e6).toFixed(1), s: p.walSec.toFixed(2), 'MB/s': mb(p.walBytes, p.walSec) },
      { path: 'postgres pg_basebackup', MB: (p.snapBytes / 1e6).toFixed(1), s: p.snapSec.toFixed(2), 'MB/s': mb(p.snapBytes, p.snapSec) },
    );
  }
  console.table(rowsOut);
  console.log(`load average after: ${load()}`);
} finally {
  await cairn.stop();
  if (postgres) await postgres.stop();
  rmSync(DATA_DIR, { recursive: true, force: true });
}
