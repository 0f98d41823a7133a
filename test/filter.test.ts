// Filters against a plain reference evaluator: random documents (nested paths, arrays, missing
// fields, mixed types) and random filters (every operator, $and/$or/$not). `count`, `scan`, an
// exact `query` and `deleteWhere` must equal the reference, with and without payload indexes,
// across index maintenance (overwrites, deletes) and a reopen that loads the persisted indexes.
import { type Filter, type Metadata, open, type PayloadIndexType, type Store } from 'cairndb';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

import { rejectsWith, tempDir } from './helpers.js';

// ---- The reference evaluator: the semantics of crates/cairn-core/src/filter/mod.rs, restated.

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
const MISSING = Symbol('missing');

function resolvePath(doc: Json, path: string): Json | typeof MISSING {
  let at: Json = doc;
  for (const seg of path.split('.')) {
    if (at === null || typeof at !== 'object' || Array.isArray(at) || !Object.hasOwn(at, seg)) return MISSING;
    at = (at as Record<string, Json>)[seg]!;
  }
  return at;
}

function equal(s: Json, v: Json): boolean {
  if (s === null) return v === null;
  if (typeof s === 'object') return false;
  return typeof v === typeof s && v === s;
}

/** Code point order, as Rust compares UTF-8 strings. */
function compareStrings(a: string, b: string): number {
  const x = [...a].map((c) => c.codePointAt(0)!);
  const y = [...b].map((c) => c.codePointAt(0)!);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return x.length - y.length;
}

function inRange(op: string, bound: number | string, v: Json): boolean {
  let c: number;
  if (typeof bound === 'number' && typeof v === 'number') c = v - bound;
  else if (typeof bound === 'string' && typeof v === 'string') c = compareStrings(v, bound);
  else return false;
  return op === '$gt' ? c > 0 : op === '$gte' ? c >= 0 : op === '$lt' ? c < 0 : c <= 0;
}

function anyElement(found: Json | typeof MISSING, f: (v: Json) => boolean): boolean {
  if (found === MISSING) return false;
  return Array.isArray(found) ? found.some(f) : f(found);
}

function fieldMatches(op: string, operand: Json, found: Json | typeof MISSING): boolean {
  switch (op) {
    case '$eq':
      return anyElement(found, (v) => equal(operand, v));
    case '$ne':
      return !anyElement(found, (v) => equal(operand, v));
    case '$in':
      return anyElement(found, (v) => (operand as Json[]).some((s) => equal(s, v)));
    case '$nin':
      return !anyElement(found, (v) => (operand as Json[]).some((s) => equal(s, v)));
    case '$exists':
      return (found !== MISSING) === operand;
    default:
      return anyElement(found, (v) => inRange(op, operand as number | string, v));
  }
}

function refMatches(filter: Record<string, unknown>, doc: Json): boolean {
  return Object.entries(filter).every(([key, cond]) => {
    if (key === '$and') return (cond as Record<string, unknown>[]).every((f) => refMatches(f, doc));
    if (key === '$or') return (cond as Record<string, unknown>[]).some((f) => refMatches(f, doc));
    if (key === '$not') return !refMatches(cond as Record<string, unknown>, doc);
    const found = resolvePath(doc, key);
    if (cond !== null && typeof cond === 'object') return Object.entries(cond).every(([op, operand]) => fieldMatches(op, operand as Json, found));
    return fieldMatches('$eq', cond as Json, found);
  });
}

// ---- Random documents and filters.

const scalar = fc.oneof(fc.integer({ min: -2, max: 2 }), fc.constantFrom('x', 'y', 'z', 'é'), fc.boolean(), fc.constant(null));
const value: fc.Arbitrary<Json> = fc.oneof(
  { weight: 4, arbitrary: scalar },
  { weight: 2, arbitrary: fc.array(scalar, { maxLength: 3 }) },
  { weight: 1, arbitrary: fc.array(fc.oneof(scalar, fc.array(scalar, { maxLength: 2 })), { maxLength: 2 }) },
  { weight: 1, arbitrary: fc.record({ a: scalar }, { requiredKeys: [] }) },
);
const nested = fc.record({ a: value, b: value }, { requiredKeys: [] });
const metadata = fc.record({ a: value, b: value, c: value, n: fc.oneof(nested, value) }, { requiredKeys: [] }) as fc.Arbitrary<Metadata>;

