// Model test: transactions (held open while other work happens), plain writes, read views and
// checkpoints interleaved at random, against a reference with snapshot semantics: a view's
// answers never change; a transaction conflicts exactly when an id it read or wrote was
// written after its snapshot; a committed one appears whole at one seq; an aborted one, a
// thrown one and a conflicting one leave no trace.
import { type CairnError, open, type Store, type Transaction } from 'cairndb';
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';

import { tempDir } from './helpers.js';

const IDS = ['a', 'b', 'c', 'd', 'e'] as const;
const SLOTS = 3;

type Step =
  | { t: 'put'; id: string; v: number }
  | { t: 'del'; id: string }
  | { t: 'begin'; slot: number; reads: string[]; many: boolean; writes: Array<{ id: string; v: number | null }> }
  | { t: 'end'; slot: number; how: 'commit' | 'abort' | 'throw' }
  | { t: 'view'; slot: number }
  | { t: 'check'; slot: number }
  | { t: 'release'; slot: number }
  | { t: 'checkpoint' };

const id = fc.constantFrom(...IDS);
const slot = fc.integer({ min: 0, max: SLOTS - 1 });
const value = fc.integer({ min: 1, max: 1000 });
const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ t: fc.constant('put' as const), id, v: value }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('del' as const), id }) },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant('begin' as const),
      slot,
      reads: fc.uniqueArray(id, { maxLength: 3 }),
      many: fc.boolean(),
      writes: fc.uniqueArray(fc.record({ id, v: fc.option(value, { nil: null }) }), { maxLength: 3, selector: (w) => w.id }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant('end' as const),
      slot,
      how: fc.constantFrom('commit' as const, 'commit' as const, 'abort' as const, 'throw' as const),
    }),
  },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('view' as const), slot }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('check' as const), slot }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('release' as const), slot }) },
  { weight: 1, arbitrary: fc.constant({ t: 'checkpoint' as const }) },
);

interface OpenTx {
  snapshotSeq: bigint;
  snapshot: Map<string, number>;
  step: Extract<Step, { t: 'begin' }>;
  /** What the function read, once its reads are done. */
  read: Promise<Array<number | null>>;
  go: (how: 'commit' | 'abort' | 'throw') => void;
  outcome: Promise<{ ok: true } | { ok: false; error: unknown }>;
}

const THROWN = new Error('thrown by the transaction function');

async function state(c: { getMany(ids: string[]): Promise<Array<{ metadata: Record<string, unknown> } | undefined>> }): Promise<Array<number | null>> {
  return (await c.getMany([...IDS])).map((r) => (r ? (r.metadata.v as number) : null));
}

function modelState(m: Map<string, number>): Array<number | null> {
  return IDS.map((i) => m.get(i) ?? null);
}

