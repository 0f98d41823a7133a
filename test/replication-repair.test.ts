import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { open } from 'cairndb';
import { describe, expect, it } from 'vitest';

import { metadataFor, vectorFor } from './fixtures/records.mjs';
import { segRecords, tempDir } from './helpers.js';
import { ReplNode, type Reply } from './repl-node.js';

const TOKEN = 'replication-repair-token-0123456789abcdef';
const DIM = 8;
/** A node of this file (its token, 100 ms heartbeats); close() requires an ok reply. */
class NodeProc extends ReplNode {
  constructor(config: Record<string, unknown>) {
    super({ token: TOKEN, heartbeatMs: 100, ...config });
  }

  override async close(): Promise<Reply> {
    const r = await super.close();
    expect(r.ok, `close: ${JSON.stringify(r.error)}`).toBe(true);
    return r;
  }
}

interface Cluster {
  primary: NodeProc;
  replicas: Map<string, NodeProc>;
}

/** n1 primary (dirs[0]) with replicas n2, n3 (and n4 with a fourth dir); each replica waits
 *  until it is connected. */
async function startCluster(dirs: string[], healOnConnect: boolean): Promise<Cluster> {
  const others = ['n2', 'n3', 'n4'].slice(0, dirs.length - 1);
  const primary = new NodeProc({ role: 'primary', dir: dirs[0], nodeId: 'n1', replicas: others, healOnConnect });
  const ready = await primary.line((l) => l.event === 'ready');
  const replicas = new Map<string, NodeProc>();
  for (const [i, id] of others.entries()) {
    const r = new NodeProc({ role: 'replica', dir: dirs[i + 1], nodeId: id, primary: ready.address, healOnConnect });
    await r.line((l) => l.event === 'ready');
    replicas.set(id, r);
  }
  for (const r of replicas.values()) await r.ok('connected');
  return { primary, replicas };
}

async function stopCluster(c: Cluster): Promise<void> {
  for (const r of c.replicas.values()) await r.close();
  await c.primary.close();
}

const ids = Array.from({ length: 60 }, (_, i) => `r${String(i).padStart(2, '0')}`);

/** The reference model: id -> version, as the workload below writes it. */
function model(): Map<string, string> {
  const m = new Map<string, string>();
  for (const id of ids) m.set(id, 'v1');
  for (const id of ids.slice(0, 20)) m.set(id, 'v2');
  for (const id of ids.slice(50)) m.delete(id);
  return m;
}

const record = (id: string, v: string) => ({ id, vector: [...vectorFor(id, v, DIM)], metadata: metadataFor(id, v) });

/**
 * Three stores that replicated the same workload (w: 'all'), each checkpointed and cleanly
 * closed, so every row lives in one checkpoint file per node.
 */
async function seed(): Promise<string[]> {
  const dirs = [tempDir(), tempDir(), tempDir()].map((d) => join(d, 'store'));
  const c = await startCluster(dirs, true);
  await c.primary.ok('create', { name: 'docs', dim: DIM });
  for (let b = 0; b < ids.length; b += 15)
    await c.primary.ok('upsert', { collection: 'docs', records: ids.slice(b, b + 15).map((id) => record(id, 'v1')), w: 'all' });
  await c.primary.ok('upsert', { collection: 'docs', records: ids.slice(0, 20).map((id) => record(id, 'v2')), w: 'all' });
  await c.primary.ok('delete', { collection: 'docs', ids: ids.slice(50), w: 'all' });
  const last = BigInt((await c.primary.ok('status')).lastSeq as string);
  for (const r of c.replicas.values()) await r.ok('waitFor', { seq: String(last) });
  await c.primary.ok('checkpoint');
  for (const r of c.replicas.values()) await r.ok('checkpoint');
  await stopCluster(c);
  return dirs;
}

/** Offset of a checkpoint record's vector (docs/format.md, "Data file"). */
const VECTOR_AT = 32;

/**
 * Flip `bit` of the vector of `id`'s record in the node's one checkpoint file, after removing
 * the archived WAL that wrote it: the open then finds the record damaged with no local source
 * to rebuild it from, and keeps it as unreadable.
 */
