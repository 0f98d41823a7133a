// `indexerWriteShare` bounds the background indexer while writes arrive. Whatever the share,
// every acknowledged row is answered by queries at once (pending rows are scanned exactly) and
// the graph catches up once writes stop. Speed is bench/write.js's `indexer` suite, never here.
import { open } from 'cairndb';
import { describe, expect, test } from 'vitest';

import { prng } from './fixtures/records.mjs';
import { rejectsWith, tempDir } from './helpers.js';

const DIM = 8;

describe('indexerWriteShare', () => {
  test.each([-0.1, 1.5, Number.NaN, '0.5', null])('open refuses %s, naming the option', async (share) => {
    const e = await rejectsWith(open(tempDir(), { indexerWriteShare: share as number }), 'CAIRN_INVALID_ARGUMENT');
    expect(e.message).toContain('options.indexerWriteShare');
  });

  test.each([0, 0.5, 1])('share %s: every acknowledged row is found at once, and the graph catches up', async (share) => {
    const db = await open(tempDir(), { indexerWriteShare: share });
    try {
      const col = await db.createCollection('docs', { dim: DIM, metric: 'l2' });
      const rand = prng(7);
      const model = new Map<string, Float32Array>();
      for (let b = 0; b < 12; b++) {
        const records = Array.from({ length: 250 }, (_, i) => {
          const v = Float32Array.from({ length: DIM }, () => rand() * 2 - 1);
          return { id: `r${b}-${i}`, vector: v };
        });
        await col.upsert(records);
        for (const r of records) model.set(r.id, r.vector);
        // Each record's own vector finds it first, whether it is pending (scanned exactly) or
        // already in the graph (a wide ef, so graph recall is not what is tested here).
        for (const r of [records[0]!, records[249]!]) {
          const hits = await col.query(r.vector, { k: 1, ef: 400 });
          expect(hits[0]?.id).toBe(r.id);
        }
      }
      await col.waitForIndex();
      const stats = col.indexStats();
      expect(stats.pending).toBe(0);
      expect(stats.indexed).toBe(model.size);
      expect(await col.count()).toBe(model.size);
    } finally {
      await db.close();
    }
  });
});
