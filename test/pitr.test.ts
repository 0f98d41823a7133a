// Snapshots and point-in-time recovery, checked against a reference model of every committed
// write by sequence number: precision at named markers (after PostgreSQL's
// src/test/recovery/t/003_recovery_targets.pl), a property test, targets outside the range,
// damaged snapshots and archive, restore while another process writes, SIGKILL in the middle
// of a snapshot and of a restore, and the CLI round trip.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  cpSync,
  existsSync,
  type FSWatcher,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  unlinkSync,
  watch,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { listSnapshots, type Metadata, open, restore, type SnapshotInfo, type Store } from 'cairndb';
import fc from 'fast-check';
import { afterAll, afterEach, describe, expect, test } from 'vitest';

import { metadataFor, prng, vectorFor } from './fixtures/records.mjs';
import { rejectsWith, storeChild, walRecords } from './helpers.js';

const CHILD = fileURLToPath(new URL('./fixtures/pitr-child.mjs', import.meta.url));
const CLI = fileURLToPath(new URL('../packages/cairn/dist/cli.js', import.meta.url));
const SEED = Number(process.env.CAIRN_PITR_SEED ?? Date.now() % 1_000_000);

// Everything this file writes lives under one directory, removed after the file.
const ROOT = mkdtempSync(join(tmpdir(), 'cairn-pitr-'));
let dirCount = 0;
function newDir(name: string): string {
  return join(ROOT, `${name}-${dirCount++}`);
}
afterAll(() => rmSync(ROOT, { recursive: true, force: true }));

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Reference model: every commit with its sequence number; the state at any seq is a replay.

type ModelOp =
  | { t: 'create'; name: string; dim: number; metric: string }
  | { t: 'drop'; name: string }
  | { t: 'upsert'; c: string; id: string; vector: Float32Array; metadata: Metadata }
  | { t: 'delete'; c: string; id: string };
interface Row {
  vector: Float32Array;
  metadata: Metadata;
}
type State = Map<string, { dim: number; metric: string; rows: Map<string, Row> }>;

class History {
  readonly commits = new Map<bigint, ModelOp[]>();
  readonly ids = new Map<string, Set<string>>();

  record(seq: bigint, ops: ModelOp[]): void {
    if (this.commits.has(seq)) throw new Error(`seq ${seq} recorded twice`);
    this.commits.set(seq, ops);
    for (const op of ops) {
      if (op.t === 'create' || op.t === 'drop') continue;
      if (!this.ids.has(op.c)) this.ids.set(op.c, new Set());
      this.ids.get(op.c)!.add(op.id);
    }
  }

  get last(): bigint {
    let max = 0n;
    for (const s of this.commits.keys()) if (s > max) max = s;
    return max;
  }

  /** Every seq from 1 through `seq` is known. */
  hasAll(seq: bigint): boolean {
    for (let s = 1n; s <= seq; s++) if (!this.commits.has(s)) return false;
    return true;
  }

  stateAt(seq: bigint): State {
    const state: State = new Map();
    for (let s = 1n; s <= seq; s++) {
      const ops = this.commits.get(s);
      if (!ops) throw new Error(`model has no commit at seq ${s}`);
      for (const op of ops) {
        if (op.t === 'create') state.set(op.name, { dim: op.dim, metric: op.metric, rows: new Map() });
        else if (op.t === 'drop') state.delete(op.name);
        else if (op.t === 'upsert') state.get(op.c)!.rows.set(op.id, { vector: op.vector, metadata: op.metadata });
        else state.get(op.c)!.rows.delete(op.id);
      }
    }
    return state;
  }
}

function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/** sha256 over collections (name, dim, metric) and their rows by sorted id: id, vector bytes,
 *  canonical metadata JSON. */
function stateHash(state: State): string {
  const h = createHash('sha256');
  for (const name of [...state.keys()].sort()) {
    const c = state.get(name)!;
    h.update(`C\0${name}\0${c.dim}\0${c.metric}\0`);
    for (const id of [...c.rows.keys()].sort()) {
      const r = c.rows.get(id)!;
      h.update(`R\0${id}\0`);
      h.update(Buffer.from(r.vector.buffer, r.vector.byteOffset, r.vector.byteLength));
      h.update(`\0${canonical(r.metadata)}\0`);
    }
  }
  return h.digest('hex');
}

/** The store's state, read through every id the history ever wrote; `count()` must agree, so
 *  no row outside the history can hide. */
async function readState(db: Store, history: History): Promise<State> {
  const state: State = new Map();
  for (const info of db.collections()) {
    const col = db.collection(info.name);
    const rows = new Map<string, Row>();
    for (const id of history.ids.get(info.name) ?? []) {
      const r = await col.get(id);
      if (r) rows.set(id, { vector: r.vector, metadata: r.metadata });
    }
    expect(await col.count(), `count of '${info.name}' against the rows found by id`).toBe(rows.size);
    state.set(info.name, { dim: info.dim, metric: info.metric, rows });
  }
  return state;
}

/** Differences, for a readable failure before the hash comparison. */
function diff(actual: State, expected: State): string[] {
  const out: string[] = [];
  for (const name of new Set([...actual.keys(), ...expected.keys()])) {
    const a = actual.get(name);
    const e = expected.get(name);
    if (!a || !e) {
      out.push(`collection ${name}: ${a ? 'unexpected' : 'missing'}`);
      continue;
    }
    for (const id of new Set([...a.rows.keys(), ...e.rows.keys()])) {
      const ra = a.rows.get(id);
      const re = e.rows.get(id);
      if (!ra || !re) out.push(`${name}/${id}: ${ra ? 'unexpected' : 'missing'}`);
      else if (
        !Buffer.from(ra.vector.buffer, ra.vector.byteOffset, ra.vector.byteLength).equals(
          Buffer.from(re.vector.buffer, re.vector.byteOffset, re.vector.byteLength),
        )
      )
        out.push(`${name}/${id}: vector differs`);
      else if (canonical(ra.metadata) !== canonical(re.metadata)) out.push(`${name}/${id}: metadata differs`);
      if (out.length > 10) return out;
    }
  }
  return out;
}

