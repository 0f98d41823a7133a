// Query hits carry `distance` beside `score`: lower is closer for every metric, so ordering by it
// never depends on the metric.
import { join } from 'node:path';

import { type Metric, open } from 'cairndb';
import { describe, expect, test } from 'vitest';

import { tempDir } from './helpers.js';

const VECTORS: Array<[string, number[]]> = [
  ['x', [1, 0, 0]],
  ['xy', [0.8, 0.6, 0]],
  ['y', [0, 1, 0]],
  ['far', [-3, -1, 0.5]],
];

function expected(metric: Metric, q: number[], v: number[]): number {
  const dot = q.reduce((s, x, i) => s + x * v[i]!, 0);
  const norm = (a: number[]) => Math.sqrt(a.reduce((s, x) => s + x * x, 0));
  if (metric === 'l2') return Math.sqrt(q.reduce((s, x, i) => s + (x - v[i]!) ** 2, 0));
  if (metric === 'cosine') return 1 - dot / (norm(q) * norm(v));
  return 1 - dot;
}

describe('query distance', () => {
  test.each(['cosine', 'l2', 'ip'] as const)('distance_is_lower_is_closer_for_%s', async (metric) => {
    const db = await open(join(tempDir(`distance-${metric}`), 's'));
    const c = await db.createCollection('c', { dim: 3, metric });
    await c.upsert(VECTORS.map(([id, vector]) => ({ id, vector })));
    const q = [0.9, 0.3, 0];
    for (const exact of [true, false]) {
      const hits = await c.query(q, { k: VECTORS.length, exact });
      expect(hits.map((h) => h.id)).toHaveLength(VECTORS.length);
      for (let i = 1; i < hits.length; i++) expect(hits[i]!.distance).toBeGreaterThanOrEqual(hits[i - 1]!.distance);
      for (const h of hits) {
        const v = VECTORS.find(([id]) => id === h.id)![1];
        expect(h.distance).toBeCloseTo(expected(metric, q, v), 4);
        expect(h.distance).toBeCloseTo(metric === 'l2' ? h.score : 1 - h.score, 6);
      }
    }
    await db.close();
  });
});
