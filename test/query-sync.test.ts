// querySync is query on the calling thread: for the same store, vector and options it returns the
// same hits (ids, scores, distances, metadata) and the same `skipped`, and it fails with the
// same codes and messages (thrown instead of rejected), on collections and read views alike.
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { CairnError, type Collection, type Filter, open, type QueryOptions, type QueryResult } from 'cairndb';
import { describe, expect, test } from 'vitest';

import { prng } from './fixtures/records.mjs';
import { rejectsWith, SEG_HEADER, segRecords, tempDir } from './helpers.js';

const DIM = 16;

type Reader = Pick<Collection, 'query' | 'querySync'>;

function randomVector(rand: () => number): Float32Array {
  return Float32Array.from({ length: DIM }, () => rand() * 2 - 1);
}

/** Rows r0..r(n-1) with metadata that the filters below select on. */
async function fill(col: Collection, n: number, rand: () => number): Promise<void> {
  for (let from = 0; from < n; from += 100) {
    const records = [];
    for (let i = from; i < Math.min(n, from + 100); i++) {
      records.push({ id: `r${i}`, vector: randomVector(rand), metadata: { g: i % 5, n: i, tags: [`t${i % 3}`], nested: { odd: i % 2 === 1 } } });
    }
    await col.upsert(records);
  }
  await col.waitForIndex();
}

/** What both calls return for one vector and options, checked to be the same. */
async function expectSame(col: Reader, vector: Float32Array, options: QueryOptions): Promise<QueryResult> {
  const viaAsync = await col.query(vector, options);
  const viaSync = col.querySync(vector, options);
  expect(viaSync).toEqual(viaAsync);
  expect(viaSync.map((h) => [h.id, h.score, h.distance])).toEqual(viaAsync.map((h) => [h.id, h.score, h.distance]));
  expect(viaSync.skipped).toEqual(viaAsync.skipped);
  return viaSync;
}

const FILTERS: Filter[] = [
  { g: 2 },
  { n: { $gte: 100, $lt: 250 } },
  { $or: [{ g: 1 }, { 'nested.odd': true }] },
  { tags: { $in: ['t0'] } },
  { $not: { g: { $in: [0, 1, 2] } } },
];

