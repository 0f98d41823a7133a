// Read views answer as of their seq while writes, deletes, checkpoints and graph compaction go
// on; compared with a plain model of the rows at that seq (and a brute-force k-NN over it).
import { open, type Store, type StoreWarning } from 'cairndb';
import { afterEach, describe, expect, test } from 'vitest';

import { prng } from './fixtures/records.mjs';
import { rejection, tempDir } from './helpers.js';

const stores: Store[] = [];
afterEach(async () => {
  for (const s of stores.splice(0)) await s.close();
});

async function fresh(options: { maxViewAgeMs?: number } = {}): Promise<Store> {
  const db = await open(tempDir('cairn-view-'), { sync: 'none', ...options });
  stores.push(db);
  return db;
}

type Row = { vector: Float32Array; metadata: Record<string, unknown> };

function l2(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i]! - b[i]!) ** 2;
  return Math.sqrt(s);
}

/** Brute-force k-NN over the model: ids best first (ties by id, as the engine breaks them). */
function nearest(model: Map<string, Row>, q: Float32Array, k: number, keep: (r: Row) => boolean = () => true): string[] {
  return [...model]
    .filter(([, r]) => keep(r))
    .map(([id, r]) => [id, l2(q, r.vector)] as const)
    .sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : 1))
    .slice(0, k)
    .map(([id]) => id);
}

async function scanAll(c: { scan(o?: { vectors?: boolean }): AsyncIterable<{ id: string; metadata: Record<string, unknown> }> }) {
  const out: Array<[string, Record<string, unknown>]> = [];
  for await (const r of c.scan()) out.push([r.id, r.metadata]);
  return out;
}