async function run(db: Store, steps: Step[]): Promise<void> {
  const docs = db.collection('docs');
  const rows = new Map<string, number>();
  const lastWrite = new Map<string, bigint>();
  const txs: Array<OpenTx | null> = Array(SLOTS).fill(null);
  const views: Array<{ view: ReturnType<Store['readView']>; model: Map<string, number>; count: number } | null> = Array(SLOTS).fill(null);
  const wrote = (ids: Iterable<string>, seq: bigint) => {
    for (const i of ids) lastWrite.set(i, seq);
  };

  for (const s of steps) {
    switch (s.t) {
      case 'put': {
        const { seq } = await docs.upsert([{ id: s.id, vector: [s.v, 0], metadata: { v: s.v } }]);
        rows.set(s.id, s.v);
        wrote([s.id], seq);
        break;
      }
      case 'del': {
        const { seq } = await docs.delete([s.id]);
        // A delete of a missing id changes nothing, so it conflicts with nobody.
        if (rows.delete(s.id)) wrote([s.id], seq);
        break;
      }
      case 'begin': {
        if (txs[s.slot]) break;
        let readDone!: (v: Array<number | null>) => void;
        const read = new Promise<Array<number | null>>((r) => {
          readDone = r;
        });
        let go!: (how: 'commit' | 'abort' | 'throw') => void;
        const gate = new Promise<'commit' | 'abort' | 'throw'>((r) => {
          go = r;
        });
        const snapshotSeq = db.lastSeq;
        const outcome = db
          .transaction(async (tx: Transaction) => {
            const c = tx.collection('docs');
            const got = s.many ? await c.getMany(s.reads) : await Promise.all(s.reads.map((i) => c.get(i)));
            readDone(got.map((r) => (r ? (r.metadata.v as number) : null)));
            const how = await gate;
            const ups = s.writes.filter((w) => w.v !== null);
            if (ups.length > 0) await c.upsert(ups.map((w) => ({ id: w.id, vector: [w.v as number, 0], metadata: { v: w.v } })));
            const dels = s.writes.filter((w) => w.v === null).map((w) => w.id);
            if (dels.length > 0) await c.delete(dels);
            if (how === 'abort') tx.abort();
            if (how === 'throw') throw THROWN;
          })
          .then(
            () => ({ ok: true as const }),
            (error: unknown) => ({ ok: false as const, error }),
          );
        txs[s.slot] = { snapshotSeq, snapshot: new Map(rows), step: s, read, go, outcome };
        expect(await read).toEqual(s.reads.map((i) => rows.get(i) ?? null));
        break;
      }
      case 'end': {
        const tx = txs[s.slot];
        if (!tx) break;
        txs[s.slot] = null;
        const before = db.lastSeq;
        tx.go(s.how);
        const out = await tx.outcome;
        const touched = [...tx.step.reads, ...tx.step.writes.map((w) => w.id)];
        const conflict = touched.some((i) => (lastWrite.get(i) ?? 0n) > tx.snapshotSeq);
        if (s.how === 'abort') {
          expect(out.ok).toBe(false);
          expect((out as { error: CairnError }).error.code).toBe('CAIRN_ABORTED');
        } else if (s.how === 'throw') {
          expect(out).toEqual({ ok: false, error: THROWN });
        } else if (tx.step.writes.length === 0) {
          // Read-only: nothing to commit, nothing to validate (consistent as of the snapshot).
          expect(out.ok).toBe(true);
        } else if (conflict) {
          expect(out.ok).toBe(false);
          expect((out as { error: CairnError }).error.code).toBe('CAIRN_CONFLICT');
        } else {
          expect(out).toEqual({ ok: true });
          // One record: the whole write set at the next seq.
          expect(db.lastSeq).toBe(before + 1n);
          // As for a plain delete, deleting a missing id changes nothing: no conflict with it.
          const changed = tx.step.writes.filter((w) => w.v !== null || rows.has(w.id)).map((w) => w.id);
          for (const w of tx.step.writes) {
            if (w.v === null) rows.delete(w.id);
            else rows.set(w.id, w.v);
          }
          wrote(changed, db.lastSeq);
        }
        if (!(s.how === 'commit' && out.ok && tx.step.writes.length > 0)) expect(db.lastSeq).toBe(before);
        expect(await state(docs)).toEqual(modelState(rows));
        break;
      }
      case 'view': {
        if (views[s.slot]) break;
        const view = db.readView();
        views[s.slot] = { view, model: new Map(rows), count: rows.size };
        break;
      }
      case 'check': {
        const v = views[s.slot];
        if (!v) break;
        const vc = v.view.collection('docs');
        expect(await state(vc)).toEqual(modelState(v.model));
        expect(await vc.count()).toBe(v.count);
        const scanned: string[] = [];
        for await (const r of vc.scan()) scanned.push(`${r.id}=${r.metadata.v}`);
        expect(scanned).toEqual([...v.model].sort(([x], [y]) => (x < y ? -1 : 1)).map(([i, n]) => `${i}=${n}`));
        break;
      }
      case 'release': {
        views[s.slot]?.view.release();
        views[s.slot] = null;
        break;
      }
      case 'checkpoint':
        await db.checkpoint();
        break;
    }
  }
  for (const tx of txs) {
    if (!tx) continue;
    tx.go('abort');
    await tx.outcome;
  }
  for (const v of views) v?.view.release();
  expect(await state(docs)).toEqual(modelState(rows));
  expect(db.stats().views).toEqual({ open: 0, pinnedVersions: 0, oldestSeq: null });
}

describe('transactions and views against a snapshot model', () => {
  test('interleaved_transactions_writes_views_checkpoints_match_the_model', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 5, maxLength: 40 }), async (steps) => {
        const db = await open(tempDir('cairn-txmodel-'), { sync: 'none' });
        try {
          await db.createCollection('docs', { dim: 2, metric: 'l2' });
          await run(db, steps);
        } finally {
          await db.close();
        }
      }),
      { numRuns: 40 },
    );
  });
});
