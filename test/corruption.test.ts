// Damaged files: a bit flip anywhere is reported with its file and offset and never turns into a
// wrong value; skip-corrupt opens and lists what it lost; a torn tail is truncated (and
// reported) by default and refused by absolute-consistency; a lost tail after a clean close is
// corruption, not a torn write.
import { cpSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';

import { type Collection, open, type RecoveryMode, type Store, scrub } from 'cairndb';
import { describe, expect, test } from 'vitest';
import { expectModel } from './expect-model.js';
import { metadataFor, prng, vectorFor } from './fixtures/records.mjs';
import { rejectsWith, segRecords, storeChild, tempDir, walRecords, walSegments } from './helpers.js';

const SEGMENT_BYTES = 65536;
const DIM = 8;

type Effects = Array<[id: string, version: string | null]>;

/** Every committed write with its sequence number, so the expected state after losing any set
 *  of sequence numbers can be recomputed. */
class History {
  readonly entries: Array<{ seq: bigint; effects: Effects }> = [];
  readonly ids = new Set<string>();

  add(seq: bigint, effects: Effects): void {
    this.entries.push({ seq, effects });
    for (const [id] of effects) this.ids.add(id);
  }

  async upsert(col: Collection, ids: string[], version: string): Promise<bigint> {
    const { seq } = await col.upsert(ids.map((id) => ({ id, vector: vectorFor(id, version, DIM), metadata: metadataFor(id, version) })));
    this.add(
      seq,
      ids.map((id) => [id, version]),
    );
    return seq;
  }

  async delete(col: Collection, ids: string[]): Promise<bigint> {
    const { seq } = await col.delete(ids);
    this.add(
      seq,
      ids.map((id) => [id, null]),
    );
    return seq;
  }

  /** State with the writes in `lost` (inclusive seq ranges) left out. */
  model(lost: Array<{ fromSeq: bigint; toSeq: bigint | null }> = []): Map<string, string> {
    const m = new Map<string, string>();
    for (const { seq, effects } of this.entries) {
      if (lost.some((r) => seq >= r.fromSeq && (r.toSeq === null || seq <= r.toSeq))) continue;
      for (const [id, v] of effects) v === null ? m.delete(id) : m.set(id, v);
    }
    return m;
  }
}

/**
 * A store with several WAL segments: rounds of overwrites and deletes, each round ended by a
 * clean close (which starts a new segment on the next open) and large enough to roll by size.
 */
async function buildStore(dir: string, rounds = 3, commitsPerRound = 150): Promise<History> {
  const h = new History();
  const rand = prng(42);
  let db = await open(dir, { walSegmentBytes: SEGMENT_BYTES, sync: 'none' });
  await db.createCollection('docs', { dim: DIM, metric: 'l2' });
  h.add(db.lastSeq, []);
  for (let r = 0; r < rounds; r++) {
    const docs = db.collection('docs');
    for (let i = 0; i < commitsPerRound; i++) {
      const ids = [...new Set([0, 1, 2].map(() => `id${Math.floor(rand() * 120)}`))];
      if (i % 7 === 6) await h.delete(docs, ids.slice(0, 1));
      else await h.upsert(docs, ids, `${r}.${i}`);
    }
    await db.close();
    db = await open(dir, { walSegmentBytes: SEGMENT_BYTES, sync: 'none' });
  }
  // One more short round, so the last segment holds records and is not reopened.
  await h.upsert(db.collection('docs'), ['tail-a', 'tail-b'], 'tail');
  await h.upsert(db.collection('docs'), ['tail-c'], 'tail');
  await h.delete(db.collection('docs'), ['tail-b']);
  await db.close();
  return h;
}

const bytes = (v: Float32Array) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);

function flipBit(path: string, offset: number, bit = 4): void {
  const buf = readFileSync(path);
  buf[offset]! ^= 1 << bit;
  writeFileSync(path, buf);
}

const openWith = (dir: string, recovery?: RecoveryMode) => open(dir, { walSegmentBytes: SEGMENT_BYTES, ...(recovery ? { recovery } : {}) });

