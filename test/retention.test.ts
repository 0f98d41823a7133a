// Snapshot retention and schedule, and WAL archive retention: what is kept matches the policy,
// a kept incremental keeps its base, and the recoverable range reports what is left.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

import { open, restore } from 'cairndb';
import { describe, expect, it } from 'vitest';

import { tempDir } from './helpers.js';

const vec = (i: number) => [i, 1, 0, 0];

describe('snapshot retention', () => {
  it('retention_never_deletes_a_base_that_a_kept_incremental_needs', async () => {
    const db = await open(tempDir());
    const col = await db.createCollection('c', { dim: 4, metric: 'l2' });
    const ids: string[] = [];
    let n = 0;
    for (const incremental of [false, true, true, false, true]) {
      await col.upsert([{ id: `r${n}`, vector: vec(n++) }]);
      ids.push((await db.snapshot({ incremental })).id);
    }
    // Newest two are [full #4, incremental #5]; #5 builds on #4.
    expect(await db.pruneSnapshots(2)).toEqual(ids.slice(0, 3));
    expect((await db.snapshots()).map((s) => s.id)).toEqual(ids.slice(3));
    // Keeping one keeps its whole chain.
    await col.upsert([{ id: `r${n}`, vector: vec(n++) }]);
    const inc = await db.snapshot({ incremental: true });
    expect(await db.pruneSnapshots(1)).toEqual([]);
    expect((await db.snapshots()).map((s) => s.id)).toEqual([...ids.slice(3), inc.id]);
    // Every kept snapshot still restores.
    const target = join(tempDir(), 'r');
    await restore({ source: db.dir, target, to: { seq: inc.seq } });
    const restored = await open(target);
    expect(await restored.collection('c').count()).toBe(n);
    await restored.close();
    await db.close();
  });

  it('the_schedule_takes_full_and_incremental_snapshots_and_applies_retention', async () => {
    const db = await open(tempDir(), { snapshots: { fullIntervalMs: 400, incrementalIntervalMs: 90, keep: 3 } });
    const col = await db.createCollection('c', { dim: 4, metric: 'l2' });
    const taken: string[] = [];
    db.on('snapshot', (s: { kind: string }) => taken.push(s.kind));
    const errors: unknown[] = [];
    db.on('snapshot-error', (e) => errors.push(e));
    for (let i = 0; taken.length < 8 && i < 400; i++) {
      await col.upsert([{ id: `r${i}`, vector: vec(i) }]);
      await new Promise((r) => setTimeout(r, 15));
    }
    expect(errors).toEqual([]);
    expect(taken).toContain('full');
    expect(taken).toContain('incremental');
    const kept = await db.snapshots();
    // At most `keep` newest plus the bases they need; every kept incremental has its base.
    const ids = new Set(kept.map((s) => s.id));
    for (const s of kept) if (s.base) expect(ids.has(s.base)).toBe(true);
    expect(kept.filter((s) => s.kind === 'full').length).toBeGreaterThanOrEqual(1);
    await db.close();
  });
});

describe('WAL archive retention', () => {
  it('archive_retention_by_size_shrinks_the_recoverable_range_and_restore_refuses_outside_it', async () => {
    const dir = tempDir();
    const db = await open(dir, { walSegmentBytes: 4096, walArchive: { maxBytes: 16 * 1024 } });
    const col = await db.createCollection('c', { dim: 4, metric: 'l2' });
    const first = await db.snapshot();
    let later = first;
    for (let i = 0; i < 400; i++) {
      await col.upsert([{ id: `r${i}`, vector: vec(i), metadata: { pad: 'x'.repeat(64) } }]);
      if (i % 50 === 49) await db.checkpoint();
      if (i === 360) later = await db.snapshot();
    }
    const archived = readdirSync(join(dir, 'wal-archive'));
    expect(archived.length).toBeGreaterThan(0);
    const range = await db.recoverableRange();
    // The WAL right after the first snapshot is gone, so recovery starts at the later one.
    expect(range.from.seq).toBe(later.seq);
    expect(range.to.seq).toBe(db.lastSeq);
    const err = await restore({ source: dir, target: join(tempDir(), 'x'), to: { seq: first.seq + 1n } }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'CAIRN_INVALID_ARGUMENT' });
    expect(String((err as Error).message)).toContain('recoverable range');
    await db.close();
  });
});
