// The HNSW path through the public API, checked against exact search (the ground truth):
// recall as a number, visibility of unindexed rows, deletes and updates, index loss and
// corruption leading to a rebuild with correct answers, and the event loop staying free.
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { type Collection, open } from 'cairndb';
import { describe, expect, it } from 'vitest';

import { tempDir } from './helpers.js';

const DIM = 128;

/**
 * Seeded gaussian mixture: 50 fixed centres, unit-variance noise around them. `seed` varies
 * the points, not the centres, so queries come from the same distribution as the data.
 */
function mixture(n: number, seed: number, clusters = 50): Float32Array[] {
  let s = 12345;
  const rnd = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const gauss = () => Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd());
  const centres = Array.from({ length: clusters }, () => Float32Array.from({ length: DIM }, () => gauss() * 4));
  s = seed >>> 0;
  return Array.from({ length: n }, (_, i) => Float32Array.from(centres[i % clusters]!, (c) => c + gauss()));
}

async function ingest(col: Collection, vectors: Float32Array[], prefix: string, from = 0): Promise<void> {
  for (let s = 0; s < vectors.length; s += 5_000) {
    await col.upsert(vectors.slice(s, s + 5_000).map((v, j) => ({ id: `${prefix}${from + s + j}`, vector: v, metadata: { g: (from + s + j) % 10 } })));
  }
}

async function recallAt10(col: Collection, queries: Float32Array[], ef: number): Promise<number> {
  let found = 0;
  for (const q of queries) {
    const approx = await col.query(q, { k: 10, ef });
    const exact = new Set((await col.query(q, { k: 10, exact: true })).map((h) => h.id));
    found += approx.filter((h) => exact.has(h.id)).length;
  }
  return found / (queries.length * 10);
}

describe('hnsw recall on a 20k x 128 gaussian mixture', () => {
  const dir = tempDir('cairn-hnsw-');
  const data = mixture(20_000, 7);
  const queries = mixture(200, 99);

  it('recall_at_10_after_build_is_at_least_0_95_at_ef_64', async () => {
    const db = await open(dir);
    const col = await db.createCollection('v', { dim: DIM, metric: 'l2', m: 16, efConstruction: 200 });
    await ingest(col, data, 'v');
    await col.waitForIndex();
    const stats = col.indexStats();
    expect(stats.indexed).toBe(20_000);
    expect(stats.pending).toBe(0);
    const recall = await recallAt10(col, queries, 64);
    expect(recall).toBeGreaterThanOrEqual(0.95);
    await db.checkpoint();
    await db.close();
  });

  it('recall_holds_after_reopen_without_a_rebuild', async () => {
    const db = await open(dir);
    expect(db.recoveryReport.indexRebuilds).toEqual([]);
    const col = db.collection('v');
    expect(col.indexStats()).toMatchObject({ indexed: 20_000, pending: 0 });
    expect(await recallAt10(col, queries, 64)).toBeGreaterThanOrEqual(0.95);
    await db.close();
  });

  it('recall_holds_after_30_percent_deletes_then_inserts', async () => {
    const db = await open(dir);
    const col = db.collection('v');
    const doomed = Array.from({ length: 6_000 }, (_, i) => `v${i * 3}`);
    for (let s = 0; s < doomed.length; s += 1_000) await col.delete(doomed.slice(s, s + 1_000));
    await ingest(col, mixture(6_000, 1234), 'n');
    await col.waitForIndex();
    expect(await col.count()).toBe(20_000);
    const gone = new Set(doomed);
    for (const q of queries.slice(0, 50)) {
      for (const h of await col.query(q, { k: 10 })) expect(gone.has(h.id)).toBe(false);
    }
    expect(await recallAt10(col, queries, 64)).toBeGreaterThanOrEqual(0.95);
    await db.close();
  });
});