async function expectStoreEquals(db: Store, history: History, seq: bigint, where: string): Promise<State> {
  expect(db.lastSeq, `${where}: lastSeq`).toBe(seq);
  const actual = await readState(db, history);
  const expected = history.stateAt(seq);
  expect(diff(actual, expected), where).toEqual([]);
  expect(stateHash(actual), `${where}: state hash`).toBe(stateHash(expected));
  return actual;
}

/** Open a restored store (as a normal store), compare it with the model at `seq`, close it. */
async function expectRestoredEquals(dir: string, history: History, seq: bigint, where: string): Promise<State> {
  const db = await open(dir);
  try {
    return await expectStoreEquals(db, history, seq, where);
  } finally {
    await db.close();
  }
}

/** Neither the target nor a temporary directory of a restore into it is left. */
function expectNoTarget(target: string, where: string): void {
  expect(existsSync(target), `${where}: target exists`).toBe(false);
  const leftovers = readdirSync(dirname(target)).filter((n) => n.startsWith(`.${basename(target)}.`));
  expect(leftovers, `${where}: leftover temporary directories`).toEqual([]);
}

function rangeInMessage(message: string): [bigint, bigint] {
  const m = /seq (\d+)\.\.(\d+)/.exec(message);
  expect(m, `the message states the recoverable range: ${message}`).not.toBeNull();
  return [BigInt(m![1]!), BigInt(m![2]!)];
}

// Writes that record themselves in the history.
const DIM = 8;
function rec(id: string, version: string, dim = DIM) {
  return { id, vector: vectorFor(id, version, dim) as Float32Array, metadata: metadataFor(id, version) as Metadata };
}
async function createDocs(db: Store, h: History, opts: { dim?: number; metric?: 'l2' | 'cosine'; m?: number; efConstruction?: number } = {}): Promise<void> {
  const dim = opts.dim ?? DIM;
  const metric = opts.metric ?? 'l2';
  await db.createCollection('docs', { dim, metric, ...(opts.m ? { m: opts.m } : {}), ...(opts.efConstruction ? { efConstruction: opts.efConstruction } : {}) });
  h.record(db.lastSeq, [{ t: 'create', name: 'docs', dim, metric }]);
}
async function upsert(db: Store, h: History, ids: string[], version: string, c = 'docs'): Promise<bigint> {
  const dim = db.collection(c).dim;
  const recs = ids.map((id) => rec(id, version, dim));
  const { seq } = await db.collection(c).upsert(recs);
  h.record(
    seq,
    recs.map((r) => ({ t: 'upsert', c, ...r })),
  );
  return seq;
}
async function remove(db: Store, h: History, ids: string[], c = 'docs'): Promise<bigint> {
  const { seq } = await db.collection(c).delete(ids);
  h.record(
    seq,
    ids.map((id) => ({ t: 'delete', c, id })),
  );
  return seq;
}

// ---------------------------------------------------------------------------------------------
// Child processes (test/fixtures/pitr-child.mjs), killed after each test at the latest.

const children: ChildProcess[] = [];
const watchers: FSWatcher[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const w of watchers.splice(0)) w.close();
});

