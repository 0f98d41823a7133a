// Model-based test: random sequences of writes, checkpoints and reopens against a plain
// in-memory reference (a Map of Maps). After every step the touched ids and counts must match
// the model; exact queries must return the brute-force top k.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { type Metadata, open, type QueryHit, type Store } from 'cairndb';
import fc from 'fast-check';
import { expect, test } from 'vitest';

const COLLECTIONS = [
  { name: 'c0', dim: 3, metric: 'l2' },
  { name: 'c1', dim: 2, metric: 'ip' },
] as const;
type Col = 0 | 1;
const IDS = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'ü', 'x y', '☃'.repeat(3)];

interface Rec {
  id: string;
  vector: number[];
  metadata: Metadata;
}
type SubOp = { t: 'upsert'; c: Col; recs: Rec[] } | { t: 'delete'; c: Col; ids: string[] };
type Step =
  | SubOp
  | { t: 'batch'; ops: SubOp[] }
  | { t: 'checkpoint' }
  | { t: 'reopen'; sync: 'none' | 'group' | 'always' }
  | { t: 'recreate'; c: Col }
  | { t: 'query'; c: Col; vector: number[]; k: number };

/** Finite float32 values: small integers (ties), and arbitrary floats with -0 and subnormals. */
const component = fc.oneof(fc.integer({ min: -3, max: 3 }), fc.float({ min: -100, max: 100, noNaN: true, noDefaultInfinity: true }));
const vectorOf = (c: Col) => fc.array(component, { minLength: COLLECTIONS[c].dim, maxLength: COLLECTIONS[c].dim });
const metadata = fc.dictionary(fc.string({ unit: 'binary', maxLength: 6 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }) as fc.Arbitrary<Metadata>;
const col = fc.constantFrom<Col>(0, 1);
const id = fc.constantFrom(...IDS);
const upsert = col.chain((c) =>
  fc.record({
    t: fc.constant('upsert' as const),
    c: fc.constant(c),
    recs: fc.uniqueArray(fc.record({ id, vector: vectorOf(c), metadata }), { minLength: 1, maxLength: 4, selector: (r) => r.id }),
  }),
);
const del = fc.record({ t: fc.constant('delete' as const), c: col, ids: fc.uniqueArray(id, { minLength: 1, maxLength: 4 }) });
const step: fc.Arbitrary<Step> = fc.oneof(
  { arbitrary: upsert, weight: 6 },
  { arbitrary: del, weight: 3 },
  { arbitrary: fc.record({ t: fc.constant('batch' as const), ops: fc.array(fc.oneof(upsert, del), { minLength: 1, maxLength: 4 }) }), weight: 4 },
  { arbitrary: fc.constant({ t: 'checkpoint' as const }), weight: 2 },
  { arbitrary: fc.record({ t: fc.constant('reopen' as const), sync: fc.constantFrom('none' as const, 'group' as const, 'always' as const) }), weight: 2 },
  { arbitrary: fc.record({ t: fc.constant('recreate' as const), c: col }), weight: 1 },
  {
    arbitrary: col.chain((c) => fc.record({ t: fc.constant('query' as const), c: fc.constant(c), vector: vectorOf(c), k: fc.integer({ min: 1, max: 12 }) })),
    weight: 3,
  },
);

type Model = Map<string, { vector: Float32Array; metadata: Metadata }>[];

/** What the store must hand back: float32 bytes of the input, metadata as JSON round-trips it. */
function stored(r: Rec) {
  return { vector: Float32Array.from(r.vector), metadata: JSON.parse(JSON.stringify(r.metadata)) as Metadata };
}

function applySub(model: Model, op: SubOp, touched: Set<string>): void {
  if (op.t === 'upsert') for (const r of op.recs) model[op.c]!.set(r.id, stored(r));
  else for (const i of op.ids) model[op.c]!.delete(i);
  for (const i of op.t === 'upsert' ? op.recs.map((r) => r.id) : op.ids) touched.add(`${op.c}:${i}`);
}

async function expectMatches(db: Store, model: Model, touched: Iterable<string>, where: string): Promise<void> {
  const counts = new Set<Col>();
  for (const t of touched) {
    const sep = t.indexOf(':');
    const c = Number(t.slice(0, sep)) as Col;
    const i = t.slice(sep + 1);
    counts.add(c);
    const got = await db.collection(COLLECTIONS[c].name).get(i);
    const want = model[c]!.get(i);
    if (!want) {
      expect(got, `${where}: ${COLLECTIONS[c].name}/${i} must be absent`).toBeUndefined();
      continue;
    }
    expect(got, `${where}: ${COLLECTIONS[c].name}/${i} must be present`).toBeDefined();
    // Compare bytes, so -0 and every float32 bit pattern must survive exactly.
    expect(Buffer.from(got!.vector.buffer, got!.vector.byteOffset, got!.vector.byteLength)).toEqual(Buffer.from(want.vector.buffer));
    expect(got!.metadata).toEqual(want.metadata);
    expect(got!.id).toBe(i);
  }
  for (const c of counts) expect(await db.collection(COLLECTIONS[c].name).count(), `${where}: count of ${COLLECTIONS[c].name}`).toBe(model[c]!.size);
}

/** Public score as the brute force computes it in float64: l2 distance, or the dot product. */
function score(c: Col, q: Float32Array, v: Float32Array): number {
  let s = 0;
  for (let i = 0; i < q.length; i++) s += COLLECTIONS[c].metric === 'l2' ? (q[i]! - v[i]!) ** 2 : q[i]! * v[i]!;
  return COLLECTIONS[c].metric === 'l2' ? Math.sqrt(s) : s;
}

/**
 * Exact search returns the brute-force top k (ties aside). The default (HNSW) search may miss
 * rows, but every hit it returns must be a live row with its current score and metadata.
 */
async function expectTopK(db: Store, model: Model, s: Extract<Step, { t: 'query' }>, where: string): Promise<void> {
  const q = Float32Array.from(s.vector);
  const rows = model[s.c]!;
  const approximate = await db.collection(COLLECTIONS[s.c].name).query(q, { k: s.k });
  expect(approximate.length, `${where}: approximate hit count`).toBeLessThanOrEqual(Math.min(s.k, rows.size));
  await expectSoundHits(approximate, model, s, `${where} (hnsw)`);
  const hits = await db.collection(COLLECTIONS[s.c].name).query(q, { k: s.k, exact: true });
  expect(hits.length, `${where}: hit count`).toBe(Math.min(s.k, rows.size));
  const prev = await expectSoundHits(hits, model, s, where);
  const closer = COLLECTIONS[s.c].metric === 'l2' ? 1 : -1;
  const tol = (x: number) => 1e-4 * (1 + Math.abs(x));
  // Ties aside, nothing left out is closer than the last hit.
  const hitIds = new Set(hits.map((h) => h.id));
  if (prev !== undefined) {
    for (const [i, row] of rows) {
      if (hitIds.has(i)) continue;
      const other = score(s.c, q, row.vector);
      expect(closer * (other - prev), `${where}: ${i} (${other}) is closer than the last hit (${prev})`).toBeGreaterThanOrEqual(-tol(prev));
    }
  }
}

/** Distinct live rows with the model's score and metadata, closest first; returns the last score. */
async function expectSoundHits(hits: QueryHit[], model: Model, s: Extract<Step, { t: 'query' }>, where: string): Promise<number | undefined> {
  const q = Float32Array.from(s.vector);
  const rows = model[s.c]!;
  // Closer first: a smaller l2 distance, a larger dot product.
  const closer = COLLECTIONS[s.c].metric === 'l2' ? 1 : -1;
  const tol = (x: number) => 1e-4 * (1 + Math.abs(x));
  expect(new Set(hits.map((h) => h.id)).size, `${where}: duplicate hits`).toBe(hits.length);
  let prev: number | undefined;
  for (const h of hits) {
    const row = rows.get(h.id);
    expect(row, `${where}: hit ${h.id} is not in the model`).toBeDefined();
    const want = score(s.c, q, row!.vector);
    expect(Math.abs(h.score - want), `${where}: score of ${h.id}: ${h.score} vs ${want}`).toBeLessThanOrEqual(tol(want));
    expect(h.metadata).toEqual(row!.metadata);
    if (prev !== undefined) expect(closer * (h.score - prev), `${where}: hits out of order`).toBeGreaterThanOrEqual(-tol(prev));
    prev = h.score;
  }
  return prev;
}

test('random_histories_match_in_memory_model', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 40 }), fc.constantFrom(512, 4096, 1 << 20), async (steps, walSegmentBytes) => {
      const dir = mkdtempSync(join(tmpdir(), 'cairn-model-'));
      let db = await open(dir, { walSegmentBytes });
      try {
        for (const c of COLLECTIONS) await db.createCollection(c.name, { dim: c.dim, metric: c.metric });
        const model: Model = [new Map(), new Map()];
        for (const [n, s] of steps.entries()) {
          const where = `step ${n} (${s.t})`;
          const touched = new Set<string>();
          const before = db.lastSeq;
          switch (s.t) {
            case 'upsert': {
              const { seq } = await db.collection(COLLECTIONS[s.c].name).upsert(s.recs);
              expect(seq).toBe(before + 1n);
              applySub(model, s, touched);
              break;
            }
            case 'delete': {
              const { seq } = await db.collection(COLLECTIONS[s.c].name).delete(s.ids);
              expect(seq).toBe(before + 1n);
              applySub(model, s, touched);
              break;
            }
            case 'batch': {
              const { seq } = await db.batch(
                s.ops.map((o) =>
                  o.t === 'upsert'
                    ? { collection: COLLECTIONS[o.c].name, op: 'upsert' as const, records: o.recs }
                    : { collection: COLLECTIONS[o.c].name, op: 'delete' as const, ids: o.ids },
                ),
              );
              // One batch is one sequence number, applied in order.
              expect(seq).toBe(before + 1n);
              for (const o of s.ops) applySub(model, o, touched);
              break;
            }
            case 'checkpoint':
              expect((await db.checkpoint()).seq).toBe(before);
              for (const c of [0, 1] as const) for (const i of IDS) touched.add(`${c}:${i}`);
              break;
            case 'reopen':
              await db.close();
              db = await open(dir, { sync: s.sync, walSegmentBytes });
              expect(db.lastSeq).toBe(before);
              expect(db.recoveryReport.tornTail).toBeNull();
              expect(db.recoveryReport.skipped).toEqual([]);
              for (const c of [0, 1] as const) for (const i of IDS) touched.add(`${c}:${i}`);
              break;
            case 'recreate': {
              const spec = COLLECTIONS[s.c];
              await db.dropCollection(spec.name);
              expect(() => db.collection(spec.name)).toThrow(expect.objectContaining({ code: 'CAIRN_NOT_FOUND' }));
              await db.createCollection(spec.name, { dim: spec.dim, metric: spec.metric });
              model[s.c]!.clear();
              for (const i of IDS) touched.add(`${s.c}:${i}`);
              break;
            }
            case 'query':
              await expectTopK(db, model, s, where);
              break;
          }
          await expectMatches(db, model, touched, where);
        }
        // Full comparison, then once more after a clean close and reopen.
        const all = [0, 1].flatMap((c) => IDS.map((i) => `${c}:${i}`));
        await expectMatches(db, model, all, 'end');
        expect(db.collections().map((c) => [c.name, c.count])).toEqual([
          ['c0', model[0]!.size],
          ['c1', model[1]!.size],
        ]);
        const last = db.lastSeq;
        await db.close();
        db = await open(dir, { walSegmentBytes });
        expect(db.lastSeq).toBe(last);
        await expectMatches(db, model, all, 'end, reopened');
      } finally {
        await db.close();
        rmSync(dir, { recursive: true, force: true });
      }
    }),
    { numRuns: Number(process.env.CAIRN_MODEL_RUNS ?? 100) },
  );
});

test('float32_views_store_their_own_bytes', async () => {
  // A subarray shares a larger buffer; only its own window may be stored.
  const dir = mkdtempSync(join(tmpdir(), 'cairn-model-'));
  const db = await open(dir);
  try {
    const c = await db.createCollection('v', { dim: 3, metric: 'l2' });
    const backing = Float32Array.of(9, 9, -0, 1.5, 3e38, 9, 9);
    await c.upsert([{ id: 'view', vector: backing.subarray(2, 5) }]);
    const got = await c.get('view');
    expect(Buffer.from(got!.vector.buffer, got!.vector.byteOffset, got!.vector.byteLength)).toEqual(Buffer.from(Float32Array.of(-0, 1.5, 3e38).buffer));
  } finally {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
