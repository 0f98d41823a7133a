// `query` runs on Cairn's own query workers and settles through a threadsafe function per store
// (crates/cairn-node/src/query_worker.rs). Many queries in flight at once, on several stores and
// read views, each settle with their own answer, the same as querySync's; failures reject with
// their code; a query in flight keeps the process alive, and an idle store does not.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { type Collection, open, type QueryResult } from 'cairndb';
import { describe, expect, test } from 'vitest';

import { prng } from './fixtures/records.mjs';
import { rejectsWith, tempDir } from './helpers.js';

const DIM = 8;
const CAIRN = fileURLToPath(new URL('../packages/cairn/dist/index.js', import.meta.url));

function vectors(rand: () => number, n: number): Float32Array[] {
  return Array.from({ length: n }, () => Float32Array.from({ length: DIM }, () => rand() * 2 - 1));
}

async function fill(col: Collection, prefix: string, rand: () => number, n: number): Promise<void> {
  const rows = vectors(rand, n).map((vector, i) => ({ id: `${prefix}${i}`, vector, metadata: { i } }));
  await col.upsert(rows);
}

function idsOf(r: QueryResult): string[] {
  return r.map((h) => h.id);
}

describe('query workers', () => {
  test('hundreds_of_queries_in_flight_on_stores_and_views_each_settle_with_their_own_answer', async () => {
    const rand = prng(4242);
    const a = await open(tempDir(), { sync: 'none' });
    const b = await open(tempDir(), { sync: 'none' });
    try {
      const ca = await a.createCollection('a', { dim: DIM, metric: 'l2' });
      const cb = await b.createCollection('b', { dim: DIM, metric: 'cosine' });
      await fill(ca, 'a', rand, 3000);
      await fill(cb, 'b', rand, 3000);
      const view = a.readView();
      // Written after the view: the view's answers must not see them, the store's must.
      await fill(ca, 'late', rand, 500);
      // Indexed first, so that both calls search the same graph: a row that moves from the
      // exactly scanned pending set into the graph between them can score a last bit apart.
      await ca.waitForIndex();
      await cb.waitForIndex();
      const va = view.collection('a');
      const readers = [ca, cb, va];
      const probes = vectors(rand, 300);
      const options = [{ k: 5 }, { k: 10, ef: 16 }, { k: 3, exact: true }, { k: 7, filter: { i: { $lt: 100 } } }];
      const launched = probes.map((v, i) => {
        const reader = readers[i % readers.length]!;
        const opts = options[i % options.length]!;
        return reader.query(v, opts).then((r) => ({ r, expected: reader.querySync(v, opts), reader, opts }));
      });
      const settled = await Promise.all(launched);
      expect(settled).toHaveLength(probes.length);
      let lateSeen = 0;
      for (const [i, { r, expected, reader }] of settled.entries()) {
        expect(idsOf(r), `query ${i}`).toEqual(idsOf(expected));
        expect(r).toEqual(expected);
        if (reader === va) expect(r.every((h) => !h.id.startsWith('late'))).toBe(true);
        if (reader === ca) lateSeen += r.filter((h) => h.id.startsWith('late')).length;
      }
      expect(lateSeen, 'the store sees rows written after the view').toBeGreaterThan(0);
      view.release();
      // Failures reject with their code, between successes, and the workers go on.
      await a.dropCollection('a');
      const after = await Promise.allSettled([cb.query(probes[0]!, { k: 1 }), ca.query(probes[1]!, { k: 1 }), cb.query(probes[2]!, { k: 1 })]);
      expect(after.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
      await rejectsWith(ca.query(probes[1]!, { k: 1 }), 'CAIRN_NOT_FOUND');
    } finally {
      await a.close();
      await b.close();
    }
    // A query in flight when its store closes answers or rejects with CAIRN_CLOSED; one sent
    // after the close rejects.
    const c = await open(tempDir(), { sync: 'none' });
    const col = await c.createCollection('c', { dim: DIM, metric: 'l2' });
    await fill(col, 'c', rand, 10);
    const inFlight = col.query(vectors(rand, 1)[0]!, { k: 1 }).then(
      (r) => `answered ${r.length}`,
      (e: { code?: string }) => e.code,
    );
    await c.close();
    expect(['answered 1', 'CAIRN_CLOSED']).toContain(await inFlight);
    await rejectsWith(col.query(vectors(rand, 1)[0]!, { k: 1 }), 'CAIRN_CLOSED');
  });

  test('a_query_in_flight_keeps_the_process_alive_and_an_idle_store_does_not', async () => {
    // No close and no timer: only the query in flight can keep the event loop alive until its
    // answer prints; afterwards nothing may keep it alive.
    const script = `
      const { open } = await import(${JSON.stringify(CAIRN)});
      const db = await open(${JSON.stringify(tempDir())}, { sync: 'none' });
      const col = await db.createCollection('c', { dim: 2, metric: 'l2' });
      await col.upsert([{ id: 'near', vector: [0, 0] }, { id: 'far', vector: [9, 9] }]);
      col.query([0.1, 0], { k: 1 }).then((hits) => console.log('answer ' + hits[0].id));
    `;
    const result = await new Promise<{ code: number | null; signal: string | null; out: string }>((resolve, reject) => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      child.on('error', reject);
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, out });
      });
    });
    expect(result).toEqual({ code: 0, signal: null, out: 'answer near\n' });
  });
});
