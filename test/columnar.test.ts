// The columnar form of upsert ({ ids, vectors, metadata? }) stores exactly what the record form
// stores, and bad input rejects with CAIRN_INVALID_ARGUMENT naming the field, writing nothing.
import { type Collection, open, type Store } from 'cairndb';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

import { rejectsWith, tempDir } from './helpers.js';

const DIM = 3;

describe('columnar upsert', () => {
  let db: Store;
  let docs: Collection;
  let rows: Collection;

  beforeAll(async () => {
    db = await open(tempDir());
    docs = await db.createCollection('docs', { dim: DIM, metric: 'l2' });
    rows = await db.createCollection('rows', { dim: DIM, metric: 'l2' });
  });
  afterAll(() => db.close());

  test('stores what the record form stores, row by row', async () => {
    const n = 50;
    const ids = Array.from({ length: n }, (_, i) => `r${i}`);
    const vectors = new Float32Array(n * DIM).map((_, j) => j * 0.5 - 7);
    const metadata = ids.map((_, i) => (i % 5 === 0 ? undefined : { i, tag: `t${i % 3}`, nested: { even: i % 2 === 0 } }));
    await docs.upsert({ ids, vectors, metadata });
    await rows.upsert(ids.map((id, i) => ({ id, vector: vectors.slice(i * DIM, (i + 1) * DIM), metadata: metadata[i] })));
    expect(await docs.count()).toBe(n);
    for (let i = 0; i < n; i++) {
      const a = await docs.get(ids[i]!);
      const b = await rows.get(ids[i]!);
      expect(a).toEqual(b);
      expect(Array.from(a!.vector)).toEqual(Array.from(vectors.subarray(i * DIM, (i + 1) * DIM)));
      expect(a!.metadata).toEqual(metadata[i] ?? {});
    }
    const q = new Float32Array([1, 1, 1]);
    expect(await docs.query(q, { k: 5, exact: true })).toEqual(await rows.query(q, { k: 5, exact: true }));
  });

  test('a later columnar upsert replaces rows, metadata may be omitted', async () => {
    await docs.upsert({ ids: ['r1', 'r2'], vectors: new Float32Array([9, 9, 9, 8, 8, 8]) });
    expect(Array.from((await docs.get('r2'))!.vector)).toEqual([8, 8, 8]);
    expect((await docs.get('r1'))!.metadata).toEqual({});
  });

  test('a batch op may be columnar, and stays atomic', async () => {
    const before = db.lastSeq;
    const { seq } = await db.batch([
      { collection: 'docs', op: 'upsert', records: { ids: ['b1', 'b2'], vectors: new Float32Array(2 * DIM).fill(3) } },
      { collection: 'rows', op: 'delete', ids: ['r0'] },
    ]);
    expect(seq).toBe(before + 1n);
    expect(await docs.get('b2')).toBeDefined();
    expect(await rows.get('r0')).toBeUndefined();
  });

  const bad: Array<[string, unknown, RegExp]> = [
    ['no ids', { ids: [], vectors: new Float32Array(0) }, /records\.ids must be a non-empty array/],
    ['vectors not a Float32Array', { ids: ['a'], vectors: [1, 2, 3] }, /records\.vectors must be a Float32Array/],
    ['too few values', { ids: ['a', 'b'], vectors: new Float32Array(5) }, /records\.vectors has 5 values, expected 2 ids × dim 3 = 6/],
    ['NaN', { ids: ['a', 'b'], vectors: new Float32Array([0, 0, 0, 0, Number.NaN, 0]) }, /records\.vectors\[4\] \(record 1, component 1\) must be a finite/],
    ['Infinity', { ids: ['a'], vectors: new Float32Array([0, Number.POSITIVE_INFINITY, 0]) }, /records\.vectors\[1\] \(record 0, component 1\)/],
    ['a duplicate id', { ids: ['a', 'a'], vectors: new Float32Array(6) }, /records\.ids\[1\] 'a' appears twice/],
    ['a path-like id', { ids: ['ok', '../x'], vectors: new Float32Array(6) }, /records\.ids\[1\]/],
    [
      'metadata of the wrong length',
      { ids: ['a', 'b'], vectors: new Float32Array(6), metadata: [{}] },
      /records\.metadata must be an array with one entry per id \(2\)/,
    ],
    ['metadata not plain JSON', { ids: ['a'], vectors: new Float32Array(3), metadata: [{ f: () => 1 }] }, /records\.metadata\[0\]\.f/],
    ['an unknown key', { ids: ['a'], vectors: new Float32Array(3), vector: 1 }, /records\.vector/],
  ];
  test.each(bad)('rejects %s, naming the field, and writes nothing', async (_name, records, message) => {
    const before = db.lastSeq;
    const e = await rejectsWith(docs.upsert(records as never), 'CAIRN_INVALID_ARGUMENT');
    expect(e.message).toMatch(message);
    expect(db.lastSeq).toBe(before);
    expect(await docs.get('a')).toBeUndefined();
  });
});
