// Snapshot and point-in-time-recovery benchmark. One-shot timings (each case runs once on its own
// copy of the store), printed with console.table, with a plain recursive copy of the store as
// the peer.
//
//   node bench/snapshot.js              # both parts
//   node bench/snapshot.js snapshot     # full vs incremental snapshot after a 1% change
//   node bench/snapshot.js pitr         # restore of a large store
//
// Environment: SNAP_ROWS (100000), SNAP_DIM (128); PITR_MB (1024, vector bytes in the store),
// PITR_DIM (1536). Data lives under bench/.bench-data/snapshot (gitignored), removed at the end
// unless KEEP_DATA=1.
import { cpSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { open, restore } from 'cairndb';
import { randomVector, rng } from './random.js';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = join(here, '.bench-data', 'snapshot');
const parts = process.argv.slice(2);
const want = (p) => parts.length === 0 || parts.includes(p);

const SNAP_ROWS = Number(process.env.SNAP_ROWS ?? 100_000);
const SNAP_DIM = Number(process.env.SNAP_DIM ?? 128);
const PITR_MB = Number(process.env.PITR_MB ?? 1024);
const PITR_DIM = Number(process.env.PITR_DIM ?? 1536);
/** Graph parameters: low enough that building the bench stores takes minutes, not hours. */
const GRAPH = { m: 8, efConstruction: 32 };

const rand = rng(42);
const vector = (dim) => randomVector(rand, dim);
function rows(from, n, dim, version) {
  return Array.from({ length: n }, (_, j) => ({ id: `doc-${from + j}`, vector: vector(dim), metadata: { n: from + j, v: version } }));
}

/** Bytes on disk under `dir`, each hard-linked file once (snapshots link the live files). */
function duBytes(dir) {
  const seen = new Set();
  let total = 0;
  for (const name of readdirSync(dir, { recursive: true, encoding: 'utf8' })) {
    const st = statSync(join(dir, name));
    if (!st.isFile() || seen.has(st.ino)) continue;
    seen.add(st.ino);
    total += st.size;
  }
  return total;
}

async function timed(fn) {
  const t = performance.now();
  const value = await fn();
  return { ms: performance.now() - t, value };
}

const mb = (b) => (b / 2 ** 20).toFixed(1);
const ms = (x) => Number(x.toFixed(1));
const pct = (a, b) => `${((100 * a) / b).toFixed(2)}%`;

async function fill(db, name, total, dim, batch) {
  const col = await db.createCollection(name, { dim, metric: 'l2', ...GRAPH });
  for (let i = 0; i < total; i += batch) await col.upsert(rows(i, Math.min(batch, total - i), dim, 0));
  return col;
}

async function snapshotPart() {
  const base = join(ROOT, 'snap-base');
  rmSync(base, { recursive: true, force: true });
  console.log(`snapshot: building ${SNAP_ROWS} x ${SNAP_DIM} (m ${GRAPH.m}, efConstruction ${GRAPH.efConstruction})...`);
  const db = await open(base, { sync: 'none' });
  const build = await timed(async () => {
    const col = await fill(db, 'v', SNAP_ROWS, SNAP_DIM, 1000);
    await col.waitForIndex();
  });
  const first = await timed(() => db.snapshot({ incremental: false }));
  // The 1% change: new vectors for 1% of the rows, in batches of 100.
  const changed = Math.round(SNAP_ROWS / 100);
  const col = db.collection('v');
  for (let i = 0; i < changed; i += 100) {
    const start = Math.floor(rand() * (SNAP_ROWS - 100));
    await col.upsert(rows(start, 100, SNAP_DIM, 1));
  }
  await db.close();
  console.log(`  built in ${(build.ms / 1000).toFixed(1)} s; first full snapshot ${ms(first.ms)} ms`);

  const results = [];
  // Each case on its own copy, opened and indexed before the clock starts.
  const onCopy = async (name, fn) => {
    const dir = join(ROOT, `snap-${name}`);
    rmSync(dir, { recursive: true, force: true });
    cpSync(base, dir, { recursive: true });
    const store = await open(dir, { sync: 'none' });
    await store.collection('v').waitForIndex();
    try {
      return await fn(store, dir);
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  };
  for (const incremental of [false, true]) {
    // The snapshot call as users make it: it checkpoints the change first.
    const r = await onCopy(`${incremental}-cp`, (s) => timed(() => s.snapshot({ incremental })));
    results.push({
      case: `${incremental ? 'incremental' : 'full'} snapshot (with its checkpoint)`,
      ms: r.ms,
      bytes: r.value.bytes,
      files: r.value.files.length,
    });
    // The snapshot alone, after an explicit checkpoint: hard links, hashes, manifest, fsyncs.
    const a = await onCopy(`${incremental}-alone`, async (s) => {
      await s.checkpoint();
      return timed(() => s.snapshot({ incremental }));
    });
    results.push({
      case: `${incremental ? 'incremental' : 'full'} snapshot (after a checkpoint)`,
      ms: a.ms,
      bytes: a.value.bytes,
      files: a.value.files.length,
    });
  }
  // Peer: a plain recursive copy of the store directory.
  const peer = await onCopy('peer', async (_s, dir) => {
    const to = join(ROOT, 'snap-peer-copy');
    rmSync(to, { recursive: true, force: true });
    const t = await timed(() => cpSync(join(dir, 'data'), join(to, 'data'), { recursive: true }));
    const bytes = duBytes(to);
    rmSync(to, { recursive: true, force: true });
    return { ms: t.ms, bytes };
  });
  results.push({ case: 'peer: cp -r of data/ (a naive full copy)', ms: peer.ms, bytes: peer.bytes, files: '' });
  rmSync(base, { recursive: true, force: true });

  const full = results[0];
  const fullAlone = results[1];
  console.log(`\nsnapshot after a 1% change (${changed} of ${SNAP_ROWS} rows x ${SNAP_DIM}); target: incremental <= 5% of full`);
  console.table(
    results.map((r, i) => {
      const ref = i % 2 === 1 && i < 4 ? fullAlone : full;
      return { case: r.case, ms: ms(r.ms), MB: mb(r.bytes), files: r.files, 'time vs full': pct(r.ms, ref.ms), 'bytes vs full': pct(r.bytes, ref.bytes) };
    }),
  );
}

async function pitrPart() {
  const dir = join(ROOT, 'pitr-src');
  rmSync(dir, { recursive: true, force: true });
  const total = Math.round((PITR_MB * 2 ** 20) / (PITR_DIM * 4));
  const inSnapshot = Math.round(total * 0.9);
  const batch = Math.max(1, Math.floor((4 * 2 ** 20) / (PITR_DIM * 4)));
  console.log(`\npitr: building ${total} x ${PITR_DIM} (${PITR_MB} MB of vectors; ${inSnapshot} in the snapshot, the rest in the WAL)...`);
  const db = await open(dir, { sync: 'none', walSegmentBytes: 64 << 20 });
  const build = await timed(async () => {
    const col = await fill(db, 'v', inSnapshot, PITR_DIM, batch);
    await col.waitForIndex();
  });
  const snap = await timed(() => db.snapshot({ incremental: false }));
  // The last 10% after the snapshot, with a checkpoint halfway so the WAL is part archived.
  const col = db.collection('v');
  let mid;
  for (let i = inSnapshot; i < total; i += batch) {
    await col.upsert(rows(i, Math.min(batch, total - i), PITR_DIM, 0));
    if (mid === undefined && i >= inSnapshot + (total - inSnapshot) / 2) {
      mid = db.lastSeq;
      await db.checkpoint();
    }
  }
  const last = db.lastSeq;
  await db.close();
  const sourceBytes = duBytes(dir);
  console.log(`  built in ${(build.ms / 1000).toFixed(1)} s; snapshot ${ms(snap.ms)} ms; source ${mb(sourceBytes)} MB on disk`);

  const results = [];
  const cases = [
    ['restore at the snapshot (no replay)', { seq: snap.value.seq }],
    ['restore halfway through the WAL', { seq: mid }],
    ['restore latest (snapshot + all WAL)', undefined],
  ];
  for (const [name, to] of cases) {
    const target = join(ROOT, 'pitr-target');
    rmSync(target, { recursive: true, force: true });
    const r = await timed(() => restore({ source: dir, target, ...(to ? { to } : {}) }));
    const bytes = duBytes(target);
    const dataBytes = duBytes(join(target, 'data'));
    const opened = await timed(async () => {
      const s = await open(target);
      const n = await s.collection('v').count();
      await s.close();
      return n;
    });
    results.push({
      case: name,
      seq: String(r.value.seq),
      replayed: r.value.replayedRecords,
      rows: opened.value,
      ms: r.ms,
      bytes,
      dataBytes,
      openMs: opened.ms,
    });
    if (to === undefined && r.value.seq !== last) throw new Error(`latest restore reached seq ${r.value.seq}, expected ${last}`);
    rmSync(target, { recursive: true, force: true });
  }
  const peerTarget = join(ROOT, 'pitr-peer');
  rmSync(peerTarget, { recursive: true, force: true });
  const peer = await timed(() => cpSync(dir, peerTarget, { recursive: true }));
  const peerBytes = duBytes(peerTarget);
  results.push({
    case: 'peer: cp -r of the source',
    seq: '',
    replayed: '',
    rows: '',
    ms: peer.ms,
    bytes: peerBytes,
    dataBytes: duBytes(join(peerTarget, 'data')),
    openMs: 0,
  });
  rmSync(peerTarget, { recursive: true, force: true });
  if (!process.env.KEEP_DATA) rmSync(dir, { recursive: true, force: true });

  console.log(`\npoint-in-time restore of a ${mb(sourceBytes)} MB store (${total} x ${PITR_DIM})`);
  console.table(
    results.map((r) => ({
      case: r.case,
      seq: r.seq,
      'WAL records replayed': r.replayed,
      rows: r.rows,
      s: Number((r.ms / 1000).toFixed(2)),
      'MB written': mb(r.bytes),
      'data/ MB': mb(r.dataBytes),
      'data/ MB/s': Number((r.dataBytes / 2 ** 20 / (r.ms / 1000)).toFixed(0)),
      'vs cp -r': `${(r.ms / peer.ms).toFixed(2)}x`,
      'open after (ms)': ms(r.openMs),
    })),
  );
}

mkdirSync(ROOT, { recursive: true });
if (want('snapshot')) await snapshotPart();
if (want('pitr')) await pitrPart();
