// The napi binding's contract with the TypeScript layer: typed objects instead of JSON text,
// errors whose fields are real properties, and on-disk formats decoded in Rust only.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { CairnError, listSnapshots, open } from 'cairndb';
import { describe, expect, test } from 'vitest';

import { lastWalRecord } from '../packages/cairn/dist/backup/source.js';
import { fromNative } from '../packages/cairn/dist/errors.js';
import { LAYOUT } from '../packages/cairn/dist/layout.js';
import { nativeModule } from '../packages/cairn/dist/native.js';
import runScrubTask from '../packages/cairn/dist/scrub/worker.js';
import { rejectsWith, tempDir } from './helpers.js';

function flipByte(path: string, offset: number): void {
  const buf = readFileSync(path);
  buf[offset]! ^= 0x10;
  writeFileSync(path, buf);
}

/** A closed store with `batches` single-record commits to collection `docs`. */
async function storeWith(batches: number): Promise<{ dir: string; seqs: bigint[] }> {
  const dir = tempDir();
  const db = await open(dir);
  const docs = await db.createCollection('docs', { dim: 4, metric: 'l2' });
  const seqs: bigint[] = [];
  for (let i = 0; i < batches; i++) seqs.push((await docs.upsert([{ id: `r${i}`, vector: new Float32Array([i, 1, 2, 3]), metadata: { i } }])).seq);
  await db.close();
  return { dir, seqs };
}

/** Every WAL segment of the store, live and archived, by first sequence number. */
function walSegments(dir: string): string[] {
  const out: string[] = [];
  for (const sub of [LAYOUT.wal, LAYOUT.archive]) {
    try {
      for (const n of readdirSync(join(dir, sub))) if (n.endsWith(LAYOUT.walExt)) out.push(join(dir, sub, n));
    } catch {
      // no such directory
    }
  }
  return out.sort((a, b) => (a.split('/').pop()! < b.split('/').pop()! ? -1 : 1));
}

describe('napi binding', () => {
  test('layout_names_come_from_the_engine_and_match_the_store_on_disk', async () => {
    const { dir } = await storeWith(1);
    const names = readdirSync(dir);
    for (const n of [LAYOUT.manifest, LAYOUT.manifestCopy, LAYOUT.wal, LAYOUT.data, LAYOUT.lock]) expect(names).toContain(n);
    expect(Object.isFrozen(LAYOUT)).toBe(true);
  });

  test('a_corrupt_manifest_throws_an_error_whose_code_file_and_offset_are_properties', async () => {
    const { dir } = await storeWith(2);
    const manifest = join(dir, LAYOUT.manifest);
    flipByte(manifest, readFileSync(manifest).length - 2);
    let thrown: unknown;
    try {
      nativeModule.readManifest(dir);
    } catch (e) {
      thrown = e;
    }
    // Straight from the binding: fields set as properties, the message carries no code prefix.
    expect(thrown).toBeInstanceOf(Error);
    const e = thrown as Error & { code: string; file: string; offset: number };
    expect(e.code).toBe('CAIRN_CORRUPTION');
    expect(e.file).toBe(manifest);
    expect(typeof e.offset).toBe('number');
    expect(e.message.startsWith('CAIRN_')).toBe(false);
  });

  test('an_async_failure_rejects_with_the_same_fields_and_becomes_a_cairn_error', async () => {
    const dir = tempDir();
    const db = await open(dir);
    await db.createCollection('docs', { dim: 4 });
    const snap = await db.snapshot();
    await db.close();
    const path = join(dir, LAYOUT.snapshots, snap.id, LAYOUT.snapshotManifest);
    flipByte(path, 30);
    const e = await rejectsWith(listSnapshots(dir), 'CAIRN_CORRUPTION');
    expect(e).toBeInstanceOf(CairnError);
    expect(e.file).toBe(path);
    expect(e.offset).toEqual(expect.any(Number));
  });

  test('an_error_names_the_collection_and_id_of_the_call', async () => {
    const dir = tempDir();
    const handle = await nativeModule.openStore(dir, { sync: 'none', recovery: 'tolerate-torn-tail' });
    try {
      let thrown: (Error & { code?: string; collection?: string; id?: string }) | undefined;
      try {
        handle.get('nowhere', 'some-id');
      } catch (e) {
        thrown = e as typeof thrown;
      }
      expect(thrown).toMatchObject({ code: 'CAIRN_NOT_FOUND', collection: 'nowhere', id: 'some-id' });
      await expect(handle.waitForIndex('nowhere')).rejects.toMatchObject({ code: 'CAIRN_NOT_FOUND', collection: 'nowhere' });
    } finally {
      await handle.close();
    }
  });

  test('a_scrub_worker_failure_keeps_its_code_across_the_thread_boundary', () => {
    const scan = nativeModule.scanOpen(null);
    nativeModule.scanClose(scan);
    let thrown: unknown;
    try {
      runScrubTask({ op: 'range', scan, split: 1, path: '/nonexistent', start: 0, end: 1 });
    } catch (e) {
      thrown = e;
    }
    // What piscina posts to the main thread is a structured clone of the thrown value.
    const e = fromNative(structuredClone(thrown));
    expect(e).toBeInstanceOf(CairnError);
    expect(e.code).toBe('CAIRN_INVALID_ARGUMENT');
    expect(e.message).toContain(`scan ${scan} is not open`);
  });

  test('wal_segments_decode_to_the_committed_sequence_numbers', async () => {
    const { dir, seqs } = await storeWith(5);
    const decoded = walSegments(dir).flatMap((p) => nativeModule.decodeWalSegment(readFileSync(p)).records);
    expect(decoded.map((r) => r.seq)).toEqual(expect.arrayContaining(seqs));
    for (const r of decoded) expect(r.timeMs).toBeGreaterThan(0);
    const last = walSegments(dir)
      .map((p) => lastWalRecord(readFileSync(p), null))
      .filter((r) => r !== null)
      .at(-1);
    expect(last?.seq).toBe(seqs.at(-1));
  });

  test('last_wal_record_stops_at_the_first_damaged_record', async () => {
    const { dir, seqs } = await storeWith(4);
    const path = walSegments(dir).find((p) => nativeModule.decodeWalSegment(readFileSync(p)).records.length >= 3)!;
    const buf = readFileSync(path);
    const { records } = nativeModule.decodeWalSegment(buf);
    const victim = records[records.length - 2]!;
    buf[victim.offset + 30]! ^= 0x10;
    const damaged = nativeModule.decodeWalSegment(buf);
    expect(damaged.damage.map((d) => d.offset)).toEqual([victim.offset]);
    expect(lastWalRecord(buf, null)?.seq).toBe(victim.seq - 1n);
    expect(seqs).toContain(victim.seq);
    // A bad header: no record of the segment is trusted.
    const header = readFileSync(path);
    header[3]! ^= 0x10;
    expect(() => nativeModule.decodeWalSegment(header)).toThrow(expect.objectContaining({ code: 'CAIRN_CORRUPTION', offset: 0 }));
    expect(lastWalRecord(header, null)).toBeNull();
  });
});