function damage(dir: string, id: string, bit: number): void {
  const segs = readdirSync(join(dir, 'data')).filter((n) => n.endsWith('.seg'));
  expect(segs).toHaveLength(1);
  const file = join(dir, 'data', segs[0]!);
  const buf = readFileSync(file);
  const rec = segRecords(buf).find((r) => {
    if (buf[r.offset + 4] !== 1) return false;
    const idLen = buf.readUInt16LE(r.offset + 16);
    const at = r.offset + VECTOR_AT + DIM * 4;
    return buf.toString('utf8', at, at + idLen) === id;
  });
  expect(rec, `record of ${id}`).toBeDefined();
  buf[rec!.offset + VECTOR_AT + 1 + (bit % 8) * 3]! ^= 1 << (bit % 8);
  writeFileSync(file, buf);
  for (const name of readdirSync(join(dir, 'wal-archive'))) rmSync(join(dir, 'wal-archive', name));
}

/** Every id reads back as the model says, through the node's own `get`. */
async function expectModel(node: NodeProc, m: Map<string, string>, skip: string[] = []): Promise<void> {
  for (const id of ids) {
    if (skip.includes(id)) continue;
    const r = await node.ok('get', { collection: 'docs', recordId: id });
    expect(r.getError, `${id}: ${JSON.stringify(r.getError)}`).toBeUndefined();
    const v = m.get(id);
    if (v === undefined) expect(r.row, `${id} must be absent`).toBeNull();
    else expect(r.row, `${id}`).toEqual({ vector: [...vectorFor(id, v, DIM)], metadata: metadataFor(id, v) });
  }
}

/** Reopened alone with absolute-consistency (which refuses any damage): the repair is on disk. */
async function expectHealedOnDisk(dir: string, m: Map<string, string>, wasDamaged = true): Promise<void> {
  const db = await open(dir, { recovery: 'absolute-consistency' });
  try {
    expect(db.recoveryReport.unreadableRecords).toEqual([]);
    const docs = db.collection('docs');
    expect(await docs.count()).toBe(m.size);
    for (const [id, v] of m) {
      const row = await docs.get(id);
      expect([...row!.vector]).toEqual([...vectorFor(id, v, DIM)]);
      expect(row!.metadata).toEqual(metadataFor(id, v));
    }
    // The damaged bytes are kept, never deleted.
    expect(existsSync(join(dir, 'quarantine'))).toBe(wasDamaged);
  } finally {
    await db.close();
  }
}

