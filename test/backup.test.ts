// BackupManager: round trips of full, incremental and differential backups restored at the
// latest point, a seq and a time, equal to a model, on file:// and on a real S3-compatible
// server (moto, a separate process on loopback); the damage matrix after pg_verifybackup's
// t/003_corruption.pl; SIGKILL halfway through a backup; retention over 40 simulated days;
// cron schedules with an injected clock.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import {
  appendFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { type BackupClock, BackupManager, type BackupMetadata, type Metadata, open, parseCron, type Store } from 'cairndb';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { POOL_MIN_BYTES } from '../packages/cairn/dist/backup/chunk-decoder.js';
import { freePort } from '../packages/cairn/dist/drill/free-port.js';
import { rejectsWith } from './helpers.js';

const ROOT = mkdtempSync(join(tmpdir(), 'cairn-backup-'));
let dirCount = 0;
const newDir = (name: string) => join(ROOT, `${name}-${dirCount++}`);
afterAll(() => rmSync(ROOT, { recursive: true, force: true }));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const CHILD = fileURLToPath(new URL('./fixtures/backup-child.mjs', import.meta.url));
const CLI = fileURLToPath(new URL('../packages/cairn/dist/cli.js', import.meta.url));

// ---------------------------------------------------------------------------------------------
// Model: the state after every commit, and a wall-clock instant at which exactly that state held.

interface Row {
  vector: number[];
  metadata: Metadata;
}
class Model {
  readonly states = new Map<bigint, Map<string, Row>>();
  /** A time after commit `seq` and before the next one started. */
  readonly after = new Map<bigint, number>();
  #rows = new Map<string, Row>();