describe('visibility against the exact-search model', () => {
  it('unindexed_rows_deletes_and_updates_are_visible_at_once', async () => {
    const db = await open(tempDir());
    const col = await db.createCollection('v', { dim: DIM, metric: 'cosine' });
    const base = mixture(6_000, 3);
    await ingest(col, base, 'b');
    await col.waitForIndex();
    // Writes right after: acknowledged, most of them not yet in the graph.
    const fresh = mixture(3_000, 4);
    await ingest(col, fresh, 'f');
    for (let i = 0; i < 20; i++) {
      const hits = await col.query(fresh[i * 100]!, { k: 1 });
      expect(hits[0]?.id).toBe(`f${i * 100}`);
    }
    // A delete is never returned once acknowledged.
    await col.delete(['f0', 'b1']);
    expect((await col.query(fresh[0]!, { k: 5 })).map((h) => h.id)).not.toContain('f0');
    expect((await col.query(base[1]!, { k: 5 })).map((h) => h.id)).not.toContain('b1');
    // An updated vector is found at its new position, not at the old one.
    await col.upsert([{ id: 'b2', vector: fresh[500]!, metadata: { moved: true } }]);
    const atNew = await col.query(fresh[500]!, { k: 2 });
    expect(atNew.map((h) => h.id)).toContain('b2');
    expect((await col.query(base[2]!, { k: 1 }))[0]?.id).not.toBe('b2');
    // Filtered search returns k matches whenever k exist, selective or not.
    for (const filter of [{ g: 3 }, { moved: true }]) {
      const want = (await col.query(base[10]!, { k: 10, exact: true, filter })).map((h) => h.id);
      const got = await col.query(base[10]!, { k: 10, filter });
      expect(got.length).toBe(want.length);
      for (const h of got) expect(h.metadata).toMatchObject(filter);
    }
    await db.close();
  });
});

describe('index loss and corruption', () => {
  async function buildStore(): Promise<{ dir: string; data: Float32Array[] }> {
    const dir = tempDir();
    const db = await open(dir);
    const col = await db.createCollection('v', { dim: DIM, metric: 'l2' });
    const data = mixture(8_000, 11);
    await ingest(col, data, 'v');
    await col.waitForIndex();
    await db.checkpoint();
    await db.close();
    return { dir, data };
  }

  const graphFile = (dir: string) => {
    const name = readdirSync(join(dir, 'data')).find((n) => n.endsWith('.hnsw'));
    expect(name).toBeDefined();
    return join(dir, 'data', name!);
  };

  for (const damage of ['missing', 'flipped bit', 'truncated'] as const) {
    it(`a_${damage.replace(' ', '_')}_index_file_is_rebuilt_and_answers_stay_correct`, async () => {
      const { dir, data } = await buildStore();
      const file = graphFile(dir);
      if (damage === 'missing') rmSync(file);
      else {
        const bytes = readFileSync(file);
        if (damage === 'flipped bit') bytes[Math.floor(bytes.length / 2)]! ^= 0x10;
        writeFileSync(file, damage === 'truncated' ? bytes.subarray(0, bytes.length - 100) : bytes);
      }
      const db = await open(dir);
      const events: unknown[] = [];
      db.on('index-rebuild', (e) => events.push(e));
      expect(db.recoveryReport.indexRebuilds.map((r) => r.collection)).toEqual(['v']);
      const col = db.collection('v');
      // Meanwhile, answers are exact: rows not yet in the graph are scanned.
      for (let i = 0; i < 20; i++) {
        const q = data[i * 97]!;
        const got = (await col.query(q, { k: 5 })).map((h) => h.id);
        const want = (await col.query(q, { k: 5, exact: true })).map((h) => h.id);
        expect(got).toEqual(want);
      }
      await col.waitForIndex();
      expect(col.indexStats()).toMatchObject({ indexed: 8_000, pending: 0 });
      expect(events).toHaveLength(1);
      await db.close();
    });
  }
});

describe('search runs off the event loop', () => {
  it('a_timer_fires_while_a_long_batch_query_runs', async () => {
    const db = await open(tempDir());
    const col = await db.createCollection('v', { dim: DIM, metric: 'l2' });
    const data = mixture(10_000, 21);
    await ingest(col, data, 'v');
    await col.waitForIndex();
    const queries = mixture(2_000, 22);
    let timerFiredAt = 0;
    let batchDoneAt = 0;
    setTimeout(() => {
      timerFiredAt = performance.now();
    }, 1);
    const results = await col.queryBatch(queries, { k: 10, ef: 200, exact: true });
    batchDoneAt = performance.now();
    expect(results).toHaveLength(2_000);
    expect(results[0]).toHaveLength(10);
    expect(timerFiredAt).toBeGreaterThan(0);
    expect(timerFiredAt).toBeLessThan(batchDoneAt);
    await db.close();
  });
});