describe('querySync', () => {
  test('querysync_matches_query_on_random_data_for_every_metric', async () => {
    const db = await open(tempDir(), { sync: 'none' });
    try {
      for (const metric of ['l2', 'cosine', 'ip'] as const) {
        const rand = prng(metric.length * 7919);
        const col = await db.createCollection(`docs-${metric}`, { dim: DIM, metric });
        await fill(col, 400, rand);
        for (let q = 0; q < 20; q++) {
          const v = randomVector(rand);
          for (const options of [{ k: 10, ef: 8 }, { k: 10 }, { k: 7, ef: 128 }, { k: 10, exact: true }, { k: 500 }]) {
            const hits = await expectSame(col, v, options);
            expect(hits).toHaveLength(Math.min(options.k, 400));
            for (const h of hits) expect(h.distance).toBe(metric === 'l2' ? h.score : 1 - h.score);
          }
        }
        // A plain array of numbers is accepted by both, as a Float32Array is.
        await expectSame(col, Array.from(randomVector(rand)) as unknown as Float32Array, { k: 5 });
      }
    } finally {
      await db.close();
    }
  });

  test('querysync_matches_query_with_filters_indexed_or_not', async () => {
    const db = await open(tempDir(), { sync: 'none' });
    try {
      const rand = prng(11);
      const col = await db.createCollection('docs', { dim: DIM, metric: 'l2' });
      await fill(col, 400, rand);
      for (const indexed of [false, true]) {
        if (indexed) {
          await col.createIndex('g', { type: 'number' });
          await col.createIndex('n', { type: 'number' });
        }
        for (const filter of FILTERS) {
          for (let q = 0; q < 5; q++) {
            const v = randomVector(rand);
            for (const options of [
              { k: 10, filter },
              { k: 10, ef: 16, filter },
              { k: 10, exact: true, filter },
            ]) {
              const hits = await expectSame(col, v, options);
              expect(hits.length).toBeGreaterThan(0);
            }
          }
        }
        // Every hit matches: spot-check the simplest filter.
        const only2 = col.querySync(randomVector(rand), { k: 50, filter: { g: 2 } });
        expect(only2).toHaveLength(50);
        for (const h of only2) expect(h.metadata.g).toBe(2);
      }
    } finally {
      await db.close();
    }
  });

  test('querysync_matches_query_after_deletes_and_never_returns_a_deleted_row', async () => {
    const db = await open(tempDir(), { sync: 'none' });
    try {
      const rand = prng(5);
      const col = await db.createCollection('docs', { dim: DIM, metric: 'cosine' });
      await fill(col, 300, rand);
      const deleted = Array.from({ length: 100 }, (_, i) => `r${i * 3}`);
      await col.delete(deleted);
      await col.waitForIndex();
      const gone = new Set(deleted);
      for (let q = 0; q < 20; q++) {
        for (const options of [{ k: 20 }, { k: 20, ef: 10 }, { k: 20, exact: true }, { k: 20, filter: { g: 3 } }]) {
          const hits = await expectSame(col, randomVector(rand), options);
          expect(hits).toHaveLength(20);
          for (const h of hits) expect(gone.has(h.id), h.id).toBe(false);
        }
      }
      const all = col.querySync(randomVector(rand), { k: 1000, exact: true });
      expect(all).toHaveLength(200);
    } finally {
      await db.close();
    }
  });

  test('querysync_on_a_read_view_answers_as_of_the_view', async () => {
    const db = await open(tempDir(), { sync: 'none' });
    try {
      const rand = prng(23);
      const col = await db.createCollection('docs', { dim: DIM, metric: 'l2' });
      await fill(col, 300, rand);
      const probes = Array.from({ length: 10 }, () => randomVector(rand));
      const options: QueryOptions[] = [{ k: 10 }, { k: 10, exact: true }, { k: 10, filter: { g: 4 } }];
      const before = probes.map((v) => options.map((o) => col.querySync(v, o)));
      const view = db.readView();
      try {
        const vcol = view.collection('docs');
        // Writes after the view: the nearest rows to each probe deleted, new rows on the probes.
        await col.delete(before.flatMap((r) => r[0]!.slice(0, 3).map((h) => h.id)));
        await col.upsert(probes.map((v, i) => ({ id: `new${i}`, vector: v, metadata: { g: 4, n: -1 } })));
        await col.waitForIndex();
        for (const [i, v] of probes.entries()) {
          for (const [j, o] of options.entries()) {
            const hits = await expectSame(vcol, v, o);
            expect(hits).toEqual(before[i]![j]);
          }
          // The live collection sees the writes; the view does not.
          expect(col.querySync(v, { k: 1 })[0]!.id).toBe(`new${i}`);
        }
        view.release();
        expect(() => vcol.querySync(probes[0]!, { k: 1 })).toThrow(expect.objectContaining({ code: 'CAIRN_VIEW_RELEASED' }));
        await rejectsWith(vcol.query(probes[0]!, { k: 1 }), 'CAIRN_VIEW_RELEASED');
      } finally {
        view.release();
      }
    } finally {
      await db.close();
    }
  });

  test('querysync_throws_what_query_rejects_with_naming_the_field', async () => {
    const db = await open(tempDir(), { sync: 'none' });
    try {
      const rand = prng(3);
      const col = await db.createCollection('docs', { dim: DIM, metric: 'l2' });
      await fill(col, 20, rand);
      const good = randomVector(rand);
      const nan = good.slice();
      nan[3] = Number.NaN;
      const cases: Array<[field: string, vector: unknown, options: unknown]> = [
        ['options', good, undefined],
        ['options', good, null],
        ['options', good, [10]],
        ['options.k', good, {}],
        ['options.k', good, { k: 0 }],
        ['options.k', good, { k: 1.5 }],
        ['options.k', good, { k: '10' }],
        ['options.k', good, { k: 100_001 }],
        ['options.ef', good, { k: 10, ef: 0 }],
        ['options.ef', good, { k: 10, ef: 'wide' }],
        ['options.exact', good, { k: 10, exact: 'yes' }],
        ['options.efSearch', good, { k: 10, efSearch: 64 }],
        // Operators are checked natively, which names the path inside the filter.
        ["filter at 'g'", good, { k: 10, filter: { g: { $near: 1 } } }],
        ['options.filter', good, { k: 10, filter: 'g = 1' }],
        ['vector', good.subarray(1), { k: 10 }],
        ['vector[3]', nan, { k: 10 }],
        ['vector', 'not a vector', { k: 10 }],
        ['vector[0]', ['x', ...Array(DIM - 1).fill(0)], { k: 10 }],
      ];
      for (const [field, vector, options] of cases) {
        const label = `${field}: ${JSON.stringify(options)}`;
        const rejected = await rejectsWith(col.query(vector as Float32Array, options as QueryOptions), 'CAIRN_INVALID_ARGUMENT');
        let thrown: unknown;
        try {
          col.querySync(vector as Float32Array, options as QueryOptions);
        } catch (e) {
          thrown = e;
        }
        expect(thrown, label).toBeInstanceOf(CairnError);
        expect((thrown as CairnError).code, label).toBe('CAIRN_INVALID_ARGUMENT');
        expect((thrown as CairnError).message, label).toBe(rejected.message);
        expect((thrown as CairnError).message, label).toContain(field);
      }
    } finally {
      await db.close();
    }
  });

  test('querysync_skips_an_unreadable_checkpoint_record_as_query_does', async () => {
    const dir = tempDir();
    const rand = prng(77);
    let db = await open(dir, { sync: 'none' });
    const col = await db.createCollection('docs', { dim: DIM, metric: 'l2' });
    const vectors = new Map<string, Float32Array>();
    const records = Array.from({ length: 200 }, (_, i) => {
      const vector = randomVector(rand);
      vectors.set(`r${i}`, vector);
      return { id: `r${i}`, vector, metadata: { g: i % 5 } };
    });
    await col.upsert(records);
    await db.checkpoint();
    await db.close();
    // Without the WAL that wrote them, damaged checkpoint records cannot be repaired.
    for (const name of readdirSync(join(dir, 'wal-archive'))) rmSync(join(dir, 'wal-archive', name));
    const segs = readdirSync(join(dir, 'data')).filter((n) => n.endsWith('.seg'));
    expect(segs).toHaveLength(1);
    const seg = join(dir, 'data', segs[0]!);
    const buf = readFileSync(seg);
    // Upsert records (kind 1) hold their vector at +32 and their id after it (docs/format.md,
    // "Segment file"): flip one bit inside the vector of two of them.
    const upserts = segRecords(buf).filter((r) => buf[r.offset + 4] === 1);
    expect(upserts.length).toBe(200);
    expect(upserts[0]!.offset).toBe(SEG_HEADER);
    const victims = [upserts[10]!, upserts[150]!].map((r) => {
      const idAt = r.offset + 32 + DIM * 4;
      return { offset: r.offset, id: buf.toString('utf8', idAt, idAt + buf.readUInt16LE(r.offset + 16)) };
    });
    for (const v of victims) buf[v.offset + 32 + 9]! ^= 1 << 4;
    writeFileSync(seg, buf);
    const ids = victims.map((v) => v.id).sort();

    db = await open(dir);
    try {
      expect(db.recoveryReport.unreadableRecords.map((u) => u.id).sort()).toEqual(ids);
      const docs = db.collection('docs');
      for (const victim of ids) {
        // The victim's own vector: it would be the nearest hit; it is skipped and reported instead.
        const probe = vectors.get(victim)!;
        for (const options of [{ k: 5 }, { k: 5, ef: 8 }, { k: 5, exact: true }, { k: 5, filter: { g: { $gte: 0 } } }]) {
          const hits = await expectSame(docs, probe, options);
          expect(hits).toHaveLength(5);
          expect(hits.map((h) => h.id)).not.toContain(victim);
          expect(hits.skipped.map((s) => s.id).sort()).toEqual(ids);
          for (const s of hits.skipped) expect(s.reason).not.toBe('');
        }
      }
      const view = db.readView();
      try {
        const hits = await expectSame(view.collection('docs'), vectors.get(ids[0]!)!, { k: 3 });
        expect(hits.skipped.map((s) => s.id).sort()).toEqual(ids);
      } finally {
        view.release();
      }
    } finally {
      await db.close();
    }
  });

  test('querysync_on_a_closed_store_throws_cairn_closed', async () => {
    const db = await open(tempDir(), { sync: 'none' });
    const col = await db.createCollection('docs', { dim: DIM, metric: 'l2' });
    await fill(col, 10, prng(1));
    const v = randomVector(prng(2));
    expect(col.querySync(v, { k: 3 })).toHaveLength(3);
    await db.close();
    expect(() => col.querySync(v, { k: 3 })).toThrow(expect.objectContaining({ code: 'CAIRN_CLOSED' }));
    await rejectsWith(col.query(v, { k: 3 }), 'CAIRN_CLOSED');
  });
});