  commit(seq: bigint, f: (rows: Map<string, Row>) => void): void {
    f(this.#rows);
    this.states.set(seq, new Map(this.#rows));
  }
  at(seq: bigint): Map<string, Row> {
    let best = 0n;
    for (const s of this.states.keys()) if (s <= seq && s > best) best = s;
    return this.states.get(best) ?? new Map();
  }
}

const DIM = 8;
function vec(i: number, v: number): number[] {
  return Array.from({ length: DIM }, (_, k) => Math.fround(Math.sin(i * 31 + v * 7 + k) * 100));
}

/** Upserts (and some deletes) of `n` commits into collection `docs`, recorded in the model. */
async function writeSome(db: Store, model: Model, n: number, tag: number): Promise<void> {
  const c = db.collection('docs');
  for (let i = 0; i < n; i++) {
    const id = `d${(tag * 7 + i) % 40}`;
    if (i % 5 === 4) {
      const { seq } = await c.delete([id]);
      model.commit(seq, (rows) => rows.delete(id));
    } else {
      const row = { vector: vec(i, tag), metadata: { tag, i } };
      const { seq } = await c.upsert([{ id, vector: new Float32Array(row.vector), metadata: row.metadata }]);
      model.commit(seq, (rows) => rows.set(id, row));
    }
    model.after.set(db.lastSeq, Date.now());
    await sleep(2);
  }
}

async function newStore(dir: string, model: Model): Promise<Store> {
  const db = await open(dir);
  const { seq } = await db.batch([{ collection: 'docs', op: 'create', dim: DIM, metric: 'l2' } as never]).catch(async () => {
    await db.createCollection('docs', { dim: DIM, metric: 'l2' });
    return { seq: db.lastSeq };
  });
  model.commit(seq, () => {});
  return db;
}

async function expectEqualsModel(dir: string, want: Map<string, Row>): Promise<void> {
  const db = await open(dir);
  try {
    const c = db.collection('docs');
    expect(await c.count()).toBe(want.size);
    for (const [id, row] of want) {
      const got = await c.get(id);
      expect(got, `row ${id}`).toBeDefined();
      expect(Array.from(got!.vector)).toEqual(row.vector);
      expect(got!.metadata).toEqual(row.metadata);
    }
  } finally {
    await db.close();
  }
}

/** Restore `m` at latest, at a seq inside its range and at a time; each equals the model. */
async function roundTrip(backups: BackupManager, m: BackupMetadata, model: Model): Promise<void> {
  const range = m.range!;
  expect(range).not.toBeNull();
  const latest = newDir('latest');
  const r = await backups.restore(m.id, latest);
  expect(r.seq).toBe(range.to.seq);
  await expectEqualsModel(latest, model.at(range.to.seq));
  const mid = range.from.seq + (range.to.seq - range.from.seq) / 2n;
  const atSeq = newDir('seq');
  expect((await backups.restore(m.id, atSeq, { to: { seq: mid } })).seq).toBe(mid);
  await expectEqualsModel(atSeq, model.at(mid));
  const tSeq = range.to.seq - 1n > range.from.seq ? range.to.seq - 1n : range.to.seq;
  const atTime = newDir('time');
  const rt = await backups.restore(m.id, atTime, { to: { time: model.after.get(tSeq)! } });
  expect(rt.seq).toBe(tSeq);
  await expectEqualsModel(atTime, model.at(tSeq));
}

// ---------------------------------------------------------------------------------------------
// A real S3-compatible server: moto, in its own process on a free loopback port.

interface S3Server {
  endpoint: string;
  bucket(name: string): Promise<string>;
  stop(): Promise<void>;
}

async function startS3(): Promise<S3Server | null> {
  if (spawnSync('python3', ['-c', 'import moto.server'], { stdio: 'ignore' }).status !== 0) {
    // scripts/setup.sh installs it; CI must not pass by skipping the S3 tests.
    if (process.env.CI) throw new Error('moto[server] is not installed: run scripts/setup.sh');
    return null;
  }
  const port = await freePort();
  const proc: ChildProcess = spawn('python3', ['-m', 'moto.server', '-H', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
  // Bounded lifetime: the server never outlives the test file by more than 10 minutes.
  const limit = setTimeout(() => proc.kill('SIGKILL'), 600_000);
  limit.unref();
  const endpoint = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      await fetch(endpoint);
      break;
    } catch {
      if (i > 150) throw new Error('moto_server did not start');
      await sleep(100);
    }
  }
  return {
    endpoint,
    async bucket(name) {
      const r = await fetch(`${endpoint}/${name}`, { method: 'PUT' });
      if (!r.ok) throw new Error(`create bucket ${name}: HTTP ${r.status}`);
      return name;
    },
    async stop() {
      clearTimeout(limit);
      proc.kill('SIGTERM');
      await new Promise((r) => (proc.exitCode !== null ? r(null) : proc.on('exit', r)));
    },
  };
}

let s3: S3Server | null = null;
beforeAll(async () => {
  process.env.AWS_ACCESS_KEY_ID ??= 'test';
  process.env.AWS_SECRET_ACCESS_KEY ??= 'test';
  s3 = await startS3();
});
afterAll(async () => {
  await s3?.stop();
});

// ---------------------------------------------------------------------------------------------

describe.each(['file', 's3'] as const)('round trips on %s://', (kind) => {
  test(`full_incremental_differential_restore_at_latest_seq_and_time_match_model_${kind}`, async (ctx) => {
    if (kind === 's3' && !s3) ctx.skip();
    const target = kind === 'file' ? `file://${newDir('target')}` : `s3://${await s3!.bucket(`cairn-rt-${dirCount++}`)}/some/prefix`;
    const model = new Model();
    const dir = newDir('store');
    const db = await newStore(dir, model);
    const backups = new BackupManager({
      source: dir,
      target,
      retention: { count: 10 },
      compression: { level: 3 },
      ...(s3 ? { s3: { endpoint: s3.endpoint } } : {}),
    });
    try {
      await writeSome(db, model, 12, 1);
      await db.snapshot();
      await writeSome(db, model, 8, 2);
      const full = await backups.create({ kind: 'full' });
      expect(full.status).toBe('completed');
      expect(full.kind).toBe('full');
      await writeSome(db, model, 6, 3);
      await db.snapshot({ incremental: true });
      await writeSome(db, model, 6, 4);
      const inc = await backups.create({ kind: 'incremental' });
      expect(inc.kind).toBe('incremental');
      expect(inc.base).toBe(full.id);
      // Unchanged snapshot files of the base are not read again.
      expect(inc.bytes.read).toBeLessThan(inc.bytes.raw);
      await writeSome(db, model, 6, 5);
      const diff = await backups.create({ kind: 'differential' });
      expect(diff.kind).toBe('differential');
      expect(diff.base).toBe(full.id);
      expect((await backups.list()).map((b) => b.id)).toEqual([full.id, inc.id, diff.id]);
      for (const m of [full, inc, diff]) {
        expect((await backups.verify(m.id)).ok).toBe(true);
        await roundTrip(backups, m, model);
      }
      expect((await backups.status(diff.id)).status).toBe('completed');
    } finally {
      await db.close();
      await backups.close();
    }
  });
});

test('second_full_backup_after_small_change_stores_only_new_chunks', async () => {
  const model = new Model();
  const dir = newDir('store');
  const db = await newStore(dir, model);
  await writeSome(db, model, 30, 1);
  await db.close();
  const backups = new BackupManager({ source: dir, target: `file://${newDir('target')}` });
  const a = await backups.create({ kind: 'full' });
  const b = await backups.create({ kind: 'full' });
  expect(a.chunks.written).toBeGreaterThan(0);
  expect(b.chunks.written).toBe(0);
  expect(b.bytes.written).toBe(0);
  expect(b.bytes.read).toBe(a.bytes.read);
});

test('exclude_wal_restores_the_snapshot_only_and_encrypted_chunks_hold_no_plaintext', async () => {
  const model = new Model();
  const dir = newDir('store');
  const db = await newStore(dir, model);
  await writeSome(db, model, 6, 1);
  const snap = await db.snapshot();
  await writeSome(db, model, 6, 2);
  await db.close();
  const root = newDir('target');
  const key = 'ab'.repeat(32);
  const backups = new BackupManager({ source: dir, target: `file://${root}`, exclude: ['wal'], encryption: { key } });
  const m = await backups.create();
  expect(m.range!.to.seq).toBe(snap.seq);
  expect(m.encryption!.algorithm).toBe('aes-256-gcm');
  await rejectsWith(backups.restore(m.id, newDir('late'), { to: { seq: snap.seq + 1n } }), 'CAIRN_INVALID_ARGUMENT');
  const out = newDir('out');
  expect((await backups.restore(m.id, out)).seq).toBe(snap.seq);
  await expectEqualsModel(out, model.at(snap.seq));
  // Metadata strings written by writeSome must not appear in any stored chunk.
  for (const n of readdirSync(join(root, 'chunks'))) expect(readFileSync(join(root, 'chunks', n)).includes('"tag"')).toBe(false);
});

test('one_failing_target_does_not_fail_the_others', async () => {
  const model = new Model();
  const dir = newDir('store');
  const db = await newStore(dir, model);
  await writeSome(db, model, 5, 1);
  await db.close();
  const blocker = newDir('not-a-dir');
  writeFileSync(blocker, 'x');
  const good = `file://${newDir('good')}`;
  const backups = new BackupManager({ source: dir, target: [good, `file://${blocker}/sub`] });
  const m = await backups.create();
  expect(m.targets.map((t) => t.ok)).toEqual([true, false]);
  expect(m.targets[1]!.metadata.status).toBe('failed');
  expect(m.target).toBe(good);
  const out = newDir('out');
  await backups.restore(m.id, out);
  await expectEqualsModel(out, model.at(db.lastSeq));
  const alone = new BackupManager({ source: dir, target: `file://${blocker}/sub` });
  await rejectsWith(alone.create(), 'CAIRN_IO');
});

// ---------------------------------------------------------------------------------------------
// Damage, after pg_verifybackup's t/003_corruption.pl: each is found by verify with its own
// message, and restore refuses and writes nothing.

describe('damage matrix', () => {
  const KEY = Buffer.alloc(32, 7);
  let pristine: string;
  let encrypted: string;
  let source: string;
  let id: string;
  let model: Model;

  beforeAll(async () => {
    model = new Model();
    source = newDir('store');
    const db = await newStore(source, model);
    await writeSome(db, model, 20, 1);
    await db.snapshot();
    await writeSome(db, model, 5, 2);
    await db.close();
    pristine = newDir('pristine');
    encrypted = newDir('encrypted');
    id = 'b1';
    await new BackupManager({ source, target: `file://${pristine}` }).create({ id });
    await new BackupManager({ source, target: `file://${encrypted}`, encryption: { key: KEY } }).create({ id });
  });

  function chunkFiles(root: string): string[] {
    return readdirSync(join(root, 'chunks')).map((n) => join(root, 'chunks', n));
  }
  /** The largest chunk: a snapshot data file, which every restore needs. */
  function bigChunk(root: string): string {
    return chunkFiles(root).sort((a, b) => statSync(b).size - statSync(a).size)[0]!;
  }

  const cases: Array<{ name: string; damage: (root: string) => void; kind: string; message: RegExp; code: string; key?: Buffer }> = [
    {
      name: 'extra_file',
      damage: (root) => writeFileSync(join(root, 'backups', id, 'extra_file'), 'x'),
      kind: 'extra',
      message: /unexpected file 'backups\/b1\/extra_file'/,
      code: 'CAIRN_CORRUPTION',
    },
    {
      name: 'missing_chunk',
      damage: (root) => unlinkSync(bigChunk(root)),
      kind: 'missing',
      message: /chunk [0-9a-f]{64} \(of '.+'\) is missing/,
      code: 'CAIRN_CORRUPTION',
    },
    {
      name: 'chunk_one_byte_longer',
      damage: (root) => appendFileSync(bigChunk(root), Buffer.from([0])),
      kind: 'longer',
      message: /is 1 byte\(s\) longer than its header says/,
      code: 'CAIRN_CORRUPTION',
    },
    {
      name: 'truncated_chunk',
      damage: (root) => {
        const f = bigChunk(root);
        truncateSync(f, statSync(f).size - 10);
      },
      kind: 'truncated',
      message: /is truncated: \d+ of \d+ bytes/,
      code: 'CAIRN_CORRUPTION',
    },
    {
      name: 'same_size_overwrite',
      damage: (root) => {
        const f = bigChunk(root);
        const b = readFileSync(f);
        for (let i = 60; i < b.length - 4; i += 9) b[i] ^= 0x5a;
        writeFileSync(f, b);
      },
      kind: 'content',
      message: /content does not match its SHA-256/,
      code: 'CAIRN_CORRUPTION',
    },
    {
      name: 'damaged_manifest',
      damage: (root) => {
        const f = join(root, 'backups', id, 'MANIFEST');
        const b = readFileSync(f);
        b[40] ^= 1;
        writeFileSync(f, b);
      },
      kind: 'manifest',
      message: /manifest .* is damaged: body fails its SHA-256 checksum/,
      code: 'CAIRN_CORRUPTION',
    },
  ];

  test.each(cases)('$name is detected by verify and restore refuses', async ({ damage, kind, message, code }) => {
    const root = newDir('damaged');
    cpSync(pristine, root, { recursive: true });
    const backups = new BackupManager({ source, target: `file://${root}` });
    expect((await backups.verify(id)).ok).toBe(true);
    damage(root);
    const report = await backups.verify(id);
    expect(report.ok).toBe(false);
    expect(report.problems.map((p) => p.kind)).toContain(kind);
    expect(report.problems.find((p) => p.kind === kind)!.message).toMatch(message);
    const out = newDir('out');
    const e = await rejectsWith(backups.restore(id, out), code);
    expect(e.message).toMatch(message);
    expect(existsSync(out)).toBe(false);
    expect(readdirSync(ROOT).filter((n) => n.includes('cairn-backup-'))).toEqual([]);
  });

  test('wrong_key is detected by verify and restore refuses', async () => {
    const right = new BackupManager({ source, target: `file://${encrypted}`, encryption: { key: KEY } });
    expect((await right.verify(id)).ok).toBe(true);
    const wrong = new BackupManager({ source, target: `file://${encrypted}`, encryption: { key: Buffer.alloc(32, 8) } });
    const report = await wrong.verify(id);
    expect(report.problems.map((p) => p.kind)).toEqual(['key']);
    expect(report.problems[0]!.message).toMatch(/wrong encryption key for backup 'b1'/);
    const out = newDir('out');
    const e = await rejectsWith(wrong.restore(id, out), 'CAIRN_INVALID_ARGUMENT');
    expect(e.message).toMatch(/wrong encryption key/);
    expect(existsSync(out)).toBe(false);
    const none = new BackupManager({ source, target: `file://${encrypted}` });
    expect((await none.verify(id)).problems[0]!.message).toMatch(/is encrypted .*options\.encryption\.key is required/);
    // The right key restores, and the chunks hold no plaintext names.
    const good = newDir('good');
    await right.restore(id, good);
    await expectEqualsModel(good, model.at(model.states.size > 0 ? [...model.states.keys()].at(-1)! : 0n));
  });

  test('restore_never_overwrites_a_non_empty_directory', async () => {
    const backups = new BackupManager({ source, target: `file://${pristine}` });
    const out = newDir('busy');
    mkdirSync(out);
    writeFileSync(join(out, 'keep-me'), 'x');
    await rejectsWith(backups.restore(id, out), 'CAIRN_INVALID_ARGUMENT');
    expect(readdirSync(out)).toEqual(['keep-me']);
  });

  test('bad_options_name_the_field', () => {
    const t = `file://${pristine}`;
    const bad: Array<[object, RegExp]> = [
      [{ source, target: t, retention: { days: 0 } }, /options\.retention\.days/],
      [{ source, target: t, retention: { count: 1.5 } }, /options\.retention\.count/],
      [{ source, target: t, compression: { level: 30 } }, /options\.compression\.level/],
      [{ source, target: t, encryption: { key: Buffer.alloc(16) } }, /options\.encryption\.key must be exactly 32 bytes/],
      [{ source, target: 'ftp://x/y' }, /options\.target has an unsupported scheme/],
      [{ source, target: [t, 'nope'] }, /options\.target\[1\]/],
      [{ source, target: t, exclude: ['data'] }, /options\.exclude\[0\]/],
      [{ source, target: t, colour: 1 }, /options\.colour is not a known option/],
      [{ target: t }, /options\.source/],
    ];
    for (const [o, m] of bad) {
      let err: unknown;
      try {
        new BackupManager(o as never);
      } catch (e) {
        err = e;
      }
      expect((err as { code?: string })?.code, String(m)).toBe('CAIRN_INVALID_ARGUMENT');
      expect((err as Error).message).toMatch(m);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// A backup large enough to decode on worker threads: the same checks hold there, the keys of
// an encrypted backup reach the workers, and damage is reported with the same kinds.

describe('damage on worker threads', () => {
  const KEY = Buffer.alloc(32, 9);
  const BULK_DIM = 1024;
  const BULK_ROWS = 5000;
  const bulkVec = (i: number) => Float32Array.from({ length: BULK_DIM }, (_, k) => Math.sin(i * 1.618 + k * Math.SQRT1_2) * 1000);
  let source: string;
  let plain: string;
  let encrypted: string;
  let model: Model;
  const id = 'big';

  beforeAll(async () => {
    model = new Model();
    source = newDir('bulk-store');
    const db = await newStore(source, model);
    await writeSome(db, model, 10, 3);
    const bulk = await db.createCollection('bulk', { dim: BULK_DIM, metric: 'l2' });
    for (let b = 0; b < BULK_ROWS; b += 500) {
      await bulk.upsert(Array.from({ length: 500 }, (_, k) => ({ id: `b${b + k}`, vector: bulkVec(b + k) })));
    }
    await db.close();
    plain = newDir('bulk-plain');
    encrypted = newDir('bulk-encrypted');
    const made = await new BackupManager({ source, target: `file://${plain}` }).create({ id });
    // The pool decodes only backups of at least POOL_MIN_BYTES: this one must be one.
    expect(made.bytes.raw).toBeGreaterThanOrEqual(POOL_MIN_BYTES);
    await new BackupManager({ source, target: `file://${encrypted}`, encryption: { key: KEY } }).create({ id });
  });

  async function expectRestored(dir: string): Promise<void> {
    await expectEqualsModel(dir, model.at([...model.states.keys()].at(-1)!));
    const db = await open(dir);
    try {
      const bulk = db.collection('bulk');
      expect(await bulk.count()).toBe(BULK_ROWS);
      for (let i = 0; i < BULK_ROWS; i += 97) expect((await bulk.get(`b${i}`))!.vector).toEqual(bulkVec(i));
    } finally {
      await db.close();
    }
  }

  test('plain_and_encrypted_restores_equal_the_model', async () => {
    const a = newDir('bulk-out');
    await new BackupManager({ source, target: `file://${plain}` }).restore(id, a);
    await expectRestored(a);
    const b = newDir('bulk-out');
    await new BackupManager({ source, target: `file://${encrypted}`, encryption: { key: KEY } }).restore(id, b);
    await expectRestored(b);
  });

  const damages: Array<{ name: string; damage: (f: string) => void; kind: string; message: RegExp }> = [
    {
      name: 'bit_flip',
      damage: (f) => {
        const b = readFileSync(f);
        b[b.length >> 1] ^= 0x10;
        writeFileSync(f, b);
      },
      kind: 'content',
      message: /content does not match its SHA-256/,
    },
    { name: 'truncated', damage: (f) => truncateSync(f, statSync(f).size - 10), kind: 'truncated', message: /is truncated: \d+ of \d+ bytes/ },
    { name: 'missing', damage: (f) => unlinkSync(f), kind: 'missing', message: /chunk [0-9a-f]{64} \(of '.+'\) is missing/ },
  ];

  test.each(damages)('$name chunk is found by verify and restore refuses, plain and encrypted', async ({ damage, kind, message }) => {
    for (const [pristine, encryption] of [
      [plain, undefined],
      [encrypted, { key: KEY }],
    ] as const) {
      const root = newDir('bulk-damaged');
      cpSync(pristine, root, { recursive: true });
      const backups = new BackupManager({ source, target: `file://${root}`, ...(encryption ? { encryption } : {}) });
      const chunks = readdirSync(join(root, 'chunks')).map((n) => join(root, 'chunks', n));
      // A chunk in the middle of the bulk data, so chunks before and after it are in flight.
      const big = chunks.filter((f) => statSync(f).size > 1 << 20).sort();
      expect(big.length).toBeGreaterThan(2);
      damage(big[big.length >> 1]!);
      const report = await backups.verify(id);
      expect(report.ok).toBe(false);
      expect(report.problems.map((p) => p.kind)).toEqual([kind]);
      expect(report.problems[0]!.message).toMatch(message);
      const out = newDir('bulk-out');
      const e = await rejectsWith(backups.restore(id, out), 'CAIRN_CORRUPTION');
      expect(e.message).toMatch(message);
      expect(existsSync(out)).toBe(false);
    }
  });
});

// ---------------------------------------------------------------------------------------------

test('backup_killed_halfway_is_not_listed_and_rerun_succeeds', async () => {
  const dir = newDir('store');
  const db = await open(dir);
  const c = await db.createCollection('big', { dim: 2, metric: 'l2' });
  // About 24 MB of barely compressible metadata, so level 19 takes seconds per run.
  let x = 12345;
  const noise = (n: number) => {
    let s = '';
    for (let i = 0; i < n; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      s += String.fromCharCode(48 + (x >>> 26));
    }
    return s;
  };
  for (let b = 0; b < 12; b++) {
    await c.upsert(Array.from({ length: 500 }, (_, i) => ({ id: `r${b}-${i}`, vector: new Float32Array([b, i]), metadata: { blob: noise(4000) } })));
  }
  await db.snapshot();
  await db.close();
  const root = newDir('target');
  const child = spawn(process.execPath, [CHILD, dir, `file://${root}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  // SIGKILL once at least one chunk is durable, before the manifest.
  for (let i = 0; ; i++) {
    const chunks = existsSync(join(root, 'chunks')) ? readdirSync(join(root, 'chunks')).filter((n) => !n.includes('.tmp')) : [];
    if (chunks.length >= 1) break;
    if (i > 600 || out.includes('done')) throw new Error(`child finished or stalled before the kill point: ${out}`);
    await sleep(50);
  }
  child.kill('SIGKILL');
  await new Promise((r) => child.on('close', r));
  expect(out).not.toContain('done');
  expect(existsSync(join(root, 'backups', 'killed-halfway', 'IN_PROGRESS'))).toBe(true);
  expect(existsSync(join(root, 'backups', 'killed-halfway', 'MANIFEST'))).toBe(false);

  const backups = new BackupManager({ source: dir, target: `file://${root}` });
  expect(await backups.list()).toEqual([]);
  const st = await backups.status('killed-halfway');
  expect(st.status).toBe('failed');
  expect(st.error).toMatch(/interrupted/);
  const orphans = readdirSync(join(root, 'chunks')).length;
  expect(orphans).toBeGreaterThan(0);

  const m = await backups.create({ kind: 'full' });
  expect(m.status).toBe('completed');
  // The debris is gone: the dead run's marker and directory; no temp files remain.
  expect(existsSync(join(root, 'backups', 'killed-halfway'))).toBe(false);
  expect(readdirSync(join(root, 'chunks')).filter((n) => n.includes('.tmp'))).toEqual([]);
  expect((await backups.list()).map((b) => b.id)).toEqual([m.id]);
  expect((await backups.verify(m.id)).ok).toBe(true);
  const restored = newDir('restored');
  await backups.restore(m.id, restored);
  const db2 = await open(restored);
  expect(await db2.collection('big').count()).toBe(6000);
  await db2.close();
});

// ---------------------------------------------------------------------------------------------
// An injected clock: time moves only when the test says so; timers fire in order.

class TestClock implements BackupClock {
  #now: number;
  #timers: Array<{ at: number; fn: () => void; id: number }> = [];
  #ids = 0;
  constructor(start: number) {
    this.#now = start;
  }
  now(): number {
    return this.#now;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.#ids;
    this.#timers.push({ at: this.#now + Math.max(0, ms), fn, id });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.#timers = this.#timers.filter((t) => t.id !== handle);
  }
  /** Move to `to`, firing due timers in time order; `settle` runs after each firing. */
  async advanceTo(to: number, settle: () => Promise<void> = async () => {}): Promise<void> {
    for (;;) {
      this.#timers.sort((a, b) => a.at - b.at);
      const t = this.#timers[0];
      if (!t || t.at > to) break;
      this.#timers.shift();
      this.#now = Math.max(this.#now, t.at);
      t.fn();
      await settle();
    }
    this.#now = to;
  }
}

const DAY = 86_400_000;

test('retention_over_40_simulated_days_matches_policy_and_every_kept_backup_restores', async () => {
  const start = new Date(2026, 0, 1, 2, 0).getTime();
  const clock = new TestClock(start);
  const model = new Model();
  const dir = newDir('store');
  const db = await newStore(dir, model);
  const root = newDir('target');
  const backups = new BackupManager({ source: db, target: `file://${root}`, retention: { days: 7, count: 10 }, clock });
  const made: Array<{ id: string; day: number; kind: string; base: string | null }> = [];
  try {
    for (let day = 0; day < 40; day++) {
      await clock.advanceTo(start + day * DAY);
      await writeSome(db, model, 2, day);
      const kind = day % 7 === 0 ? 'full' : day % 7 === 3 ? 'differential' : 'incremental';
      const m = await backups.create({ kind });
      made.push({ id: m.id, day, kind: m.kind, base: m.base });
      await backups.prune();
    }
    // The policy: the newest 10, everything younger than 7 days, and every base they name.
    const now = clock.now();
    const policy = new Set(made.filter((m, i) => i >= made.length - 10 || now - (start + m.day * DAY) < 7 * DAY).map((m) => m.id));
    const byId = new Map(made.map((m) => [m.id, m]));
    for (const id of [...policy]) for (let b = byId.get(id)!.base; b && !policy.has(b); b = byId.get(b)!.base) policy.add(b);
    const listed = await backups.list();
    expect(listed.map((b) => b.id).sort()).toEqual([...policy].sort());
    // The oldest kept is a full backup: kept incrementals and differentials keep their chain.
    expect(listed[0]!.kind).toBe('full');
    // Only chunks of kept backups remain.
    const referenced = new Set<string>();
    for (const b of listed) {
      const body = readFileSync(join(root, 'backups', b.id, 'MANIFEST'));
      const json = JSON.parse(body.subarray(24, body.length - 32).toString()) as { chunks: Record<string, unknown> };
      for (const c of Object.keys(json.chunks)) referenced.add(c);
    }
    expect(readdirSync(join(root, 'chunks')).sort()).toEqual([...referenced].sort());
    for (const b of listed) {
      expect((await backups.verify(b.id)).ok).toBe(true);
      const out = newDir('kept');
      const r = await backups.restore(b.id, out);
      await expectEqualsModel(out, model.at(r.seq));
    }
  } finally {
    await db.close();
  }
});

test('schedule_fires_at_the_right_times_with_an_injected_clock', async () => {
  const start = new Date(2026, 2, 1, 0, 0).getTime();
  const clock = new TestClock(start);
  const model = new Model();
  const dir = newDir('store');
  const db = await newStore(dir, model);
  await writeSome(db, model, 3, 1);
  await db.close();
  const backups = new BackupManager({ source: dir, target: `file://${newDir('target')}`, retention: { count: 100 }, clock });
  const fired: number[] = [];
  // A fired timer starts a backup; wait for it to finish before moving the clock again.
  const settle = async () => {
    for (let i = 0; i < 500 && fired.length < expected; i++) await sleep(10);
  };
  let expected = 0;
  const daily = backups.schedule('0 2 * * *', {
    onBackup: (r) => {
      fired.push(r.timestamp.getTime());
    },
    onError: (e) => {
      throw e;
    },
  });
  expect(daily.next!.getTime()).toBe(new Date(2026, 2, 1, 2, 0).getTime());
  for (let d = 0; d < 3; d++) {
    expected++;
    await clock.advanceTo(start + d * DAY + 23 * 3_600_000, settle);
  }
  daily.stop();
  expect(daily.next).toBeNull();
  expect(fired).toEqual([0, 1, 2].map((d) => new Date(2026, 2, 1 + d, 2, 0).getTime()));
  await clock.advanceTo(start + 5 * DAY);
  expect(fired.length).toBe(3);

  fired.length = 0;
  expected = 0;
  const t0 = clock.now();
  const every = backups.schedule('*/15 * * * *', { kind: 'incremental', onBackup: (r) => fired.push(r.timestamp.getTime()) });
  for (let k = 1; k <= 4; k++) {
    expected++;
    await clock.advanceTo(t0 + k * 15 * 60_000, settle);
  }
  every.stop();
  expect(fired).toEqual([1, 2, 3, 4].map((k) => t0 + k * 15 * 60_000));
});

test('cron_parser_matches_and_rejects_with_field_names', () => {
  const at = (y: number, mo: number, d: number, h: number, mi: number) => new Date(y, mo - 1, d, h, mi).getTime();
  expect(
    parseCron('0 2 * * *')
      .next(new Date(at(2026, 5, 1, 2, 0)))
      .getTime(),
  ).toBe(at(2026, 5, 2, 2, 0));
  expect(
    parseCron('0 2 * * *')
      .next(new Date(at(2026, 5, 1, 1, 59)))
      .getTime(),
  ).toBe(at(2026, 5, 1, 2, 0));
  expect(
    parseCron('*/20 * * * *')
      .next(new Date(at(2026, 5, 1, 10, 41)))
      .getTime(),
  ).toBe(at(2026, 5, 1, 11, 0));
  expect(
    parseCron('30 4 1,15 * *')
      .next(new Date(at(2026, 5, 2, 0, 0)))
      .getTime(),
  ).toBe(at(2026, 5, 15, 4, 30));
  expect(
    parseCron('0 0 * * 7')
      .next(new Date(at(2026, 11, 24, 12, 0)))
      .getDay(),
  ).toBe(0);
  // Vixie cron: day-of-month and day-of-week both restricted match either (the 1st, or a Monday).
  expect(
    parseCron('0 0 1 * 1')
      .next(new Date(at(2026, 5, 2, 0, 0)))
      .getTime(),
  ).toBe(at(2026, 5, 4, 0, 0));
  expect(parseCron('0 0 1 * 1').matches(new Date(at(2026, 6, 1, 0, 0)))).toBe(true);
  expect(parseCron('0 0 1 * 1').matches(new Date(at(2026, 6, 2, 0, 0)))).toBe(false);
  expect(
    parseCron('0 9-17/4 * * 1-5')
      .next(new Date(at(2026, 11, 27, 18, 0)))
      .getTime(),
  ).toBe(at(2026, 11, 30, 9, 0));
  const bad: Array<[string, RegExp]> = [
    ['* * * *', /must have 5 fields/],
    ['60 * * * *', /'60 \* \* \* \*'.*minute: 60/],
    ['0 24 * * *', /hour: 24/],
    ['*/0 * * * *', /illegal stepping: 0/],
    ['0 0 32 * *', /for day/],
    ['0 0 * 13 *', /for month/],
    ['0 0 * * 8', /dayOfWeek: 8/],
    ['5-1 * * * *', /larger than to value/],
    ['a * * * *', /illegal characters/],
    ['0 0 31 2 *', /never matches/],
  ];
  for (const [expr, m] of bad) {
    expect(() => parseCron(expr).next(new Date(0)), expr).toThrow(m);
  }
});

test('cli_s3_backup_prints_nothing_on_stderr', async (ctx) => {
  if (!s3) ctx.skip();
  const model = new Model();
  const dir = newDir('store');
  const db = await newStore(dir, model);
  await writeSome(db, model, 5, 1);
  await db.close();
  const url = `s3://${await s3!.bucket(`cairn-quiet-${dirCount++}`)}/p`;
  // The CLI's own environment, without the SDK's switch: it must not warn on Node 20.
  const env = { ...process.env, CAIRN_S3_ENDPOINT: s3!.endpoint };
  delete env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED;
  for (const args of [
    ['backup', dir, '--to', url],
    ['backups', url],
  ]) {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env, timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
  }
});

test('cli_backup_backups_verify_restore_backup_with_json', async () => {
  const model = new Model();
  const dir = newDir('store');
  const db = await newStore(dir, model);
  await writeSome(db, model, 8, 1);
  await db.snapshot();
  await writeSome(db, model, 4, 2);
  await db.close();
  const url = `file://${newDir('target')}`;
  const cli = (...args: string[]) => {
    const r = spawnSync(process.execPath, [CLI, ...args, '--json'], { encoding: 'utf8' });
    return { code: r.status, out: r.stdout ? JSON.parse(r.stdout) : null, err: r.stderr };
  };
  const made = cli('backup', dir, '--to', url, '--kind', 'full');
  expect(made.code, made.err).toBe(0);
  expect(made.out.status).toBe('completed');
  const listed = cli('backups', url);
  expect(listed.out.map((b: { id: string }) => b.id)).toEqual([made.out.id]);
  const verified = cli('verify', url, made.out.id);
  expect(verified.code).toBe(0);
  expect(verified.out.ok).toBe(true);
  const out = newDir('out');
  const seq = Number(made.out.range.to.seq) - 2;
  const restored = cli('restore-backup', url, made.out.id, out, '--seq', String(seq));
  expect(restored.code, restored.err).toBe(0);
  expect(restored.out.seq).toBe(String(seq));
  await expectEqualsModel(out, model.at(BigInt(seq)));
});