/** Default and absolute-consistency refuse, naming the file and offset; nothing is served. */
async function expectRefused(dir: string, file: string, offset: number | ((o: number) => boolean)): Promise<void> {
  for (const mode of [undefined, 'absolute-consistency'] as const) {
    const e = await rejectsWith(openWith(dir, mode), 'CAIRN_CORRUPTION');
    expect(e.file, `${mode ?? 'default'}: ${e.message}`).toBe(file);
    if (typeof offset === 'number') expect(e.offset, e.message).toBe(offset);
    else expect(offset(e.offset!), `offset ${e.offset}: ${e.message}`).toBe(true);
    expect(e.message).toContain(basename(file));
  }
}

/** skip-corrupt opens, reports exactly the lost seq, and serves the model without it; the open
 *  makes that state the new base, so the damage is not met again by a default open. */
async function expectSkipped(dir: string, h: History, file: string, offset: number, seq: bigint): Promise<void> {
  const before = h.entries.at(-1)!.seq;
  let db = await openWith(dir, 'skip-corrupt');
  try {
    expect(db.recoveryReport.skipped).toEqual([expect.objectContaining({ file, offset, fromSeq: seq, toSeq: seq })]);
    expect(db.recoveryReport.skipped[0]!.reason).not.toBe('');
    expect(db.lastSeq).toBe(before);
    const model = h.model(db.recoveryReport.skipped);
    await expectModel(db, model, h.ids, DIM);
    await db.close();
    db = await openWith(dir);
    expect(db.recoveryReport.skipped).toEqual([]);
    await expectModel(db, model, h.ids, DIM);
  } finally {
    await db.close();
  }
}

describe('WAL bit flips', () => {
  test('bit_flip_in_sealed_wal_segment_is_corruption_with_file_and_offset', async () => {
    const dir = tempDir();
    const h = await buildStore(dir);
    const segs = walSegments(dir);
    expect(segs.length).toBeGreaterThanOrEqual(4);
    // A sealed segment (not the last), damaged in the middle of one of its records.
    const file = segs.find((s, i) => i < segs.length - 1 && walRecords(readFileSync(s)).length >= 5)!;
    const recs = walRecords(readFileSync(file));
    const victim = recs[Math.floor(recs.length / 2)]!;
    flipBit(file, victim.offset + 24 + 3);
    await expectRefused(dir, file, victim.offset);
    await expectSkipped(dir, h, file, victim.offset, victim.seq);
  });

  test('bit_flip_in_last_record_of_sealed_segment_is_not_a_torn_tail', async () => {
    const dir = tempDir();
    const h = await buildStore(dir);
    const segs = walSegments(dir);
    const file = segs.find((s, i) => i < segs.length - 1 && walRecords(readFileSync(s)).length >= 5)!;
    const victim = walRecords(readFileSync(file)).at(-1)!;
    flipBit(file, victim.offset + victim.len - 3);
    await expectRefused(dir, file, victim.offset);
    await expectSkipped(dir, h, file, victim.offset, victim.seq);
  });

  test('bit_flip_mid_last_segment_with_valid_records_after_is_corruption', async () => {
    const dir = tempDir();
    const h = await buildStore(dir, 2, 100);
    const file = walSegments(dir).at(-1)!;
    const recs = walRecords(readFileSync(file));
    expect(recs.length).toBeGreaterThanOrEqual(3);
    const victim = recs[1]!;
    flipBit(file, victim.offset + 9); // the sequence number field
    await expectRefused(dir, file, victim.offset);
    await expectSkipped(dir, h, file, victim.offset, victim.seq);
  });

  test('bit_flip_mid_last_segment_after_a_crash_is_corruption_not_torn_tail', async () => {
    // No clean close: only the scan can tell damage followed by valid records from a torn write.
    const dir = tempDir();
    const child = storeChild(['hold', dir, 'always', '40']);
    const lines = await child.waitFor((l) => l === 'ready');
    await child.kill();
    const h = new History();
    h.add(1n, []);
    for (const l of lines.filter((x) => x.startsWith('A '))) {
      const [, id, seq] = l.split(' ');
      h.entries.push({ seq: BigInt(seq!), effects: [[id!, 'h']] });
      h.ids.add(id!);
    }
    const file = walSegments(dir).at(-1)!;
    const recs = walRecords(readFileSync(file));
    const victim = recs[Math.floor(recs.length / 2)]!;
    flipBit(file, victim.offset + victim.len - 12);
    // The child wrote version 'h' vectors: check against those.
    const e = await rejectsWith(openWith(dir), 'CAIRN_CORRUPTION');
    expect([e.file, e.offset]).toEqual([file, victim.offset]);
    const db = await openWith(dir, 'skip-corrupt');
    try {
      expect(db.recoveryReport.skipped).toEqual([expect.objectContaining({ file, offset: victim.offset, fromSeq: victim.seq, toSeq: victim.seq })]);
      expect(db.recoveryReport.tornTail).toBeNull();
      const model = h.model(db.recoveryReport.skipped);
      const docs = db.collection('docs');
      for (const id of h.ids) {
        const row = await docs.get(id);
        if (!model.has(id)) expect(row).toBeUndefined();
        else expect(bytes(row!.vector).equals(bytes(vectorFor(id, 'h', DIM)))).toBe(true);
      }
      expect(await docs.count()).toBe(model.size);
    } finally {
      await db.close();
    }
  });

  test('damaged_wal_segment_header_is_corruption', async () => {
    const dir = tempDir();
    await buildStore(dir, 2, 60);
    const file = walSegments(dir)[1]!;
    flipBit(file, 17); // first-seq field of the segment header
    await expectRefused(dir, file, 0);
  });
});

