// Snapshot export/import: a single zstd archive of a snapshot and its bases; every file is
// verified on the way back, and a damaged archive is refused before anything is written.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { exportSnapshot, importSnapshot, open, restore } from 'cairndb';
import { describe, expect, it } from 'vitest';

import { tempDir } from './helpers.js';

async function storeWithChain() {
  const dir = tempDir();
  const db = await open(dir);
  const col = await db.createCollection('c', { dim: 16, metric: 'cosine' });
  const rows = (from: number, n: number) =>
    Array.from({ length: n }, (_, i) => ({
      id: `r${from + i}`,
      vector: Float32Array.from({ length: 16 }, (_, j) => Math.sin(from + i + j)),
      metadata: { i: from + i },
    }));
  await col.upsert(rows(0, 3_000));
  const full = await db.snapshot();
  await col.upsert(rows(3_000, 100));
  await col.delete(['r5', 'r6']);
  const inc = await db.snapshot({ incremental: true });
  const state = new Map<string, string>();
  for (let i = 0; i < 3_100; i++) {
    const r = await col.get(`r${i}`);
    if (r) state.set(r.id, Buffer.from(r.vector.buffer, r.vector.byteOffset, r.vector.byteLength).toString('hex') + JSON.stringify(r.metadata));
  }
  await db.close();
  return { dir, full, inc, state };
}

describe('snapshot archives', () => {
  it('export_import_restore_round_trips_a_chain_with_identical_bytes', async () => {
    const { dir, full, inc, state } = await storeWithChain();
    const file = join(tempDir(), 'snap.carc');
    const res = await exportSnapshot({ dir, id: inc.id, file });
    expect(res.snapshots).toEqual([full.id, inc.id]);
    expect(res.storedBytes).toBeLessThan(res.rawBytes);
    const elsewhere = tempDir();
    expect((await importSnapshot({ file, dir: elsewhere })).snapshots).toEqual([full.id, inc.id]);
    const target = join(tempDir(), 'restored');
    const r = await restore({ source: elsewhere, target, to: { seq: inc.seq } });
    expect(r.seq).toBe(inc.seq);
    const db = await open(target);
    const col = db.collection('c');
    expect(await col.count()).toBe(state.size);
    for (const [id, want] of state) {
      const row = await col.get(id);
      expect(row && Buffer.from(row.vector.buffer, row.vector.byteOffset, row.vector.byteLength).toString('hex') + JSON.stringify(row.metadata)).toBe(want);
    }
    await db.close();
  });

  for (const damage of ['flip a byte in a chunk', 'truncate', 'flip a byte in the trailer'] as const) {
    it(`a_damaged_archive_is_refused_before_anything_is_written (${damage})`, async () => {
      const { dir, inc } = await storeWithChain();
      const file = join(tempDir(), 'snap.carc');
      await exportSnapshot({ dir, id: inc.id, file });
      const bytes = readFileSync(file);
      if (damage === 'flip a byte in a chunk') bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
      if (damage === 'flip a byte in the trailer') bytes[bytes.length - 3]! ^= 0x01;
      writeFileSync(file, damage === 'truncate' ? bytes.subarray(0, bytes.length - 1000) : bytes);
      const into = tempDir();
      const err = await importSnapshot({ file, dir: into }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'CAIRN_CORRUPTION', file });
      expect(existsSync(join(into, 'snapshots')) ? readdirSync(join(into, 'snapshots')) : []).toEqual([]);
    });
  }
});
