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
// commits/s = 64 x rounds/s.
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, chmodSync, chownSync, mkdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { open } from 'cairndb';
import pg from 'pg';
import { Bench } from 'tinybench';

const here = dirname(fileURLToPath(import.meta.url));
const DATA_DIR = join(here, '.bench-data', 'replication');
const TIME_MS = Number(process.env.BENCH_TIME_MS ?? 3000);
const WRITERS = 64;
const DIM = 128;
const TOKEN = 'bench-replication-token-0123456789abcdef';
const TARGET = "majority commits/s >= 0.8x local, and >= 2x PostgreSQL's synchronous standby at 64 writers";

const VECTORS = Array.from({ length: 1024 }, () => Float32Array.from({ length: DIM }, () => Math.random() * 2 - 1));
let nextId = 0;
const record = () => {
  const n = nextId++;
  return { id: `doc-${n}`, vector: VECTORS[n % VECTORS.length], metadata: { n } };
};

function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// ---- Cairn: a primary here, two replicas as child processes.
async function startCairn() {
  const dir = join(DATA_DIR, 'cairn');
  const db = await open(join(dir, 'n1'), { nodeId: 'n1' });
  const server = await db.serveReplication({ listen: '127.0.0.1:0', token: TOKEN, replicas: ['n2', 'n3'] });
  const replicas = ['n2', 'n3'].map((id) => {
    const p = spawn(process.execPath, [join(here, 'workers', 'replica.js'), join(dir, id), id, server.address, TOKEN], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    return { p, ready: new Promise((resolve) => p.stdout.once('data', resolve)) };
  });
  await Promise.all(replicas.map((r) => r.ready));
  const docs = await db.createCollection('docs', { dim: DIM });
  return {
    round: (w) => Promise.all(Array.from({ length: WRITERS }, () => docs.upsert([record()], { w, timeoutMs: 30_000 }))),
    status: () => db.replicationStatus(),
    async stop() {
      for (const r of replicas) r.p.kill('SIGTERM');
      await Promise.all(replicas.map((r) => new Promise((resolve) => r.p.on('close', resolve))));
      await server.close();
      await db.close();
    },
  };
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
  return {
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
  await bench.run();
  const rate = Object.fromEntries(bench.tasks.map((t) => [t.name, (WRITERS * 1000) / t.result.latency.mean]));
  console.table(
    bench.tasks.map((t) => ({
      task: t.name,
      'commits/s': Math.round(rate[t.name]),
      'ms per round (64 commits)': t.result.latency.mean.toFixed(2),
      'vs cairn w=local': (rate[t.name] / rate['cairn w=local']).toFixed(2),
      ...(postgres ? { 'vs postgres': (rate[t.name] / rate['postgres sync standby']).toFixed(2) } : {}),
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
} finally {
  await cairn.stop();
  if (postgres) await postgres.stop();
  rmSync(DATA_DIR, { recursive: true, force: true });
}