interface Proc {
  proc: ChildProcess;
  lines: string[];
  onLine(cb: (line: string) => void): void;
  waitFor(pred: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  kill(): void;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

function spawnChild(args: string[]): Proc {
  const proc = spawn(process.execPath, [CHILD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(proc);
  const lines: string[] = [];
  const listeners: Array<(line: string) => void> = [];
  let partial = '';
  let stderr = '';
  proc.stdout!.setEncoding('utf8');
  proc.stdout!.on('data', (s: string) => {
    const parts = (partial + s).split('\n');
    partial = parts.pop() ?? '';
    for (const line of parts) {
      lines.push(line);
      for (const l of listeners) l(line);
    }
  });
  proc.stderr!.setEncoding('utf8');
  proc.stderr!.on('data', (s: string) => (stderr += s));
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
    proc.on('close', (code, signal) => {
      done = true;
      resolve({ code, signal, stderr });
      for (const l of listeners) l('');
    }),
  );
  return {
    proc,
    lines,
    onLine: (cb) => listeners.push(cb),
    waitFor(pred, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const found = lines.find(pred);
        if (found !== undefined) return resolve(found);
        const timer = setTimeout(() => reject(new Error(`no expected line from the child within ${timeoutMs} ms; stderr: ${stderr}`)), timeoutMs);
        listeners.push((line) => {
          if (line !== '' && pred(line)) {
            clearTimeout(timer);
            resolve(line);
          } else if (done) {
            clearTimeout(timer);
            reject(new Error(`child exited before the expected line; stderr: ${stderr}`));
          }
        });
      });
    },
    kill: () => proc.kill('SIGKILL'),
    exited,
  };
}

// ---------------------------------------------------------------------------------------------

describe('precision (after PostgreSQL 003_recovery_targets.pl)', () => {
  test('pitr_to_each_marker_by_seq_and_by_time_matches_model', async () => {
    const dir = newDir('precision');
    // Durability is not under test here: 'none' keeps 1,000 single-record commits quick.
    const db = await open(dir, { walSegmentBytes: 16384, sync: 'none' });
    const h = new History();
    await createDocs(db, h);
    interface Marker {
      name: string;
      seq: bigint;
      time: number;
      count: number;
    }
    const markers: Marker[] = [];
    const snaps: SnapshotInfo[] = [];
    // Record seq and commit time; the sleep makes the next commit's time strictly later, so a
    // time target names exactly one record.
    const mark = async (name: string, count: number) => {
      const range = await db.recoverableRange();
      expect(range.to.seq, `marker ${name}: newest recoverable seq`).toBe(db.lastSeq);
      markers.push({ name, seq: db.lastSeq, time: range.to.time.getTime(), count });
      await sleep(5);
    };
    await mark('created', 0);
    const plan = new Map([
      [137, 'm137'],
      [300, 'full'],
      [451, 'm451'],
      [600, 'checkpointed'],
      [700, 'incremental'],
      [822, 'm822'],
      [1000, 'end'],
    ]);
    for (let i = 1; i <= 1000; i++) {
      await upsert(db, h, [`r${i}`], 'v');
      const name = plan.get(i);
      if (!name) continue;
      await mark(name, i);
      const m = markers.at(-1)!;
      if (name === 'full' || name === 'incremental') {
        const s = await db.snapshot({ incremental: name === 'incremental' });
        expect(s.seq, `${name} snapshot seq`).toBe(m.seq);
        expect(s.time.getTime(), `${name} snapshot time`).toBe(m.time);
        snaps.push(s);
      }
      if (name === 'checkpointed') await db.checkpoint();
    }
    const [full, incr] = snaps as [SnapshotInfo, SnapshotInfo];
    expect(full.kind).toBe('full');
    expect(incr).toMatchObject({ kind: 'incremental', base: full.id });
    const fullPaths = new Set(full.files.map((f) => f.path));
    expect(
      incr.files.filter((f) => f.path !== 'MANIFEST' && fullPaths.has(f.path)),
      'an incremental holds only what its base lacks',
    ).toEqual([]);
    expect((await db.snapshots()).map((s) => s.id)).toEqual([full.id, incr.id]);

    // Restore while the store is still open: the source's lock is not taken.
    const out = newDir('precision-out');
    for (const m of markers) {
      const base = [...snaps].reverse().find((s) => s.seq <= m.seq);
      const targets: Array<[string, { seq: bigint } | { time: Date | number }]> = [
        ['seq', { seq: m.seq }],
        ['time', { time: new Date(m.time) }],
      ];
      // A time between this marker's commit and the next one's names the same record.
      if (m.name !== 'end') targets.push(['time+2ms', { time: m.time + 2 }]);
      for (const [how, to] of targets) {
        const where = `marker ${m.name} (seq ${m.seq}) by ${how}`;
        const target = join(out, `${m.name}-${how}`);
        const r = await restore({ source: dir, target, to });
        expect(r.seq, where).toBe(m.seq);
        expect(r.time.getTime(), `${where}: time`).toBe(m.time);
        expect(r.snapshot, `${where}: snapshot used`).toBe(base?.id ?? null);
        expect(r.replayedRecords, `${where}: WAL records replayed`).toBe(Number(m.seq - (base?.seq ?? 0n)));
        const state = await expectRestoredEquals(target, h, m.seq, where);
        expect(state.get('docs')?.rows.size ?? 0, `${where}: count`).toBe(m.count);
        if (m.name === 'created') expect(state.has('docs')).toBe(true);
      }
    }
    // The state before the first record: no collection at all.
    const empty = await restore({ source: dir, target: join(out, 'zero'), to: { seq: 0n } });
    expect(empty.seq).toBe(0n);
    const zero = await expectRestoredEquals(join(out, 'zero'), h, 0n, 'seq 0');
    expect(zero.size).toBe(0);
    // `to` omitted: the newest record.
    const latest = await restore({ source: dir, target: join(out, 'latest') });
    expect(latest.seq).toBe(markers.at(-1)!.seq);
    await expectRestoredEquals(join(out, 'latest'), h, latest.seq, 'latest');
    await db.close();
    // And after a clean close (its MANIFEST records the last seq), two of them once more.
    for (const m of [markers[1]!, markers.at(-2)!]) {
      await restore({ source: dir, target: join(out, `closed-${m.name}`), to: { seq: m.seq } });
      await expectRestoredEquals(join(out, `closed-${m.name}`), h, m.seq, `after close: marker ${m.name}`);
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('property', () => {
  const COLS = [
    { name: 'c0', dim: 4, metric: 'l2' as const },
    { name: 'c1', dim: 3, metric: 'cosine' as const },
  ];
  const IDS = ['a', 'b', 'c', 'd', 'e', 'f', 'ü', 'x y'];
  type Sub = { t: 'upsert'; c: 0 | 1; ids: string[] } | { t: 'delete'; c: 0 | 1; ids: string[] };
  type Step = Sub | { t: 'batch'; ops: Sub[] } | { t: 'snapshot'; incremental: boolean } | { t: 'checkpoint' } | { t: 'reopen' } | { t: 'recreate'; c: 0 | 1 };
  const col = fc.constantFrom<0 | 1>(0, 1);
  const ids = fc.uniqueArray(fc.constantFrom(...IDS), { minLength: 1, maxLength: 4 });
  const sub: fc.Arbitrary<Sub> = fc.oneof(
    fc.record({ t: fc.constant('upsert' as const), c: col, ids }),
    fc.record({ t: fc.constant('delete' as const), c: col, ids }),
  );
  const step: fc.Arbitrary<Step> = fc.oneof(
    { arbitrary: sub, weight: 8 },
    { arbitrary: fc.record({ t: fc.constant('batch' as const), ops: fc.array(sub, { minLength: 1, maxLength: 3 }) }), weight: 3 },
    { arbitrary: fc.record({ t: fc.constant('snapshot' as const), incremental: fc.boolean() }), weight: 3 },
    { arbitrary: fc.constant({ t: 'checkpoint' as const }), weight: 2 },
    { arbitrary: fc.constant({ t: 'reopen' as const }), weight: 1 },
    // Drop and create again: a new collection id, so new file names under a snapshot chain.
    { arbitrary: fc.record({ t: fc.constant('recreate' as const), c: col }), weight: 1 },
  );

  test('pitr_at_a_random_seq_matches_model_with_snapshots_and_checkpoints_between', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 3, maxLength: 30 }), fc.nat(), async (steps, pick) => {
        const dir = newDir(`prop-${run++}`);
        const h = new History();
        let db = await open(dir, { walSegmentBytes: 4096, sync: 'none' });
        try {
          for (const c of COLS) {
            await db.createCollection(c.name, { dim: c.dim, metric: c.metric });
            h.record(db.lastSeq, [{ t: 'create', name: c.name, dim: c.dim, metric: c.metric }]);
          }
          const taken: SnapshotInfo[] = [];
          let n = 0;
          const toOps = (s: Sub, version: string): ModelOp[] =>
            s.ids.map((id) =>
              s.t === 'upsert'
                ? { t: 'upsert' as const, c: COLS[s.c]!.name, ...rec(id, version, COLS[s.c]!.dim) }
                : { t: 'delete' as const, c: COLS[s.c]!.name, id },
            );
          for (const s of steps) {
            const version = `p${n++}`;
            if (s.t === 'upsert' || s.t === 'delete') {
              const c = COLS[s.c]!.name;
              if (s.t === 'upsert') await upsert(db, h, s.ids, version, c);
              else await remove(db, h, s.ids, c);
            } else if (s.t === 'batch') {
              const ops = s.ops.map((o) =>
                o.t === 'upsert'
                  ? { collection: COLS[o.c]!.name, op: 'upsert' as const, records: o.ids.map((id) => rec(id, version, COLS[o.c]!.dim)) }
                  : { collection: COLS[o.c]!.name, op: 'delete' as const, ids: o.ids },
              );
              const { seq } = await db.batch(ops);
              h.record(
                seq,
                s.ops.flatMap((o) => toOps(o, version)),
              );
            } else if (s.t === 'checkpoint') {
              await db.checkpoint();
            } else if (s.t === 'recreate') {
              const c = COLS[s.c]!;
              h.record((await db.dropCollection(c.name)).seq, [{ t: 'drop', name: c.name }]);
              await db.createCollection(c.name, { dim: c.dim, metric: c.metric });
              h.record(db.lastSeq, [{ t: 'create', name: c.name, dim: c.dim, metric: c.metric }]);
            } else if (s.t === 'reopen') {
              await db.close();
              db = await open(dir, { walSegmentBytes: 4096, sync: 'none' });
            } else {
              const kind = s.incremental ? 'incremental' : 'full';
              if (s.incremental && taken.length === 0) {
                await rejectsWith(db.snapshot({ incremental: true }), 'CAIRN_INVALID_ARGUMENT');
              } else if (taken.some((t) => t.seq === db.lastSeq && t.kind === kind)) {
                await rejectsWith(db.snapshot({ incremental: s.incremental }), 'CAIRN_ALREADY_EXISTS');
              } else {
                const info = await db.snapshot({ incremental: s.incremental });
                expect(info.seq).toBe(db.lastSeq);
                if (s.incremental) expect(info.base).toBe(taken.at(-1)!.id);
                taken.push(info);
              }
            }
          }
          expect((await db.snapshots()).map((s) => s.id).sort()).toEqual(taken.map((s) => s.id).sort());
          const range = await db.recoverableRange();
          expect(range.from.seq).toBe(0n);
          expect(range.to.seq).toBe(h.last);
          const seq = BigInt(pick) % (h.last + 1n);
          const r = await restore({ source: dir, target: join(dir, '..', `${basename(dir)}-at`), to: { seq } });
          expect(r.seq).toBe(seq);
          const base = taken
            .filter((t) => t.seq <= seq)
            .sort((a, b) => Number(a.seq - b.seq))
            .at(-1);
          expect(r.replayedRecords).toBe(Number(seq - (base?.seq ?? 0n)));
          await expectRestoredEquals(join(dir, '..', `${basename(dir)}-at`), h, seq, `restore at seq ${seq}`);
          const latest = await restore({ source: dir, target: join(dir, '..', `${basename(dir)}-latest`) });
          expect(latest.seq).toBe(h.last);
          await expectRestoredEquals(join(dir, '..', `${basename(dir)}-latest`), h, h.last, 'restore latest');
        } finally {
          await db.close();
        }
      }),
      { numRuns: 20, seed: SEED, endOnFailure: true },
    );
  });
});

// ---------------------------------------------------------------------------------------------

describe('errors', () => {
  test('target_outside_the_recoverable_range_is_refused_stating_the_range', async () => {
    const dir = newDir('range');
    const h = new History();
    let db = await open(dir, { walSegmentBytes: 8192 });
    await createDocs(db, h);
    for (let i = 0; i < 120; i++) await upsert(db, h, [`a${i}`], 'v');
    const snap = await db.snapshot({ incremental: false });
    await sleep(5);
    const archived = readdirSync(join(dir, 'wal-archive'));
    expect(archived.length, 'the snapshot archived WAL segments').toBeGreaterThan(1);
    for (let i = 0; i < 80; i++) await upsert(db, h, [`b${i}`], 'v');
    // With the WAL from the first record, the range starts at the empty store.
    let range = await db.recoverableRange();
    expect(range.from.seq).toBe(0n);
    expect(range.to.seq).toBe(h.last);
    const tgt = newDir('range-out');
    let e = await rejectsWith(restore({ source: dir, target: tgt, to: { seq: h.last + 1n } }), 'CAIRN_INVALID_ARGUMENT');
    expect(rangeInMessage(e.message)).toEqual([0n, h.last]);
    expectNoTarget(tgt, 'past the newest record');
    await db.close();

    // Archive retention drops the WAL the snapshot covers: the snapshot is now the oldest point.
    for (const name of archived) unlinkSync(join(dir, 'wal-archive', name));
    db = await open(dir, { walSegmentBytes: 8192 });
    range = await db.recoverableRange();
    await db.close();
    expect(range.from.seq).toBe(snap.seq);
    expect(range.from.time.getTime()).toBe(snap.time.getTime());
    expect(range.to.seq).toBe(h.last);
    const outside: Array<[string, { seq: bigint } | { time: Date | number }]> = [
      ['seq before the oldest snapshot', { seq: snap.seq - 1n }],
      ['seq 0', { seq: 0n }],
      ['time before the oldest snapshot', { time: snap.time.getTime() - 1 }],
      ['seq past the newest record', { seq: h.last + 1n }],
      ['time past the newest record', { time: new Date(range.to.time.getTime() + 1000) }],
    ];
    for (const [what, to] of outside) {
      e = await rejectsWith(restore({ source: dir, target: tgt, to }), 'CAIRN_INVALID_ARGUMENT');
      expect(rangeInMessage(e.message), what).toEqual([range.from.seq, range.to.seq]);
      expectNoTarget(tgt, what);
    }
    // The edges themselves restore.
    for (const [what, to, seq] of [
      ['oldest seq', { seq: snap.seq }, snap.seq],
      ['oldest time', { time: snap.time }, snap.seq],
      ['newest seq', { seq: h.last }, h.last],
      ['newest time', { time: range.to.time }, h.last],
    ] as const) {
      const t = newDir('range-edge');
      const r = await restore({ source: dir, target: t, to });
      expect(r.seq, what).toBe(seq);
      await expectRestoredEquals(t, h, seq, what);
    }
  });

  test('non_empty_target_is_refused_and_left_untouched', async () => {
    const dir = newDir('nonempty');
    const h = new History();
    const db = await open(dir);
    await createDocs(db, h);
    await upsert(db, h, ['x', 'y'], 'v');
    await db.close();
    const listing = (p: string) =>
      readdirSync(p, { recursive: true, encoding: 'utf8' })
        .sort()
        .map((n) => {
          const st = statSync(join(p, n));
          return `${n} ${st.isDirectory() ? 'dir' : `${st.size} ${st.mtimeMs} ${readFileSync(join(p, n)).toString('hex')}`}`;
        });

    const parent = newDir('nonempty-parent');
    const target = join(parent, 'target');
    mkdirSync(join(target, 'sub'), { recursive: true });
    writeFileSync(join(target, 'keep.txt'), 'precious');
    writeFileSync(join(target, 'sub', 'x'), 'more');
    const before = listing(target);
    await rejectsWith(restore({ source: dir, target }), 'CAIRN_INVALID_ARGUMENT');
    expect(listing(target)).toEqual(before);
    expect(readdirSync(parent)).toEqual(['target']);

    // A regular file in the target's place is not a directory to restore into either.
    const file = join(parent, 'file');
    writeFileSync(file, 'not a directory');
    await rejectsWith(restore({ source: dir, target: file }), 'CAIRN_INVALID_ARGUMENT');
    expect(readFileSync(file, 'utf8')).toBe('not a directory');
    expect(readdirSync(parent).sort()).toEqual(['file', 'target']);

    // The source itself is a non-empty target.
    const sourceBefore = listing(dir);
    await rejectsWith(restore({ source: dir, target: dir }), 'CAIRN_INVALID_ARGUMENT');
    expect(listing(dir)).toEqual(sourceBefore);

    // An empty directory is fine.
    const empty = join(parent, 'empty');
    mkdirSync(empty);
    await restore({ source: dir, target: empty });
    await expectRestoredEquals(empty, h, h.last, 'into an empty directory');
  });
});

// ---------------------------------------------------------------------------------------------

describe('corruption', () => {
  interface Built {
    dir: string;
    h: History;
    full: SnapshotInfo;
    incr: SnapshotInfo;
    /** seq of the checkpoints that archived WAL after each snapshot. */
    cp1: bigint;
    cp2: bigint;
  }
  let built: Promise<Built> | undefined;
  // One source, built on first use; each test damages its own copy (cpSync copies, so a flip
  // in a hard-linked snapshot file does not reach the live file).
  function source(): Promise<Built> {
    built ??= (async () => {
      const dir = newDir('corrupt-src');
      const h = new History();
      const db = await open(dir, { walSegmentBytes: 8192 });
      await createDocs(db, h);
      const many = async (n: number, p: string) => {
        for (let i = 0; i < n; i++) await upsert(db, h, [`${p}${i}`, `${p}${i}x`], 'v');
        await remove(db, h, [`${p}0`]);
      };
      await many(100, 'a');
      const full = await db.snapshot({ incremental: false });
      await many(100, 'b');
      const cp1 = (await db.checkpoint()).seq;
      await many(60, 'c');
      const incr = await db.snapshot({ incremental: true });
      await many(100, 'd');
      const cp2 = (await db.checkpoint()).seq;
      await many(60, 'e');
      await db.close();
      return { dir, h, full, incr, cp1, cp2 };
    })();
    return built;
  }
  async function damagedCopy(name: string): Promise<Built & { copy: string }> {
    const b = await source();
    const copy = newDir(name);
    cpSync(b.dir, copy, { recursive: true });
    return { ...b, copy };
  }
  function flip(file: string, at: number): void {
    const buf = readFileSync(file);
    buf[at] = buf[at]! ^ 0x10;
    writeFileSync(file, buf);
  }
  async function expectRefused(source: string, to: { seq: bigint } | undefined, file: string, where: string): Promise<void> {
    const target = newDir('corrupt-out');
    const e = await rejectsWith(restore({ source, target, ...(to ? { to } : {}) }), 'CAIRN_CORRUPTION');
    expect(e.message, `${where}: the error names the damaged file`).toContain(file);
    expectNoTarget(target, where);
  }
  async function expectRestores(b: Built & { copy: string }, seq: bigint | undefined, where: string): Promise<void> {
    const target = newDir('corrupt-ok');
    const r = await restore({ source: b.copy, target, ...(seq === undefined ? {} : { to: { seq } }) });
    expect(r.seq, where).toBe(seq ?? b.h.last);
    await expectRestoredEquals(target, b.h, r.seq, where);
  }
  /** Archived segments and the seqs of their records, oldest first. */
  function archive(dir: string): Array<{ path: string; seqs: bigint[]; records: ReturnType<typeof walRecords> }> {
    return readdirSync(join(dir, 'wal-archive'))
      .filter((n) => n.endsWith('.wal'))
      .sort()
      .map((n) => {
        const path = join(dir, 'wal-archive', n);
        const records = walRecords(readFileSync(path));
        return { path, seqs: records.map((r) => r.seq), records };
      });
  }
  function linkedInSnapshots(dir: string, segment: string): boolean {
    return readdirSync(join(dir, 'snapshots')).some((s) => existsSync(join(dir, 'snapshots', s, 'wal', basename(segment))));
  }

  test('damaged_snapshot_data_file_is_refused_naming_the_file', async () => {
    const b = await damagedCopy('corrupt-seg');
    const seg = b.full.files.find((f) => f.path.startsWith('data/') && f.path.endsWith('.seg'))!;
    const file = join(b.copy, 'snapshots', b.full.id, seg.path);
    flip(file, Math.floor(seg.bytes / 2));
    await expectRefused(b.copy, { seq: b.full.seq }, file, 'at the full snapshot');
    await expectRefused(b.copy, { seq: b.full.seq + 5n }, file, 'after the full snapshot');
    await expectRefused(b.copy, { seq: b.incr.seq }, file, 'at the incremental built on it');
    await expectRefused(b.copy, undefined, file, 'latest');
    // A target before the snapshot does not need the file.
    await expectRestores(b, b.full.seq - 1n, 'before the damaged snapshot');
  });

  test('missing_snapshot_data_file_is_refused_naming_the_file', async () => {
    const b = await damagedCopy('corrupt-missing');
    const seg = b.incr.files.find((f) => f.path.startsWith('data/'))!;
    const file = join(b.copy, 'snapshots', b.incr.id, seg.path);
    unlinkSync(file);
    await expectRefused(b.copy, { seq: b.incr.seq }, file, 'incremental with a file gone');
    await expectRestores(b, b.incr.seq - 1n, 'before the incremental');
  });

  test('damaged_snapshot_manifest_is_refused_naming_the_file', async () => {
    const b = await damagedCopy('corrupt-snapshot-manifest');
    const file = join(b.copy, 'snapshots', b.incr.id, 'SNAPSHOT');
    flip(file, Math.floor(statSync(file).size / 2));
    await expectRefused(b.copy, { seq: b.incr.seq }, file, 'bit flip in SNAPSHOT');
    truncateSync(file, 20);
    await expectRefused(b.copy, { seq: b.incr.seq }, file, 'truncated SNAPSHOT');
    unlinkSync(file);
    await expectRefused(b.copy, { seq: b.incr.seq }, file, 'SNAPSHOT gone from a published snapshot');

    // The store's MANIFEST copied into the snapshot is checked against SNAPSHOT too.
    const c = await damagedCopy('corrupt-snapshot-store-manifest');
    const mf = join(c.copy, 'snapshots', c.incr.id, 'MANIFEST');
    flip(mf, Math.floor(statSync(mf).size / 2));
    await expectRefused(c.copy, { seq: c.incr.seq }, mf, 'bit flip in the snapshot MANIFEST');
    await expectRestores(c, c.full.seq + 3n, 'from the full snapshot before it');
  });

  test('damaged_archived_wal_segment_is_refused_when_needed_naming_the_file', async () => {
    const b = await damagedCopy('corrupt-wal');
    // A segment after the incremental snapshot: no snapshot holds a copy of it.
    const seg = archive(b.copy).find((s) => s.seqs[0]! > b.incr.seq + 1n && s.seqs.length >= 4 && !linkedInSnapshots(b.copy, s.path))!;
    expect(seg, 'an archived segment after the incremental').toBeDefined();
    const victim = seg.records[2]!;
    flip(seg.path, victim.offset + victim.len - 12);
    await expectRefused(b.copy, { seq: victim.seq }, seg.path, 'at the damaged record');
    await expectRefused(b.copy, { seq: seg.seqs.at(-1)! }, seg.path, 'at the end of the damaged segment');
    await expectRefused(b.copy, { seq: b.h.last }, seg.path, 'at the newest record');
    // The latest state needs the damaged segment: never quietly restore an older one.
    await expectRefused(b.copy, undefined, seg.path, 'latest');
    // Targets that do not need the damaged record still restore exactly.
    await expectRestores(b, victim.seq - 1n, 'just before the damaged record');
    await expectRestores(b, b.incr.seq, 'at the incremental');
  });

  test('damaged_old_archived_wal_does_not_block_restore_from_a_later_snapshot', async () => {
    const b = await damagedCopy('corrupt-old-wal');
    // A segment before the full snapshot, needed only for targets before it.
    const seg = archive(b.copy).find((s) => s.seqs.length >= 4 && s.seqs.at(-1)! < b.full.seq)!;
    expect(seg, 'an archived segment before the full snapshot').toBeDefined();
    const victim = seg.records[1]!;
    flip(seg.path, victim.offset + victim.len - 12);
    await expectRefused(b.copy, { seq: victim.seq }, seg.path, 'at the damaged record');
    await expectRefused(b.copy, { seq: b.full.seq - 1n }, seg.path, 'just before the full snapshot');
    await expectRestores(b, victim.seq - 1n, 'just before the damaged record');
    await expectRestores(b, b.full.seq, 'at the full snapshot');
    await expectRestores(b, b.cp2 + 3n, 'after the last checkpoint');
    await expectRestores(b, undefined, 'latest');
  });
});

// ---------------------------------------------------------------------------------------------

describe('restore while another process writes', () => {
  test('restore_from_a_store_open_in_another_writing_process_matches_model_and_leaves_its_lock', async () => {
    const dir = newDir('live');
    const child = spawnChild(['write', dir, String(SEED)]);
    const h = new History();
    child.onLine((line) => {
      const m = /^A (\d+) (.*)$/.exec(line);
      if (!m) return;
      const seq = BigInt(m[1]!);
      if (m[2] === 'create') return h.record(seq, [{ t: 'create', name: 'docs', dim: 8, metric: 'l2' }]);
      const effects = JSON.parse(m[2]!) as Array<[string, string | null]>;
      h.record(
        seq,
        effects.map(([id, v]) => (v === null ? { t: 'delete' as const, c: 'docs', id } : { t: 'upsert' as const, c: 'docs', ...rec(id, v) })),
      );
    });
    await child.waitFor((l) => l === 'ready');
    const lockIno = statSync(join(dir, 'LOCK')).ino;
    const waitForAcks = async (seq: bigint) => {
      for (let i = 0; !h.hasAll(seq); i++) {
        if (i > 2000) throw new Error(`acknowledgements up to seq ${seq} never arrived`);
        await sleep(10);
      }
    };
    const rand = prng(SEED);
    for (let i = 0; i < 6; i++) {
      const acked = h.last;
      const target = newDir('live-out');
      const to = i % 2 === 0 ? undefined : { seq: acked - BigInt(Math.floor(rand() * 50)) };
      const r = await restore({ source: dir, target, ...(to ? { to } : {}) });
      if (to) expect(r.seq).toBe(to.seq);
      else expect(r.seq, 'latest includes every write acknowledged before the restore').toBeGreaterThanOrEqual(acked);
      await waitForAcks(r.seq);
      await expectRestoredEquals(target, h, r.seq, `restore ${i} at seq ${r.seq}`);
      await sleep(rand() * 40);
    }
    // The writer never noticed: it holds its lock and goes on acknowledging writes.
    const after = h.commits.size;
    await child.waitFor(() => h.commits.size >= after + 30);
    expect(child.proc.exitCode).toBeNull();
    expect(statSync(join(dir, 'LOCK')).ino).toBe(lockIno);
    const probe = storeChild(['try-open', dir]);
    expect(await probe.waitFor((l) => l.length > 0)).toEqual(['CAIRN_LOCKED']);
    child.kill();
    const { stderr } = await child.exited;
    expect(stderr).toBe('');
    // Snapshots the writer took while its writes went on are consistent at their seq.
    const snaps = (await listSnapshots(dir)).filter((s) => h.hasAll(s.seq));
    expect(snaps.length, 'the writer took snapshots').toBeGreaterThan(0);
    for (const s of snaps.slice(-3)) {
      const target = newDir('live-snap');
      const r = await restore({ source: dir, target, to: { seq: s.seq } });
      expect(r.replayedRecords).toBe(0);
      await expectRestoredEquals(target, h, s.seq, `snapshot ${s.id} taken during writes`);
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('crash', () => {
  const BIG_DIM = 32;
  const BIG_ROWS = 8000;
  interface Big {
    dir: string;
    h: History;
    next: number;
  }
  let big: Promise<Big> | undefined;
  /** A store large enough that a snapshot and a restore take a while. */
  function bigStore(): Promise<Big> {
    big ??= (async () => {
      const dir = newDir('big');
      const h = new History();
      const db = await open(dir, { sync: 'none' });
      await createDocs(db, h, { dim: BIG_DIM, m: 8, efConstruction: 32 });
      for (let i = 0; i < BIG_ROWS; i += 1000)
        await upsert(
          db,
          h,
          Array.from({ length: 1000 }, (_, j) => `r${i + j}`),
          'v0',
        );
      await db.snapshot({ incremental: false });
      await db.close();
      return { dir, h, next: BIG_ROWS };
    })();
    return big;
  }
  /** Names and sizes of every file, to show that a process did not write to the directory. */
  function tree(dir: string): string[] {
    return readdirSync(dir, { recursive: true, encoding: 'utf8' })
      .sort()
      .map((n) => {
        const st = statSync(join(dir, n));
        return `${n} ${st.isDirectory() ? 'dir' : `${st.size} ${st.mtimeMs}`}`;
      });
  }
  /** Kill the child `delay` ms after `go`, or as soon as `watchDir` gets an entry that `when` accepts. */
  async function runAndKill(child: Proc, delay: number, watchDir?: string, when?: (name: string) => boolean) {
    await child.waitFor((l) => l === 'go');
    if (watchDir && when) {
      const w = watch(watchDir, (_event, name) => {
        if (name && when(name.toString())) child.kill();
      });
      watchers.push(w);
      // The entry may have appeared before the watch started.
      if (readdirSync(watchDir).some(when)) child.kill();
    } else {
      setTimeout(() => child.kill(), delay);
    }
    const started = performance.now();
    const result = await child.exited;
    return { ...result, ms: performance.now() - started };
  }

  test('kill_during_snapshot_leaves_source_intact_and_no_half_made_snapshot_listed', async () => {
    const b = await bigStore();
    const rand = prng(SEED + 1);
    const snapshotsDir = join(b.dir, 'snapshots');
    let calibration = 0;
    const outcomes: string[] = [];
    const ATTEMPTS = 5;
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      // Enough new WAL that the snapshot's checkpoint and the graph both have work to do.
      let db = await open(b.dir, { sync: 'none' });
      const version = `v${attempt + 1}`;
      await upsert(
        db,
        b.h,
        Array.from({ length: 1000 }, (_, j) => `r${(attempt * 1000 + j) % BIG_ROWS}`),
        version,
      );
      await upsert(
        db,
        b.h,
        Array.from({ length: 1000 }, (_, j) => `n${b.next + j}`),
        version,
      );
      b.next += 1000;
      await remove(
        db,
        b.h,
        Array.from({ length: 200 }, (_, j) => `r${(attempt * 1000 + 1100 + j) % BIG_ROWS}`),
      );
      const known = new Set((await db.snapshots()).map((s) => s.id));
      await db.close();

      const incremental = attempt % 2 === 1;
      const id = `${String(b.h.last).padStart(20, '0')}-${incremental ? 'incremental' : 'full'}`;
      const child = spawnChild(['snapshot', b.dir, incremental ? '1' : '0']);
      const how = attempt === 0 ? 'none' : attempt % 3 === 0 ? 'on-tmp' : 'random';
      const delay = how === 'random' ? rand() * calibration * 1.1 : 1e9;
      const result = await runAndKill(child, delay, how === 'on-tmp' ? snapshotsDir : undefined, (n) => n.endsWith('.tmp'));
      if (attempt === 0) {
        expect(result.code, result.stderr).toBe(0);
        calibration = result.ms;
      }
      const halfMade = readdirSync(snapshotsDir).filter((n) => n.endsWith('.tmp'));
      outcomes.push(
        `${how}${how === 'random' ? ` ${delay.toFixed(0)}ms` : ''}: ${result.signal ?? `exit ${result.code}`}${halfMade.length ? ', half-made snapshot left' : ''}`,
      );

      db = await open(b.dir, { sync: 'none' });
      try {
        await expectStoreEquals(db, b.h, b.h.last, `attempt ${attempt}: source after the kill`);
        const listed = await db.snapshots();
        for (const s of listed) {
          expect(s.id.endsWith('.tmp')).toBe(false);
          expect(known.has(s.id) || s.id === id, `listed snapshot ${s.id} is one that was taken`).toBe(true);
          for (const f of s.files) expect(statSync(join(snapshotsDir, s.id, f.path)).size, `${s.id}/${f.path}`).toBe(f.bytes);
        }
        // A rerun succeeds (unless the killed one had finished) and tidies the half-made one.
        if (!listed.some((s) => s.id === id)) {
          const again = await db.snapshot({ incremental });
          expect(again.id).toBe(id);
        }
        expect(readdirSync(snapshotsDir).filter((n) => n.endsWith('.tmp'))).toEqual([]);
        expect((await db.snapshots()).map((s) => s.id)).toContain(id);
      } finally {
        await db.close();
      }
      // The snapshot restores the model (no WAL to replay: it is at the newest seq).
      if (attempt < ATTEMPTS - 1 && attempt !== 1) continue;
      const target = newDir('big-restore');
      const r = await restore({ source: b.dir, target, to: { seq: b.h.last } });
      expect(r.snapshot).toBe(id);
      expect(r.replayedRecords).toBe(0);
      await expectRestoredEquals(target, b.h, b.h.last, `attempt ${attempt}: restored from the rerun snapshot`);
      rmSync(target, { recursive: true });
    }
    console.log(`kill during snapshot (seed ${SEED}, calibration ${calibration.toFixed(0)} ms):\n  ${outcomes.join('\n  ')}`);
  });

  test('kill_during_restore_leaves_no_target_and_a_rerun_succeeds', async () => {
    const b = await bigStore();
    const rand = prng(SEED + 2);
    // Some WAL after the newest snapshot, so restores also replay.
    const db = await open(b.dir, { sync: 'none' });
    for (let i = 0; i < 20; i++)
      await upsert(
        db,
        b.h,
        Array.from({ length: 50 }, (_, j) => `r${((i * 50 + j) * 7) % BIG_ROWS}`),
        `late${i}`,
      );
    const range = await db.recoverableRange();
    await db.close();
    const parent = newDir('restore-crash');
    mkdirSync(parent);
    let calibration = 0;
    const outcomes: string[] = [];
    for (let attempt = 0; attempt < 5; attempt++) {
      const name = `t${attempt}`;
      const target = join(parent, name);
      const seq = attempt % 2 === 0 ? b.h.last : range.from.seq + BigInt(Math.floor(rand() * Number(b.h.last - range.from.seq)));
      const before = tree(b.dir);
      const child = spawnChild(['restore', b.dir, target, String(seq)]);
      const how = attempt === 0 ? 'none' : attempt % 2 === 0 ? 'on-tmp' : 'random';
      const delay = how === 'random' ? rand() * calibration * 1.1 : 1e9;
      const result = await runAndKill(child, delay, how === 'on-tmp' ? parent : undefined, (n) => n.startsWith(`.${name}.`));
      if (attempt === 0) {
        expect(result.code, result.stderr).toBe(0);
        calibration = result.ms;
      }
      outcomes.push(`${how}${how === 'random' ? ` ${delay.toFixed(0)}ms` : ''}: ${result.signal ?? `exit ${result.code}`}`);
      expect(tree(b.dir), `attempt ${attempt}: restore wrote nothing into the source`).toEqual(before);
      // A kill that lands after the final rename leaves the finished restore: a target is
      // either absent or complete, never partial.
      if (result.code === 0 || existsSync(target)) {
        await expectRestoredEquals(target, b.h, seq, `attempt ${attempt}: finished before the kill`);
        rmSync(target, { recursive: true });
        continue;
      }
      // The rerun succeeds, and leaves nothing of the killed run behind.
      const r = await restore({ source: b.dir, target, to: { seq } });
      expect(r.seq).toBe(seq);
      expect(
        readdirSync(parent).filter((n) => n.startsWith(`.${name}.`)),
        `attempt ${attempt}: leftovers of the killed restore`,
      ).toEqual([]);
      await expectRestoredEquals(target, b.h, seq, `attempt ${attempt}: rerun`);
      rmSync(target, { recursive: true });
    }
    const src = await open(b.dir);
    await expectStoreEquals(src, b.h, b.h.last, 'source after the killed restores');
    await src.close();
    console.log(`kill during restore (seed ${SEED}, calibration ${calibration.toFixed(0)} ms):\n  ${outcomes.join('\n  ')}`);
  });
});

// ---------------------------------------------------------------------------------------------

describe('cli', () => {
  function cli(args: string[]) {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  test('cli_snapshot_snapshots_restore_round_trip', async () => {
    const dir = newDir('cli');
    const h = new History();
    let db = await open(dir, { walSegmentBytes: 8192 });
    await createDocs(db, h);
    for (let i = 0; i < 40; i++) await upsert(db, h, [`a${i}`], 'v');
    await db.close();

    let r = cli(['snapshot', dir, '--json']);
    expect(r.status, r.stderr).toBe(0);
    const full = JSON.parse(r.stdout);
    expect(full).toMatchObject({ seq: String(h.last), kind: 'full' });
    expect(full.id).toMatch(/-full$/);

    db = await open(dir, { walSegmentBytes: 8192 });
    for (let i = 0; i < 30; i++) await upsert(db, h, [`b${i}`], 'v');
    await remove(db, h, ['a1', 'a2']);
    const mid = await db.recoverableRange();
    await sleep(5);
    for (let i = 0; i < 30; i++) await upsert(db, h, [`a${i}`], 'w');
    await db.close();

    r = cli(['snapshot', dir, '--incremental']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('incremental');
    db = await open(dir);
    for (let i = 0; i < 10; i++) await upsert(db, h, [`c${i}`], 'v');
    await db.close();

    r = cli(['snapshots', dir, '--json']);
    expect(r.status, r.stderr).toBe(0);
    const list = JSON.parse(r.stdout);
    expect(list).toHaveLength(2);
    expect(list[0]).toMatchObject({ id: full.id, seq: full.seq, kind: 'full' });
    expect(list[1]).toMatchObject({ kind: 'incremental', base: full.id });
    expect(BigInt(list[1].seq)).toBe(h.last - 10n);
    expect(list[1].files, '--json lists snapshots without their files').toBeUndefined();
    r = cli(['snapshots', dir]);
    expect(r.stdout.trim().split('\n')).toHaveLength(2);

    const bySeq = newDir('cli-seq');
    r = cli(['restore', dir, bySeq, '--seq', String(mid.to.seq), '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ seq: String(mid.to.seq), snapshot: full.id, replayedRecords: Number(mid.to.seq - BigInt(full.seq)) });
    await expectRestoredEquals(bySeq, h, mid.to.seq, 'cli restore --seq');

    const byTime = newDir('cli-time');
    r = cli(['restore', dir, byTime, '--time', mid.to.time.toISOString(), '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).seq).toBe(String(mid.to.seq));
    await expectRestoredEquals(byTime, h, mid.to.seq, 'cli restore --time');

    const latest = newDir('cli-latest');
    r = cli(['restore', dir, latest]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`seq ${h.last}`);
    await expectRestoredEquals(latest, h, h.last, 'cli restore latest');

    // Errors exit 1 with the code on stderr.
    r = cli(['restore', dir, bySeq, '--seq', '1']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('CAIRN_INVALID_ARGUMENT');
    r = cli(['restore', dir, newDir('cli-past'), '--seq', String(h.last + 1n)]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('CAIRN_INVALID_ARGUMENT');
    expect(rangeInMessage(r.stderr)).toEqual([0n, h.last]);
    // A bad value is a usage error: exit 2.
    r = cli(['restore', dir, newDir('cli-bad'), '--seq', 'x']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--seq');
  });
});