describe('repair from replicas', () => {
  it('get_read_repairs_a_damaged_record_on_the_primary_and_the_file_is_healed_after_reopen', async () => {
    const dirs = await seed();
    const m = model();
    const victim = 'r05';
    damage(dirs[0]!, victim, 3);

    // Alone, the primary has no healthy copy: the read fails with the damage named.
    const alone = new NodeProc({ role: 'primary', dir: dirs[0], nodeId: 'n1', replicas: ['n2', 'n3'], healOnConnect: false });
    await alone.line((l) => l.event === 'ready');
    const rec = (await alone.ok('recovery')).report as { unreadableRecords: Array<{ id: string }> };
    expect(rec.unreadableRecords.map((u) => u.id)).toEqual([victim]);
    const failed = await alone.ok('get', { collection: 'docs', recordId: victim });
    expect(failed.getError).toMatchObject({ code: 'CAIRN_CORRUPTION' });
    expect((failed.getError as { message: string }).message).toContain('no other node has a verified copy');
    await alone.close();

    const c = await startCluster(dirs, false);
    const got = await c.primary.ok('get', { collection: 'docs', recordId: victim });
    expect(got.getError).toBeUndefined();
    expect(got.row).toEqual({ vector: [...vectorFor(victim, 'v2', DIM)], metadata: metadataFor(victim, 'v2') });
    await expectModel(c.primary, m);
    for (const r of c.replicas.values()) await expectModel(r, m);
    await stopCluster(c);
    await expectHealedOnDisk(dirs[0]!, m);
  }, 120_000);

  it('scrub_on_a_replica_repairs_from_the_primary_and_the_other_replica', async () => {
    const dirs = await seed();
    const m = model();
    const victim = 'r33';
    damage(dirs[1]!, victim, 5);
    const c = await startCluster(dirs, false);
    const n2 = c.replicas.get('n2')!;
    const report = (await n2.ok('scrub', { repair: true })).report as {
      repairedRecords?: Array<{ collection: string; id: string; from: string[] }>;
      unreadableRecords: unknown[];
    };
    expect(report.repairedRecords).toEqual([{ collection: 'docs', id: victim, from: ['n1', 'n3'] }]);
    expect(report.unreadableRecords).toEqual([]);
    await expectModel(n2, m);
    await stopCluster(c);
    await expectHealedOnDisk(dirs[1]!, m);
  }, 120_000);

  it('scrub_on_the_primary_repairs_from_the_replicas', async () => {
    const dirs = await seed();
    const m = model();
    const victim = 'r41';
    damage(dirs[0]!, victim, 2);
    const c = await startCluster(dirs, false);
    const report = (await c.primary.ok('scrub', { repair: true })).report as {
      repairedRecords?: Array<{ id: string; from: string[] }>;
      unreadableRecords: unknown[];
    };
    expect(report.repairedRecords).toEqual([{ collection: 'docs', id: victim, from: ['n2', 'n3'] }]);
    expect(report.unreadableRecords).toEqual([]);
    await expectModel(c.primary, m);
    await stopCluster(c);
    await expectHealedOnDisk(dirs[0]!, m);
  }, 120_000);

  it('the_same_record_damaged_differently_on_two_nodes_heals_from_the_one_verified_copy_and_nothing_bad_spreads', async () => {
    const dirs = await seed();
    const m = model();
    const victim = 'r12';
    damage(dirs[0]!, victim, 1);
    damage(dirs[1]!, victim, 6);
    // Repair on connect (the default): each damaged node heals once it has caught up.
    const c = await startCluster(dirs, true);
    // n1 hears n2 'damaged' (no vote) and n3's verified copy: a majority of the verified copies.
    // A pass that ran before n3 caught up fails; n3's catch-up asks for another, which repairs.
    // Polled before any read, so the repair is the heal pass's and not a read-repair's.
    type Heal = { repaired: number; failed: unknown[] } | null | undefined;
    let heal: Heal;
    for (let i = 0; i < 300; i++) {
      heal = ((await c.primary.ok('status')).status as { lastHeal?: Heal }).lastHeal;
      if (heal && heal.failed.length === 0 && heal.repaired >= 1) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(heal).toMatchObject({ repaired: 1, failed: [] });
    await expectModel(c.primary, m);
    await expectModel(c.replicas.get('n2')!, m);
    await expectModel(c.replicas.get('n3')!, m);
    await stopCluster(c);
    for (const [i, d] of dirs.entries()) await expectHealedOnDisk(d, m, i < 2);
  }, 120_000);
});

describe('majority vote', () => {
  /**
   * A diverged node: the same workload written at the same seqs, but with another value for
   * `id` in its last write, checkpointed there, so its copy verifies and still differs.
   */
  async function diverged(dir: string, nodeId: string, id: string): Promise<void> {
    rmSync(dir, { recursive: true, force: true });
    const db = await open(dir, { nodeId });
    try {
      await db.createCollection('docs', { dim: DIM, metric: 'l2' });
      const docs = db.collection('docs');
      for (let b = 0; b < ids.length; b += 15) await docs.upsert(ids.slice(b, b + 15).map((x) => record(x, 'v1')));
      await docs.upsert(ids.slice(0, 20).map((x) => record(x, x === id ? 'forged' : 'v2')));
      await docs.delete(ids.slice(50));
      await db.checkpoint();
    } finally {
      await db.close();
    }
  }

  it('disagreeing_verified_copies_with_no_majority_are_refused_naming_nodes_and_digests', async () => {
    const dirs = await seed();
    const victim = 'r07';
    await diverged(dirs[2]!, 'n3', victim);
    damage(dirs[0]!, victim, 4);
    const c = await startCluster(dirs, false);
    const r = await c.primary.ok('get', { collection: 'docs', recordId: victim });
    expect(r.row).toBeNull();
    const e = r.getError as { code: string; message: string };
    expect(e.code).toBe('CAIRN_CORRUPTION');
    expect(e.message).toMatch(/no majority \(n2=[0-9a-f]{16}, n3=[0-9a-f]{16}\)/);
    expect(e.message).toContain('nothing was installed');
    // Still damaged here, and still refused: nothing was guessed.
    const again = await c.primary.ok('get', { collection: 'docs', recordId: victim });
    expect((again.getError as { code: string }).code).toBe('CAIRN_CORRUPTION');
    // The other rows are untouched and correct.
    await expectModel(c.primary, model(), [victim]);
    await stopCluster(c);
    const db = await open(dirs[0]!);
    try {
      expect(db.recoveryReport.unreadableRecords.map((u) => u.id)).toEqual([victim]);
    } finally {
      await db.close();
    }
  }, 120_000);

  it('a_majority_of_verified_copies_outvotes_a_diverged_one', async () => {
    const dirs = await seed();
    const victim = 'r09';
    // A fourth voter, n4, diverged on the victim; n2 and n3 hold the replicated copy.
    const d4 = join(tempDir(), 'store');
    await diverged(d4, 'n4', victim);
    damage(dirs[0]!, victim, 7);
    const c = await startCluster([...dirs, d4], false);
    const r = await c.primary.ok('get', { collection: 'docs', recordId: victim });
    expect(r.getError).toBeUndefined();
    expect(r.row).toEqual({ vector: [...vectorFor(victim, 'v2', DIM)], metadata: metadataFor(victim, 'v2') });
    await expectModel(c.primary, model());
    // The diverged copy was outvoted, not spread: n4 still serves its own, and nothing else changed.
    const n4 = await c.replicas.get('n4')!.ok('get', { collection: 'docs', recordId: victim });
    expect(n4.row).toEqual({ vector: [...vectorFor(victim, 'forged', DIM)], metadata: metadataFor(victim, 'forged') });
    await stopCluster(c);
    await expectHealedOnDisk(dirs[0]!, model());
  }, 120_000);
});

describe('repair frames and the vote', () => {
  it('repair_frames_round_trip_and_malformed_ones_are_refused', async () => {
    const { decodeRepairRequest, decodeRepairResponse, encodeRepairRequest, encodeRepairResponse } = await import(
      '../packages/cairn/dist/replication/messages.js'
    );
    const req = { requestId: 7, relay: true, label: (5n << 24n) | 2n, collection: 'docs', id: 'r01' };
    expect(decodeRepairRequest(encodeRepairRequest(req))).toEqual(req);
    const record = Buffer.from([1, 2, 3, 4, 5]);
    const res = {
      requestId: 7,
      copies: [
        { nodeId: 'n2', state: 'found' as const, label: 9n, digest: 0xabcn, record, detail: '' },
        { nodeId: 'n3', state: 'unavailable' as const, label: 0n, digest: 0n, record: Buffer.alloc(0), detail: 'not connected' },
      ],
    };
    const bytes = encodeRepairResponse(res);
    expect(decodeRepairResponse(bytes)).toEqual(res);
    // Cut anywhere, or with a trailing byte, an unknown state or relay flag: refused, never half-read.
    for (let cut = 0; cut < bytes.length; cut++) expect(() => decodeRepairResponse(bytes.subarray(0, cut))).toThrow(/too short/);
    expect(() => decodeRepairResponse(Buffer.concat([bytes, Buffer.from([0])]))).toThrow(/trailing/);
    const badState = Buffer.from(bytes);
    badState[8 + 2 + 2] = 9; // the first copy's state, after request id, count and str16 'n2'
    expect(() => decodeRepairResponse(badState)).toThrow(/unknown copy state/);
    const badRelay = encodeRepairRequest(req);
    badRelay[4] = 2;
    expect(() => decodeRepairRequest(badRelay)).toThrow(/relay flag/);
  });

  it('the_vote_takes_a_strict_majority_of_verified_copies_or_nothing', async () => {
    const { majorityVote } = await import('../packages/cairn/dist/replication/vote.js');
    const b = (nodeId: string, digest: string) => ({ nodeId, digest });
    expect(majorityVote([b('n2', 'aa')])).toMatchObject({ outcome: 'majority', digest: 'aa', holders: ['n2'] });
    expect(majorityVote([b('n2', 'aa'), b('n3', 'aa'), b('n4', 'bb')])).toMatchObject({
      outcome: 'majority',
      digest: 'aa',
      holders: ['n2', 'n3'],
      against: [b('n4', 'bb')],
    });
    expect(majorityVote([b('n2', 'aa'), b('n3', 'bb')]).outcome).toBe('none');
    expect(majorityVote([b('n2', 'aa'), b('n3', 'bb'), b('n4', 'cc')]).outcome).toBe('none');
    expect(majorityVote([]).outcome).toBe('none');
  });
});

describe('WAL segments repaired from replicas', () => {
  /** The node's largest archived segment, its bytes, and the byte offsets of its records
   *  (docs/format.md, "WAL segment" and "WAL record"). */
  function archived(dir: string): { rel: string; bytes: Buffer; records: number[] } {
    const names = readdirSync(join(dir, 'wal-archive')).filter((n) => n.endsWith('.wal'));
    expect(names.length, `archived segments in ${dir}`).toBeGreaterThan(0);
    const size = (n: string) => statSync(join(dir, 'wal-archive', n)).size;
    const rel = `wal-archive/${names.sort((a, b) => size(b) - size(a) || (a < b ? -1 : 1))[0]}`;
    const bytes = readFileSync(join(dir, rel));
    const records: number[] = [];
    for (let at = 32; at + 24 <= bytes.length; ) {
      const len = bytes.readUInt32LE(at);
      if (len === 0 && bytes.readBigUInt64LE(at + 8) === 0n) break;
      records.push(at);
      at += 24 + Math.ceil(len / 8) * 8 + 8;
    }
    return { rel, bytes, records };
  }

  /** Flip one bit in the payload of record `i` of the node's archived segment. */
  function damageRecord(dir: string, i: number): { rel: string; good: Buffer; bad: Buffer } {
    const seg = archived(dir);
    expect(seg.records.length).toBeGreaterThan(i);
    const bad = Buffer.from(seg.bytes);
    bad[seg.records[i]! + 24 + 3]! ^= 0x10;
    writeFileSync(join(dir, seg.rel), bad);
    return { rel: seg.rel, good: seg.bytes, bad };
  }

  type Report = { repaired: Array<{ file: string; from: string; quarantined?: string }>; unrepaired: Array<{ file: string; reason: string }> };

  it('damaged_archived_wal_segments_on_two_nodes_are_rebuilt_from_the_others_byte_for_byte', async () => {
    const dirs = await seed();
    const n3Before = archived(dirs[2]!).bytes;
    // Damaged differently on n1 (record 2) and n2 (record 4): each answers 'damaged' for its range.
    const d1 = damageRecord(dirs[0]!, 2);
    const d2 = damageRecord(dirs[1]!, 4);
    const c = await startCluster(dirs, false);

    const r1 = (await c.primary.ok('scrub', { repair: true })).report as Report;
    expect(r1.unrepaired).toEqual([]);
    const fixed1 = r1.repaired.find((x) => x.file === d1.rel);
    expect(fixed1, JSON.stringify(r1.repaired)).toMatchObject({ from: 'replicas' });
    // Rebuilt from n3's records (n2 withheld its damaged range): the original bytes exactly.
    expect(readFileSync(join(dirs[0]!, d1.rel)).equals(d1.good)).toBe(true);
    expect(readFileSync(join(dirs[0]!, fixed1!.quarantined!)).equals(d1.bad)).toBe(true);

    // n2 asks through the primary (relay): n1, repaired meanwhile, and n3 agree.
    const r2 = (await c.replicas.get('n2')!.ok('scrub', { repair: true })).report as Report;
    expect(r2.unrepaired).toEqual([]);
    expect(r2.repaired.find((x) => x.file === d2.rel)).toMatchObject({ from: 'replicas' });
    expect(readFileSync(join(dirs[1]!, d2.rel)).equals(d2.good)).toBe(true);

    // Nothing bad spread: n3 is untouched, and a second scrub everywhere finds nothing.
    expect(archived(dirs[2]!).bytes.equals(n3Before)).toBe(true);
    for (const node of [c.primary, ...c.replicas.values()]) {
      const again = (await node.ok('scrub', { repair: false })).report as { corrupt: unknown[] };
      expect(again.corrupt).toEqual([]);
    }
    await stopCluster(c);
    for (const [i, d] of dirs.entries()) await expectHealedOnDisk(d, model(), i < 2);
  }, 120_000);

  it('a_wal_segment_whose_verified_copies_disagree_is_not_rebuilt', async () => {
    const dirs = await seed();
    // n3 wrote the same seqs with other bytes (its own commit times): its records verify and differ.
    rmSync(dirs[2]!, { recursive: true, force: true });
    const db = await open(dirs[2]!, { nodeId: 'n3' });
    await db.createCollection('docs', { dim: DIM, metric: 'l2' });
    for (let b = 0; b < ids.length; b += 15) await db.collection('docs').upsert(ids.slice(b, b + 15).map((x) => record(x, 'v1')));
    await db.collection('docs').upsert(ids.slice(0, 20).map((x) => record(x, 'v2')));
    await db.collection('docs').delete(ids.slice(50));
    await db.checkpoint();
    await db.close();
    const d1 = damageRecord(dirs[0]!, 1);
    const c = await startCluster(dirs, false);
    const r = (await c.primary.ok('scrub', { repair: true })).report as Report;
    const left = r.unrepaired.find((x) => x.file === d1.rel);
    expect(left?.reason).toMatch(/disagree with no majority \(n2=[0-9a-f]{16}, n3=[0-9a-f]{16}\)/);
    expect(r.repaired.find((x) => x.file === d1.rel)).toBeUndefined();
    // Nothing was installed: the damaged bytes are still there (and kept in quarantine).
    expect(readFileSync(join(dirs[0]!, d1.rel)).equals(d1.bad)).toBe(true);
    await stopCluster(c);
  }, 120_000);
});