describe('read views', () => {
  test('a_view_answers_get_getMany_count_scan_as_of_its_seq_across_writes_and_checkpoints', async () => {
    const db = await fresh();
    const docs = await db.createCollection('docs', { dim: 2, metric: 'l2' });
    await docs.upsert(Array.from({ length: 20 }, (_, i) => ({ id: `r${String(i).padStart(2, '0')}`, vector: [i, 0], metadata: { i, v: 0 } })));
    const view = db.readView();
    expect(view.seq).toBe(db.lastSeq);
    const vdocs = view.collection('docs');
    const before = await scanAll(vdocs);
    await docs.upsert([
      { id: 'r00', vector: [100, 0], metadata: { i: 0, v: 1 } },
      { id: 'new', vector: [5, 5], metadata: { v: 1 } },
    ]);
    await docs.delete(['r01', 'r02']);
    await db.checkpoint();
    await docs.delete(['r03']);
    await db.dropCollection('docs');
    await db.checkpoint();
    expect(db.stats().views).toMatchObject({ open: 1, oldestSeq: view.seq });
    expect(db.stats().views.pinnedVersions).toBeGreaterThan(0);

    expect(await scanAll(vdocs)).toEqual(before);
    expect(await vdocs.count()).toBe(20);
    expect(await vdocs.count({ filter: { v: 0 } })).toBe(20);
    expect((await vdocs.get('r00'))?.metadata).toEqual({ i: 0, v: 0 });
    expect(Array.from((await vdocs.get('r00'))?.vector ?? [])).toEqual([0, 0]);
    expect(await vdocs.get('new')).toBeUndefined();
    expect((await vdocs.getMany(['r01', 'r03', 'new'])).map((r) => r?.metadata.i ?? null)).toEqual([1, 3, null]);
    const hits = await vdocs.query([0, 0], { k: 3, exact: true });
    expect(hits.map((h) => h.id)).toEqual(['r00', 'r01', 'r02']);
    expect(view.collections().map((c) => [c.name, c.count])).toEqual([['docs', 20]]);

    // A second view of the new state sees none of it.
    const now = db.readView();
    expect(() => now.collection('docs')).toThrow(expect.objectContaining({ code: 'CAIRN_NOT_FOUND' }));
    now.release();

    view.release();
    view.release();
    expect(db.stats().views).toEqual({ open: 0, pinnedVersions: 0, oldestSeq: null });
    expect((await rejection(vdocs.count())).code).toBe('CAIRN_VIEW_RELEASED');
  });

  test('hnsw_queries_on_a_view_match_an_exact_search_as_of_its_seq_after_compaction', async () => {
    const db = await fresh();
    const dim = 8;
    const docs = await db.createCollection('docs', { dim, metric: 'l2', m: 12, efConstruction: 64 });
    const rand = prng(1601);
    const randomVector = () => Float32Array.from({ length: dim }, () => rand() * 2 - 1);
    const model = new Map<string, Row>();
    const N = 3000;
    for (let start = 0; start < N; start += 500) {
      const batch = Array.from({ length: 500 }, (_, j) => {
        const i = start + j;
        return { id: `id${i}`, vector: randomVector(), metadata: { i, g: i % 5, gen: 0 } };
      });
      for (const r of batch) model.set(r.id, { vector: r.vector, metadata: r.metadata });
      await docs.upsert(batch);
    }
    await docs.waitForIndex();
    await db.checkpoint();

    const view = db.readView();
    const vdocs = view.collection('docs');
    const compactionsBefore = compactions(await db.metrics());
    // After the view: move 1,200 rows, delete 600, add 300. Tombstones pass 30% of the graph.
    const moved = Array.from({ length: 1200 }, (_, j) => `id${j * 2}`);
    for (let s = 0; s < moved.length; s += 400) {
      await docs.upsert(moved.slice(s, s + 400).map((id) => ({ id, vector: randomVector(), metadata: { g: 9, gen: 1 } })));
    }
    await docs.delete(Array.from({ length: 600 }, (_, j) => `id${j * 2 + 1}`));
    await docs.upsert(Array.from({ length: 300 }, (_, j) => ({ id: `late${j}`, vector: randomVector(), metadata: { g: 1, gen: 1 } })));
    await docs.waitForIndex();
    for (let i = 0; i < 200 && compactions(await db.metrics()) === compactionsBefore; i++) await new Promise((r) => setTimeout(r, 50));
    expect(compactions(await db.metrics())).toBeGreaterThan(compactionsBefore);
    await db.checkpoint();

    expect(await vdocs.count()).toBe(N);
    expect(await vdocs.count({ filter: { g: 1 } })).toBe(N / 5);
    const scanned = await scanAll(vdocs);
    expect(scanned.length).toBe(N);
    expect(new Map(scanned)).toEqual(new Map([...model].map(([id, r]) => [id, r.metadata])));

    let agree = 0;
    const Q = 25;
    const k = 10;
    for (let q = 0; q < Q; q++) {
      const vq = randomVector();
      const truth = nearest(model, vq, k);
      const exact = await vdocs.query(vq, { k, exact: true });
      expect(exact.map((h) => h.id)).toEqual(truth);
      const filtered = await vdocs.query(vq, { k, exact: true, filter: { g: 1 } });
      expect(filtered.map((h) => h.id)).toEqual(nearest(model, vq, k, (r) => r.metadata.g === 1));
      const approx = await vdocs.query(vq, { k, ef: 128 });
      for (const h of approx) expect(h.metadata).toEqual(model.get(h.id)?.metadata);
      agree += approx.filter((h) => truth.includes(h.id)).length;
      const approxFiltered = await vdocs.query(vq, { k, ef: 128, filter: { g: 1 } });
      expect(approxFiltered.every((h) => model.get(h.id)?.metadata.g === 1)).toBe(true);
    }
    const recall = agree / (Q * k);
    expect(recall).toBeGreaterThan(0.9);

    // The live collection has moved on.
    expect(await docs.count()).toBe(N - 600 + 300);
    view.release();
    expect(db.stats().views.pinnedVersions).toBe(0);
  });

  test('a_view_older_than_maxViewAgeMs_is_released_with_a_warning', async () => {
    const db = await fresh({ maxViewAgeMs: 50 });
    const docs = await db.createCollection('docs', { dim: 2, metric: 'l2' });
    await docs.upsert([{ id: 'a', vector: [1, 1] }]);
    const warned = new Promise<StoreWarning>((resolve) => db.once('warning', resolve));
    const view = db.readView();
    const vdocs = view.collection('docs');
    await docs.upsert([{ id: 'a', vector: [2, 2] }]);
    expect(db.stats().views.pinnedVersions).toBe(1);
    const w = await warned;
    expect(w).toMatchObject({ code: 'CAIRN_VIEW_EXPIRED', seq: view.seq });
    expect(view.released).toBe(true);
    expect(db.stats().views).toEqual({ open: 0, pinnedVersions: 0, oldestSeq: null });
    expect((await rejection(vdocs.get('a'))).code).toBe('CAIRN_VIEW_RELEASED');
  });

  test('dispose_and_close_release_views', async () => {
    const db = await fresh();
    await db.createCollection('docs', { dim: 2, metric: 'l2' });
    {
      const view = db.readView();
      view[Symbol.dispose]();
      expect(view.released).toBe(true);
    }
    const held = db.readView();
    await db.close();
    expect(held.released).toBe(true);
  });
});

function compactions(metricsText: string): number {
  const line = metricsText.split('\n').find((l) => l.startsWith('cairn_index_compactions_total'));
  return Number(line?.split(' ').pop() ?? Number.NaN);
}
