// Transaction benchmark: committed read-modify-write transactions/s with 64 concurrent clients,
// at low contention (random rows of 10,000) and high contention (8 hot rows), beside SQLite
// BEGIN IMMEDIATE read-modify-write transactions (better-sqlite3, WAL, synchronous=FULL) in the
// same run; and the cost of holding 1 and 100 read views on Cairn's write throughput.
//
//   node bench/transaction.js                 # both suites
//   node bench/transaction.js tx | views      # one of them
//   BENCH_TIME_MS=1000 node bench/transaction.js
//
// Every commit is durable before it counts: Cairn with sync=group (a transaction resolves after
// the fdatasync that covers it), SQLite with synchronous=FULL. better-sqlite3 is synchronous, so
// its 64 "clients" are one connection taking turns: SQLite serializes writers on its write lock
// anyway, and a second connection would only add SQLITE_BUSY retries.
import { mkdirSync, rmSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { open } from 'cairndb';
import { Bench } from 'tinybench';

import { mulberry32 } from '../test/fixtures/mulberry32.mjs';
import { freshDir } from './lib/fresh-dir.js';
import { durableSqlite } from './lib/sqlite.js';

const here = dirname(fileURLToPath(import.meta.url));
// The repository's file system (never tmpfs): fsync cost is part of what is measured.
const DATA_DIR = join(here, '.bench-data', 'transaction');
const TIME_MS = Number(process.env.BENCH_TIME_MS ?? 3000);
const CLIENTS = 64;
const ROWS = 10_000;
const HOT_ROWS = 8;
/** Transactions each client commits per timed round. */
const PER_CLIENT = 4;
const PASSES = 4;
const DIM = 16;

const vector = (n) => Float32Array.from({ length: DIM }, (_, i) => ((n * 31 + i) % 97) / 97);

async function cairnStore(name) {
  const db = await open(freshDir(DATA_DIR, name), { sync: 'group' });
  const col = await db.createCollection('acct', { dim: DIM, metric: 'l2' });
  for (let s = 0; s < ROWS; s += 2000) {
    await col.upsert(Array.from({ length: 2000 }, (_, j) => ({ id: `r${s + j}`, vector: vector(s + j), metadata: { n: 0 } })));
  }
  return { db, col, close: () => db.close() };
}

function sqliteStore(name) {
  const dir = freshDir(DATA_DIR, name);
  mkdirSync(dir, { recursive: true });
  const db = durableSqlite(join(dir, 'bench.db'));
  db.exec('CREATE TABLE acct (id TEXT PRIMARY KEY, vector BLOB NOT NULL, n INTEGER NOT NULL)');
  const insert = db.prepare('INSERT INTO acct (id, vector, n) VALUES (?, ?, 0)');
  db.transaction(() => {
    for (let i = 0; i < ROWS; i++) insert.run(`r${i}`, Buffer.from(vector(i).buffer));
  })();
  return { db, close: async () => db.close() };
}

/** Run `round` (which commits `ops` transactions or writes) as one timed tinybench iteration. */
function perOp(ops, round) {
  return async () => {
    const t0 = performance.now();
    await round();
    const ms = performance.now() - t0;
    return { overriddenDuration: ms / ops, overriddenIterationCost: ms };
  };
}

/**
 * Each task on a fresh store, closed before the next, in PASSES passes of alternating order so
 * that a slow spell of the shared machine hits every task alike; rounds of all passes pooled.
 */
async function runSuite(tasks) {
  const pooled = new Map(tasks.map((t) => [t.name, { samples: [], extra: '' }]));
  for (let pass = 0; pass < PASSES; pass++) {
    for (const t of pass % 2 === 0 ? tasks : [...tasks].reverse()) {
      const store = await t.setup();
      try {
        const bench = new Bench({ time: TIME_MS / PASSES, warmupTime: Math.min(500, TIME_MS / 6), iterations: 2, warmupIterations: 1, retainSamples: true });
        bench.add(t.name, t.fn(store));
        const [task] = await bench.run();
        const entry = pooled.get(t.name);
        entry.samples.push(...(task.result.latency?.samples ?? []));
        entry.extra = t.extra?.(store) ?? '';
      } finally {
        await store.close();
      }
    }
  }
  return tasks.map(({ name }) => {
    const { samples, extra } = pooled.get(name);
    const mean = samples.reduce((a, b) => a + b, 0) / Math.max(1, samples.length);
    return { name, rate: samples.length ? 1000 / mean : Number.NaN, rounds: samples.length, extra };
  });
}

function pick(rand, hot) {
  return `r${Math.floor(rand() * (hot ? HOT_ROWS : ROWS))}`;
}

function cairnTxTask(name, hot) {
  const rand = mulberry32(hot ? 2 : 1);
  return {
    name,
    setup: () => cairnStore(name.replace(/\W+/g, '-')),
    fn: (s) =>
      perOp(CLIENTS * PER_CLIENT, async () => {
        const client = async () => {
          for (let i = 0; i < PER_CLIENT; i++) {
            const id = pick(rand, hot);
            await s.db.transaction(
              async (tx) => {
                const acct = tx.collection('acct');
                const row = await acct.get(id);
                await acct.upsert([{ id, vector: row.vector, metadata: { n: row.metadata.n + 1 } }]);
              },
              { retries: 1_000_000 },
            );
          }
        };
        await Promise.all(Array.from({ length: CLIENTS }, client));
      }),
    extra: (s) => {
      const t = s.db.stats().transactions;
      return `${(t.retries / Math.max(1, t.committed)).toFixed(2)} retries/commit`;
    },
  };
}

function sqliteTxTask(name, hot) {
  const rand = mulberry32(hot ? 2 : 1);
  return {
    name,
    setup: () => sqliteStore(name.replace(/\W+/g, '-')),
    fn: (s) => {
      const begin = s.db.prepare('BEGIN IMMEDIATE');
      const read = s.db.prepare('SELECT n FROM acct WHERE id = ?');
      const write = s.db.prepare('UPDATE acct SET n = ? WHERE id = ?');
      const commit = s.db.prepare('COMMIT');
      return perOp(CLIENTS * PER_CLIENT, async () => {
        for (let i = 0; i < CLIENTS * PER_CLIENT; i++) {
          const id = pick(rand, hot);
          begin.run();
          const { n } = read.get(id);
          write.run(n + 1, id);
          commit.run();
        }
      });
    },
  };
}

async function transactions() {
  const rows = await runSuite([
    cairnTxTask('Cairn tx, low contention (10,000 rows)', false),
    sqliteTxTask('SQLite BEGIN IMMEDIATE, low contention', false),
    cairnTxTask(`Cairn tx, high contention (${HOT_ROWS} rows)`, true),
    sqliteTxTask(`SQLite BEGIN IMMEDIATE, high contention`, true),
  ]);
  console.log(`\nCommitted read-modify-write transactions/s, ${CLIENTS} concurrent clients, durable (Cairn group, SQLite FULL)`);
  console.table(
    rows.map((r, i) => ({
      Task: r.name,
      'tx/s': Math.round(r.rate).toLocaleString('en-US'),
      Rounds: r.rounds,
      'Cairn ÷ SQLite': i % 2 === 0 ? `${(r.rate / rows[i + 1].rate).toFixed(2)}x` : '',
      Note: r.extra,
    })),
  );
}

/** 64 concurrent plain upserts (sync=group) over 10,000 ids, with `views` read views held at
 *  spread-out seqs: each overwrite keeps the prior version alive while any view is open. The
 *  three tasks share one store (opened once), so they differ only in the views held. */
function viewsTask(views, shared) {
  const rand = mulberry32(7 + views);
  return {
    name: `Cairn 64 writers, ${views} view${views === 1 ? '' : 's'} held`,
    setup: async () => {
      const s = await shared();
      const held = [];
      for (let v = 0; v < views; v++) {
        await s.col.upsert([{ id: pick(rand, false), vector: vector(v), metadata: { n: v } }]);
        held.push(s.db.readView());
      }
      return {
        ...s,
        close: async () => {
          for (const v of held) v.release();
        },
      };
    },
    fn: (s) =>
      perOp(CLIENTS * PER_CLIENT, async () => {
        const client = async () => {
          for (let i = 0; i < PER_CLIENT; i++) {
            const id = pick(rand, false);
            await s.col.upsert([{ id, vector: vector(i), metadata: { n: i } }]);
          }
        };
        await Promise.all(Array.from({ length: CLIENTS }, client));
      }),
    extra: (s) => `${s.db.stats().views.pinnedVersions.toLocaleString('en-US')} versions pinned at the end`,
  };
}

async function viewOverhead() {
  let store;
  const shared = async () => {
    store ??= await cairnStore('views');
    return store;
  };
  const rows = await runSuite([viewsTask(0, shared), viewsTask(1, shared), viewsTask(100, shared)]);
  await store?.close();
  console.log('\nWrite throughput while read views are held (upserts/s, 64 writers, sync=group)');
  console.table(
    rows.map((r) => ({
      Task: r.name,
      'upserts/s': Math.round(r.rate).toLocaleString('en-US'),
      Rounds: r.rounds,
      'this ÷ no views': `${(r.rate / rows[0].rate).toFixed(2)}x`,
      Note: r.extra,
    })),
  );
}

const args = process.argv.slice(2);
const want = (n) => args.length === 0 || args.includes(n);
const load = () =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');
console.log(`${cpus().length} cores, load average before: ${load()}`);
if (want('tx')) await transactions();
if (want('views')) await viewOverhead();
console.log(`load average after: ${load()}`);
rmSync(DATA_DIR, { recursive: true, force: true });