describe('checkpoint file and manifest bit flips', () => {
  /** A store whose state lives in a checkpoint base file plus WAL records after it. */
  async function checkpointed(dir: string): Promise<{ h: History; seg: string }> {
    const h = await buildStore(dir, 1, 120);
    const db = await openWith(dir);
    await db.checkpoint();
    await h.upsert(db.collection('docs'), ['after-1', 'after-2'], 'after');
    await db.close();
    const segs = readdirSync(join(dir, 'data')).filter((n) => n.endsWith('.seg'));
    expect(segs).toHaveLength(1);
    return { h, seg: join(dir, 'data', segs[0]!) };
  }

  /** Offset of a segment record's vector (docs/format.md, "Segment file", version 2). */
  const VECTOR_AT = 32;

  function recordId(buf: Buffer, rec: { offset: number }): string {
    const idLen = buf.readUInt16LE(rec.offset + 16);
    const at = rec.offset + VECTOR_AT + (buf[rec.offset + 4] === 1 ? DIM * 4 : 0);
    return buf.toString('utf8', at, at + idLen);
  }

  test('bit_flip_in_a_checkpoint_vector_is_repaired_from_the_wal_archive', async () => {
    const dir = tempDir();
    const { h, seg } = await checkpointed(dir);
    const buf = readFileSync(seg);
    const recs = segRecords(buf);
    expect(recs.length).toBeGreaterThan(10);
    const victim = recs[Math.floor(recs.length / 2)]!;
    const victimId = recordId(buf, victim);
    expect(h.model().has(victimId)).toBe(true);
    flipBit(seg, victim.offset + VECTOR_AT + 5);
    const damaged = readFileSync(seg);
    // absolute-consistency refuses any damage, naming it.
    const e = await rejectsWith(openWith(dir, 'absolute-consistency'), 'CAIRN_CORRUPTION');
    expect([e.file, e.offset]).toEqual([seg, victim.offset]);

    let db = await openWith(dir);
    try {
      const r = db.recoveryReport;
      expect(r.repairedRecords).toEqual([
        expect.objectContaining({
          collection: 'docs',
          id: victimId,
          file: `data/${basename(seg)}`,
          offset: victim.offset,
          from: expect.stringMatching(/^wal-archive\//),
        }),
      ]);
      expect(r.unreadableRecords).toEqual([]);
      // The damaged bytes are kept, never deleted; the store no longer names them.
      expect(r.quarantined).toHaveLength(1);
      expect(r.quarantined[0]!.file).toBe(`data/${basename(seg)}`);
      expect(readFileSync(join(dir, r.quarantined[0]!.kept)).equals(damaged)).toBe(true);
      await expectModel(db, h.model(), h.ids, DIM);
      await db.close();
      db = await openWith(dir, 'absolute-consistency');
      expect(db.recoveryReport.repairedRecords).toEqual([]);
      await expectModel(db, h.model(), h.ids, DIM);
    } finally {
      await db.close();
    }
  });

  test('an_unrepairable_checkpoint_record_is_unreadable_and_queries_skip_it', async () => {
    const dir = tempDir();
    const { h, seg } = await checkpointed(dir);
    // Retention took the WAL that wrote the checkpointed rows.
    for (const name of readdirSync(join(dir, 'wal-archive'))) rmSync(join(dir, 'wal-archive', name));
    const buf = readFileSync(seg);
    const recs = segRecords(buf).filter((r) => buf[r.offset + 4] === 1);
    const victims = [recs[3]!, recs[recs.length - 2]!];
    const ids = victims.map((v) => recordId(buf, v));
    for (const v of victims) flipBit(seg, v.offset + VECTOR_AT + 9);
    const model = h.model();
    const readable = new Map([...model].filter(([id]) => !ids.includes(id)));

    let db = await openWith(dir);
    try {
      for (let round = 0; round < 2; round++) {
        expect(db.recoveryReport.unreadableRecords.map((u) => u.id).sort()).toEqual([...ids].sort());
        const docs = db.collection('docs');
        expect(await docs.count()).toBe(model.size);
        for (const id of ids) {
          const err = await rejectsWith(docs.get(id), 'CAIRN_CORRUPTION');
          expect(err.message).toContain(`'${id}'`);
        }
        for (const id of [...h.ids].filter((id) => !ids.includes(id))) {
          const row = await docs.get(id);
          const v = readable.get(id);
          if (v === undefined) expect(row).toBeUndefined();
          else expect(row?.vector).toEqual(vectorFor(id, v, DIM));
        }
        // The victim's own vector as the query: it would be the nearest, it is skipped instead.
        const probe = vectorFor(ids[0]!, model.get(ids[0]!)!, DIM);
        for (const exact of [true, false]) {
          const res = await docs.query(probe, { k: 5, exact });
          expect(res.map((x) => x.id)).not.toContain(ids[0]);
          expect(res).toHaveLength(5);
          expect(res.skipped.map((s) => s.id).sort()).toEqual([...ids].sort());
        }
        const [batched] = await docs.queryBatch([probe], { k: 3 });
        expect(batched!.skipped.map((s) => s.id).sort()).toEqual([...ids].sort());
        // The files are sound again (the damaged one is in quarantine); scrub lists the records.
        const scrubbed = await db.scrub({ concurrency: 1 });
        expect(scrubbed.corrupt).toEqual([]);
        expect(scrubbed.unreadableRecords.map((u) => u.id).sort()).toEqual([...ids].sort());
        await db.close();
        // The damage is remembered by the manifest, even by the strictest mode.
        db = await openWith(dir, 'absolute-consistency');
      }
      // Writing or deleting the record ends it.
      const docs = db.collection('docs');
      await h.upsert(docs, [ids[0]!], 'rewritten');
      await h.delete(docs, [ids[1]!]);
      await db.checkpoint();
      await db.close();
      db = await openWith(dir);
      expect(db.recoveryReport.unreadableRecords).toEqual([]);
      await expectModel(db, h.model(), h.ids, DIM);
      expect((await db.collection('docs').query(vectorFor(ids[0]!, 'rewritten', DIM), { k: 1 })).skipped).toEqual([]);
    } finally {
      await db.close();
    }
  });

  test('scrub_of_a_closed_store_reports_a_damaged_record_read_only_and_repairs_it_from_the_wal', async () => {
    for (const archive of ['kept', 'removed'] as const) {
      const dir = tempDir();
      const { h, seg } = await checkpointed(dir);
      if (archive === 'removed') for (const name of readdirSync(join(dir, 'wal-archive'))) rmSync(join(dir, 'wal-archive', name));
      const buf = readFileSync(seg);
      const victim = segRecords(buf).find((r) => buf[r.offset + 4] === 1)!;
      const victimId = recordId(buf, victim);
      flipBit(seg, victim.offset + VECTOR_AT + 2);
      const damaged = readFileSync(seg);
      const rel = `data/${basename(seg)}`;

      const found = await scrub(dir);
      expect(found.corrupt).toEqual([expect.objectContaining({ file: rel, offset: victim.offset, kind: 'checksum', collection: 'docs', id: victimId })]);
      expect(found.repaired).toEqual([]);
      expect(readFileSync(seg).equals(damaged), 'a scrub without repair changes nothing').toBe(true);

      const fixed = await scrub(dir, { repair: true });
      expect(fixed.corrupt).toEqual([expect.objectContaining({ file: rel, offset: victim.offset, id: victimId })]);
      expect(fixed.repaired).toEqual([expect.objectContaining({ file: rel, quarantined: expect.stringMatching(/^quarantine\//) })]);
      expect(fixed.unreadableRecords.map((u) => u.id)).toEqual(archive === 'kept' ? [] : [victimId]);
      expect((await scrub(dir)).corrupt, 'nothing left to find').toEqual([]);
      const db = await openWith(dir, 'absolute-consistency');
      try {
        const model = h.model();
        if (archive === 'kept') await expectModel(db, model, h.ids, DIM);
        else await rejectsWith(db.collection('docs').get(victimId), 'CAIRN_CORRUPTION');
      } finally {
        await db.close();
      }
    }
  });

  test('bit_flip_in_a_record_identity_is_refused_and_skip_corrupt_loses_only_that_row', async () => {
    const dir = tempDir();
    const { h, seg } = await checkpointed(dir);
    const buf = readFileSync(seg);
    const recs = segRecords(buf);
    const victim = recs[Math.floor(recs.length / 2)]!;
    const victimId = recordId(buf, victim);
    flipBit(seg, victim.offset + 9); // the label: which write produced the row is unknown now
    await expectRefused(dir, seg, victim.offset);

    let db = await openWith(dir, 'skip-corrupt');
    try {
      // Not silent: the damaged record is listed with its file and offset.
      expect(db.recoveryReport.badSegmentRecords).toEqual([expect.objectContaining({ file: seg, offset: victim.offset })]);
      const model = h.model();
      model.delete(victimId); // lost, never served with wrong bytes
      await expectModel(db, model, h.ids, DIM);
      await db.close();
      db = await openWith(dir);
      expect(db.recoveryReport.badSegmentRecords).toEqual([]);
      await expectModel(db, model, h.ids, DIM);
    } finally {
      await db.close();
    }
  });

  test('damage_to_a_delta_checkpoint_never_serves_an_older_version', async () => {
    // A delta overrides the base: losing its record for 'id1' would serve the base's older
    // version; losing its delete of 'id2' would bring a deleted row back. With the record's
    // identity intact it is repaired; without it every mode refuses.
    const dir = tempDir();
    const { h } = await checkpointed(dir);
    let db = await openWith(dir);
    const live = [...h.model().keys()].filter((id) => id.startsWith('id'));
    await h.upsert(db.collection('docs'), [live[0]!], 'newer');
    await h.delete(db.collection('docs'), [live[1]!]);
    await db.checkpoint();
    await db.close();
    const segs = readdirSync(join(dir, 'data'))
      .filter((n) => n.endsWith('.seg'))
      .sort();
    expect(segs).toHaveLength(2); // the base and one delta on top of it
    const delta = join(dir, 'data', segs[1]!);
    const recs = segRecords(readFileSync(delta));
    expect(recs).toHaveLength(4); // after-1, after-2 (written after the base), the update, the delete
    const original = readFileSync(delta);
    for (const victim of recs) {
      // Each damage on a fresh copy of the store, so each open meets only its own.
      const work = tempDir();
      cpSync(dir, work, { recursive: true });
      const workDelta = join(work, 'data', segs[1]!);
      flipBit(workDelta, victim.offset + 9); // identity
      await expectRefused(work, workDelta, victim.offset);
      const e = await rejectsWith(openWith(work, 'skip-corrupt'), 'CAIRN_CORRUPTION');
      expect([e.file, e.offset]).toEqual([workDelta, victim.offset]);

      const work2 = tempDir();
      cpSync(dir, work2, { recursive: true });
      flipBit(join(work2, 'data', segs[1]!), victim.offset + victim.len - 12); // id, metadata or padding: identity intact
      db = await openWith(work2);
      try {
        expect(db.recoveryReport.repairedRecords).toEqual([expect.objectContaining({ id: recordId(original, victim), offset: victim.offset })]);
        await expectModel(db, h.model(), h.ids, DIM);
      } finally {
        await db.close();
      }
    }
    db = await openWith(dir, 'absolute-consistency');
    try {
      await expectModel(db, h.model(), h.ids, DIM);
    } finally {
      await db.close();
    }
  });

  test('bit_flip_in_checkpoint_segment_header_or_footer_is_corruption', async () => {
    for (const where of ['header', 'footer'] as const) {
      const dir = tempDir();
      const { seg } = await checkpointed(dir);
      const size = readFileSync(seg).length;
      flipBit(seg, where === 'header' ? 13 : size - 20);
      await expectRefused(dir, seg, (o) => o >= 0 && o < size);
      // The whole file is untrustworthy, so skip-corrupt refuses too rather than guess.
      const e = await rejectsWith(openWith(dir, 'skip-corrupt'), 'CAIRN_CORRUPTION');
      expect(e.file).toBe(seg);
    }
  });

  test('bit_flip_in_manifest_is_repaired_from_its_copy_and_refused_when_both_are_damaged', async () => {
    const dir = tempDir();
    const { h } = await checkpointed(dir);
    const manifest = join(dir, 'MANIFEST');
    const copy = join(dir, 'MANIFEST.copy');
    expect(readFileSync(copy).equals(readFileSync(manifest))).toBe(true);
    const size = readFileSync(manifest).length;
    for (const offset of [3, 40, Math.floor(size / 2), size - 2]) {
      const original = readFileSync(manifest);
      flipBit(manifest, offset, 1);
      const damaged = readFileSync(manifest);
      // absolute-consistency refuses, naming the file.
      const e = await rejectsWith(openWith(dir, 'absolute-consistency'), 'CAIRN_CORRUPTION');
      expect(e.file).toBe(manifest);
      // Both copies damaged: nothing names the files, so every mode refuses.
      const copyBytes = readFileSync(copy);
      flipBit(copy, offset, 1);
      await expectRefused(dir, manifest, (o) => o >= 0 && o < size);
      expect((await rejectsWith(openWith(dir, 'skip-corrupt'), 'CAIRN_CORRUPTION')).file).toBe(manifest);
      writeFileSync(copy, copyBytes);
      // The default mode opens from the intact copy, keeps the damaged bytes and rewrites it.
      const db = await openWith(dir);
      try {
        expect(db.recoveryReport.manifestRestored).toMatch(/MANIFEST/);
        const q = db.recoveryReport.quarantined.find((x) => x.file === 'MANIFEST')!;
        expect(readFileSync(join(dir, q.kept)).equals(damaged)).toBe(true);
        await expectModel(db, h.model(), h.ids, DIM);
      } finally {
        await db.close();
      }
      expect(readFileSync(manifest).equals(original), 'restored: same checkpoint, same clean close').toBe(true);
      const again = await openWith(dir, 'absolute-consistency');
      await again.close();
    }
  });
});

describe('torn tail and lost tail', () => {
  /** A crashed store (SIGKILL, no clean close) whose acknowledged writes are known. */
  async function crashed(dir: string, sync: string): Promise<{ h: History; acked: number }> {
    const child = storeChild(['hold', dir, sync, '60']);
    const lines = await child.waitFor((l) => l === 'ready');
    await child.kill();
    const h = new History();
    for (const l of lines.filter((x) => x.startsWith('A '))) {
      const [, id, seq] = l.split(' ');
      h.entries.push({ seq: BigInt(seq!), effects: [[id!, 'h']] });
      h.ids.add(id!);
    }
    return { h, acked: h.entries.length };
  }

  async function expectHeld(db: Store, h: History, model: Map<string, string>): Promise<void> {
    const docs = db.collection('docs');
    for (const id of h.ids) {
      const row = await docs.get(id);
      if (!model.has(id)) {
        expect(row, id).toBeUndefined();
        continue;
      }
      expect(bytes(row!.vector).equals(bytes(vectorFor(id, 'h', DIM))), id).toBe(true);
      expect(row!.metadata).toEqual(metadataFor(id, 'h'));
    }
    expect(await docs.count()).toBe(model.size);
  }

  test('garbage_after_last_record_is_a_torn_tail_truncated_by_default_refused_by_absolute_consistency', async () => {
    const dir = tempDir();
    const { h } = await crashed(dir, 'none');
    const file = walSegments(dir).at(-1)!;
    const original = readFileSync(file);
    const end = walRecords(original).at(-1)!;
    const tailAt = end.offset + end.len;
    // A half-written record: a plausible header and some bytes, then whatever followed (the
    // preallocated zeros, or the end of a segment that grows by appending).
    const buf = Buffer.concat([original, Buffer.alloc(Math.max(0, tailAt + 100 - original.length))]);
    buf.writeUInt32LE(400, tailAt);
    buf[tailAt + 4] = 1;
    buf.writeBigUInt64LE(end.seq + 1n, tailAt + 8);
    buf.fill(0xab, tailAt + 24, tailAt + 100);
    writeFileSync(file, buf);

    const e = await rejectsWith(openWith(dir, 'absolute-consistency'), 'CAIRN_CORRUPTION');
    expect([e.file, e.offset]).toEqual([file, tailAt]);

    let db = await openWith(dir);
    try {
      expect(db.recoveryReport.tornTail).toEqual({ file, offset: tailAt, bytes: expect.any(Number), unsyncedLost: null });
      expect(db.recoveryReport.tornTail!.bytes).toBeGreaterThan(0);
      expect(db.recoveryReport.skipped).toEqual([]);
      expect(db.lastSeq).toBe(end.seq);
      await expectHeld(db, h, h.model());
      await db.close();
      // The tail was truncated (and synced): the next open finds nothing to repair.
      db = await openWith(dir, 'absolute-consistency');
      expect(db.recoveryReport.tornTail).toBeNull();
      await expectHeld(db, h, h.model());
    } finally {
      await db.close();
    }
  });

  test('record_cut_mid_way_after_a_crash_is_a_torn_tail', async () => {
    const dir = tempDir();
    const { h } = await crashed(dir, 'group');
    const file = walSegments(dir).at(-1)!;
    const last = walRecords(readFileSync(file)).at(-1)!;
    truncateSync(file, last.offset + Math.floor(last.len / 2));

    const e = await rejectsWith(openWith(dir, 'absolute-consistency'), 'CAIRN_CORRUPTION');
    expect([e.file, e.offset]).toEqual([file, last.offset]);
    const db = await openWith(dir);
    try {
      expect(db.recoveryReport.tornTail).toEqual({ file, offset: last.offset, bytes: Math.floor(last.len / 2), unsyncedLost: null });
      expect(db.lastSeq).toBe(last.seq - 1n);
      // The cut record stands for a write that was never acknowledged: only it is missing.
      await expectHeld(db, h, h.model([{ fromSeq: last.seq, toSeq: last.seq }]));
    } finally {
      await db.close();
    }
  });

  for (const cut of ['whole record', 'half a record'] as const) {
    test(`lost_tail_after_clean_close_is_corruption (${cut})`, async () => {
      const dir = tempDir();
      const h = await buildStore(dir, 1, 40);
      const file = walSegments(dir).at(-1)!;
      const last = walRecords(readFileSync(file)).at(-1)!;
      truncateSync(file, cut === 'whole record' ? last.offset : last.offset + Math.floor(last.len / 2));
      // A clean close promised this record; its absence is damage, not a torn write.
      for (const mode of [undefined, 'absolute-consistency'] as const) {
        const e = await rejectsWith(openWith(dir, mode), 'CAIRN_CORRUPTION');
        expect(e.file).toBe(file);
        expect(typeof e.offset).toBe('number');
      }
      const db = await openWith(dir, 'skip-corrupt');
      try {
        expect(db.recoveryReport.skipped).toEqual([expect.objectContaining({ fromSeq: last.seq, toSeq: last.seq })]);
        expect(db.lastSeq).toBe(last.seq - 1n);
        await expectModel(db, h.model(db.recoveryReport.skipped), h.ids, DIM);
      } finally {
        await db.close();
      }
    });
  }
});