const PATHS = ['a', 'b', 'c', 'n.a', 'n.b', 'n', 'm'] as const;
const bound = fc.oneof(fc.integer({ min: -2, max: 2 }), fc.constantFrom('x', 'y', 'é'));
const rangeOp = fc.constantFrom('$gt', '$gte', '$lt', '$lte');
const condition = fc.oneof(
  scalar,
  scalar.map(($eq) => ({ $eq })),
  scalar.map(($ne) => ({ $ne })),
  fc.tuple(rangeOp, bound).map(([op, b]) => ({ [op]: b })),
  fc.tuple(fc.integer({ min: -2, max: 1 }), fc.integer({ min: 0, max: 3 })).map(([lo, hi]) => ({ $gte: lo, $lt: hi })),
  fc.array(scalar, { maxLength: 4 }).map(($in) => ({ $in })),
  fc.array(scalar, { maxLength: 4 }).map(($nin) => ({ $nin })),
  fc.boolean().map(($exists) => ({ $exists })),
);
const leaf = fc.tuple(fc.constantFrom(...PATHS), condition).map(([p, c]) => ({ [p]: c }) as Filter);
const { filter: randomFilter } = fc.letrec<{ filter: Filter }>((tie) => ({
  filter: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    leaf,
    fc.tuple(leaf, leaf).map(([x, y]) => ({ ...x, ...y })),
    fc.array(tie('filter'), { minLength: 1, maxLength: 3 }).map(($and) => ({ $and })),
    fc.array(tie('filter'), { minLength: 1, maxLength: 3 }).map(($or) => ({ $or })),
    tie('filter').map(($not) => ({ $not })),
  ),
}));

const INDEXABLE: Array<[string, PayloadIndexType]> = [
  ['a', 'keyword'],
  ['b', 'number'],
  ['c', 'bool'],
  ['n.a', 'keyword'],
  ['n.b', 'number'],
  ['a', 'number'],
];

interface Doc {
  id: string;
  vector: number[];
  metadata: Metadata;
}
const docs = fc.uniqueArray(
  fc.record({ id: fc.stringMatching(/^[a-z0-9]{1,6}$/), vector: fc.array(fc.integer({ min: -4, max: 4 }), { minLength: 2, maxLength: 2 }), metadata }),
  { selector: (d) => d.id, minLength: 1, maxLength: 40 },
);

function refTopK(rows: Map<string, Doc>, filter: Filter, q: number[], k: number): string[] {
  const hits = [...rows.values()]
    .filter((d) => refMatches(filter as Record<string, unknown>, d.metadata as Json))
    .map((d) => ({ id: d.id, dist: (d.vector[0]! - q[0]!) ** 2 + (d.vector[1]! - q[1]!) ** 2 }));
  hits.sort((x, y) => x.dist - y.dist || (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
  return hits.slice(0, k).map((h) => h.id);
}

async function scanIds(store: Store, name: string, filter: Filter, page: number): Promise<string[]> {
  const out: string[] = [];
  let after: string | undefined;
  // Resumed page by page through the cursor, as a caller would across calls.
  for (let round = 0; round < 100; round++) {
    const got: string[] = [];
    for await (const row of store.collection(name).scan({ filter, limit: page, ...(after ? { after } : {}) })) got.push(row.id);
    out.push(...got);
    if (got.length < page) return out;
    after = got[got.length - 1];
  }
  throw new Error('scan did not finish in 100 pages');
}

async function expectMatchesReference(store: Store, name: string, rows: Map<string, Doc>, filters: Filter[], q: number[]): Promise<void> {
  const c = store.collection(name);
  for (const filter of filters) {
    const expected = [...rows.values()].filter((d) => refMatches(filter as Record<string, unknown>, d.metadata as Json)).map((d) => d.id);
    expected.sort();
    const context = JSON.stringify(filter);
    expect(await c.count({ filter }), context).toBe(expected.length);
    expect(await scanIds(store, name, filter, 7), context).toEqual(expected);
    const hits = await c.query(q, { k: 5, exact: true, filter });
    expect(
      hits.map((h) => h.id),
      context,
    ).toEqual(refTopK(rows, filter, q, 5));
    const graphHits = await c.query(q, { k: 5, filter });
    expect(
      graphHits.map((h) => h.id),
      `${context} (small collections are searched exactly)`,
    ).toEqual(refTopK(rows, filter, q, 5));
  }
}

describe('filters equal the reference evaluator', () => {
  test('count, scan and exact query, with random payload indexes, maintenance and reopen', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        docs,
        docs,
        fc.subarray(INDEXABLE.slice(0, 5)),
        fc.array(randomFilter, { minLength: 1, maxLength: 6 }),
        fc.boolean(),
        fc.array(fc.integer({ min: -4, max: 4 }), { minLength: 2, maxLength: 2 }),
        async (first, second, indexes, filters, reopen, q) => {
          const dir = tempDir('cairn-filter-');
          let store = await open(dir, { sync: 'none' });
          const name = `c${run++}`;
          try {
            const c = await store.createCollection(name, { dim: 2, metric: 'l2' });
            const rows = new Map<string, Doc>();
            await c.upsert(first);
            for (const d of first) rows.set(d.id, d);
            // Half the indexes are built over existing rows, half maintained from empty... then
            // overwrites and deletes must keep every one in step.
            for (const [field, type] of indexes) await c.createIndex(field, { type });
            await c.upsert(second);
            for (const d of second) rows.set(d.id, d);
            const gone = first.filter((_, i) => i % 3 === 0).map((d) => d.id);
            await c.delete(gone);
            for (const id of gone) rows.delete(id);
            expect(c.indexes().map((i) => i.field)).toEqual([...new Set(indexes.map(([f]) => f))].sort());
            if (reopen) {
              await store.close();
              store = await open(dir, { sync: 'none' });
            }
            await expectMatchesReference(store, name, rows, filters, q);
            // deleteWhere removes exactly the matching rows, as one WAL record.
            const target = filters[0]!;
            const before = store.lastSeq;
            const { seq, deleted } = await store.collection(name).deleteWhere(target);
            const matching = [...rows.values()].filter((d) => refMatches(target as Record<string, unknown>, d.metadata as Json));
            expect(deleted).toBe(matching.length);
            expect(seq).toBe(deleted === 0 ? before : before + 1n);
            for (const d of matching) rows.delete(d.id);
            await expectMatchesReference(store, name, rows, [{}, ...filters.slice(1)], q);
          } finally {
            await store.close();
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  test('a filter on an indexed field answers from the index and agrees with an unindexed twin', async () => {
    const store = await open(tempDir('cairn-filter-'), { sync: 'none' });
    try {
      const plain = await store.createCollection('plain', { dim: 2, metric: 'l2' });
      const indexed = await store.createCollection('indexed', { dim: 2, metric: 'l2' });
      const records = Array.from({ length: 5000 }, (_, i) => ({
        id: `r${String(i).padStart(5, '0')}`,
        vector: [Math.cos(i), Math.sin(i)],
        metadata: { lang: ['en', 'de', 'fr', 'it', 'es'][i % 5]!, year: 2000 + (i % 30), tags: i % 1000 === 7 ? ['rare', 'x'] : ['x'] },
      }));
      await plain.upsert(records);
      await indexed.upsert(records);
      await indexed.createIndex('lang', { type: 'keyword' });
      await indexed.createIndex('year', { type: 'number' });
      await indexed.createIndex('tags', { type: 'keyword' });
      expect(indexed.indexes()).toEqual([
        { field: 'lang', type: 'keyword', entries: 5000 },
        { field: 'tags', type: 'keyword', entries: 5005 },
        { field: 'year', type: 'number', entries: 5000 },
      ]);
      const q = [0.3, 0.7];
      for (const filter of [
        { tags: 'rare' },
        { lang: { $in: ['en', 'de'] }, year: { $gte: 2010, $lt: 2012 } },
        { $or: [{ year: 2001 }, { lang: 'fr' }] },
        { $not: { lang: 'en' } },
        { year: { $gt: 2028 } },
      ] as Filter[]) {
        const expected = records.filter((r) => refMatches(filter as Record<string, unknown>, r.metadata as Json)).map((r) => r.id);
        expect(await indexed.count({ filter })).toBe(expected.length);
        expect(await plain.count({ filter })).toBe(expected.length);
        const exact = (await plain.query(q, { k: 10, exact: true, filter })).map((h) => h.id);
        expect(exact.length).toBe(Math.min(10, expected.length));
        expect((await indexed.query(q, { k: 10, exact: true, filter })).map((h) => h.id)).toEqual(exact);
        // Selective filters are answered exactly from the index's candidates; the others search
        // the graph, approximately.
        const viaIndex = (await indexed.query(q, { k: 10, filter })).map((h) => h.id);
        expect(viaIndex.length).toBe(exact.length);
        expect(viaIndex.filter((id) => exact.includes(id)).length).toBeGreaterThanOrEqual(Math.ceil(0.9 * exact.length));
      }
      // A filter matching 3 rows returns exactly those 3 (k larger than the matches).
      const three = await indexed.query(q, { k: 10, filter: { tags: 'rare', year: { $ne: 2017 } } });
      const want = records.filter((r) => r.metadata.tags.includes('rare') && r.metadata.year !== 2017).map((r) => r.id);
      expect(want.length).toBe(3);
      expect(three.map((h) => h.id).sort()).toEqual(want);
      await indexed.dropIndex('tags');
      expect(indexed.indexes().map((i) => i.field)).toEqual(['lang', 'year']);
      await rejectsWith(indexed.dropIndex('tags'), 'CAIRN_NOT_FOUND');
      await rejectsWith(indexed.createIndex('lang', { type: 'number' }), 'CAIRN_ALREADY_EXISTS');
    } finally {
      await store.close();
    }
  });
});

describe('bad filters', () => {
  let store: Store;
  beforeAll(async () => {
    store = await open(tempDir('cairn-filter-'), { sync: 'none' });
    const c = await store.createCollection('docs', { dim: 2, metric: 'l2' });
    await c.upsert([{ id: 'a', vector: [0, 0], metadata: { x: 1 } }]);
  });
  afterAll(async () => {
    await store.close();
  });

  const nest = (n: number): Filter => {
    let f: Filter = { x: 1 };
    for (let i = 0; i < n; i++) f = { $not: f };
    return f;
  };
  test.each([
    ['an unknown operator', { 'meta.year': { $foo: 1 } }, ["'meta.year'", '$foo']],
    ['an unknown top-level operator', { $where: 'x' }, ['$where']],
    ['$in with a non-array', { lang: { $in: 'en' } }, ["'lang'", '$in']],
    ['$gt with an object', { year: { $gt: { y: 1 } } }, ["'year'", '$gt']],
    ['$lt with a boolean', { year: { $lt: true } }, ["'year'", '$lt']],
    ['$exists with a number', { year: { $exists: 1 } }, ["'year'", '$exists']],
    ['an empty $or', { $or: [] }, ['$or']],
    ['$and with a non-object', { $and: [1] }, ['$and']],
    ['a bare array', { tags: ['a'] }, ["'tags'", '$in']],
    ['nesting deeper than 32', nest(40), ['nested deeper than 32']],
    ['more than 1024 $in values', { id: { $in: Array.from({ length: 1025 }, (_, i) => i) } }, ["'id'", '$in', '1024']],
  ] as Array<[string, unknown, string[]]>)('%s is rejected naming path and operator, and nothing runs', async (_why, filter, words) => {
    const c = store.collection('docs');
    const f = filter as Filter;
    for (const call of [
      () => c.count({ filter: f }),
      () => c.query([0, 0], { k: 1, filter: f }),
      () => c.deleteWhere(f),
      async () => {
        for await (const _ of c.scan({ filter: f })) {
        }
      },
    ]) {
      const e = await rejectsWith(call(), 'CAIRN_INVALID_ARGUMENT');
      for (const w of words) expect(e.message).toContain(w);
    }
    expect(await c.count()).toBe(1);
  });

  test.each([
    ['limit 0', { limit: 0 }, 'options.limit'],
    ['a fractional limit', { limit: 1.5 }, 'options.limit'],
    ['a numeric cursor', { after: 5 }, 'options.after'],
    ['vectors as a string', { vectors: 'yes' }, 'options.vectors'],
    ['an unknown option', { limt: 10 }, 'limt'],
    ['a non-JSON filter value', { filter: { x: Number.NaN } }, 'options.filter'],
    ['options that are not an object', 7, 'options'],
  ] as Array<[string, unknown, string]>)('scan with %s does not throw but rejects from the iterator, naming the field', async (_why, options, field) => {
    const c = store.collection('docs');
    let iterable: AsyncIterable<unknown> | undefined;
    expect(() => {
      iterable = c.scan(options as never);
    }).not.toThrow();
    const first = (iterable as AsyncIterable<unknown>)[Symbol.asyncIterator]().next();
    const e = await rejectsWith(first, 'CAIRN_INVALID_ARGUMENT');
    expect(e.message).toContain(field);
    let rows = 0;
    const loop = async () => {
      for await (const _ of c.scan(options as never)) rows++;
    };
    await rejectsWith(loop(), 'CAIRN_INVALID_ARGUMENT');
    expect(rows).toBe(0);
  });

  test('getMany keeps input order and gives undefined for missing ids', async () => {
    const c = store.collection('docs');
    await c.upsert([{ id: 'b', vector: [1, 1], metadata: { x: 2 } }]);
    const got = await c.getMany(['b', 'nope', 'a', 'b']);
    expect(got.map((r) => r?.id)).toEqual(['b', undefined, 'a', 'b']);
    expect(got[0]!.metadata).toEqual({ x: 2 });
    expect([...got[2]!.vector]).toEqual([0, 0]);
    await rejectsWith(c.getMany(['../x']), 'CAIRN_INVALID_ARGUMENT');
  });
});
