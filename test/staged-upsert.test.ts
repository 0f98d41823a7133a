// Upserts of at least STAGE_MIN_RECORDS records are handed to the commit thread in chunks as they
// are encoded (staged_batch.rs); each must still commit as one batch: one seq, every row as
// written, the same validation errors with nothing written, and after a SIGKILL no batch half
// there and no acknowledged batch missing.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { type Collection, open, type Store } from 'cairndb';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { STAGE_MIN_RECORDS, stageChunkRecords } from '../packages/cairn/dist/upsert-payload.js';
import { childLines } from './child-lines.js';
import { prng } from './fixtures/records.mjs';
import { BATCH, stagedVector } from './fixtures/staged-batches.mjs';
import { rejectsWith, tempDir } from './helpers.js';

const WRITER = fileURLToPath(new URL('./fixtures/staged-writer.mjs', import.meta.url));
const DIM = 3;
/** Several full chunks of the largest size and a short last one. */
const N = 5017;
const CHUNK = stageChunkRecords(N);
const KILL_CYCLES = 5;

describe('staged upserts', () => {
  let db: Store;
  let col: Collection;

  beforeAll(async () => {
    db = await open(tempDir());
    col = await db.createCollection('c', { dim: DIM, metric: 'l2' });
  });
  afterAll(() => db.close());

  test('a large upsert is one batch with one seq, and every row reads back as written, in both forms', async () => {
    const before = db.lastSeq;
    const { seq } = await col.upsert(Array.from({ length: N }, (_, i) => ({ id: `r${i}`, vector: [i, -i, 0.5], metadata: { i } })));
    expect(seq).toBe(before + 1n);
    const ids = Array.from({ length: N }, (_, i) => `c${i}`);
    const vectors = new Float32Array(N * DIM).map((_, j) => j / 4);
    expect((await col.upsert({ ids, vectors })).seq).toBe(seq + 1n);
    expect(await col.count()).toBe(2 * N);
    for (const i of [0, CHUNK - 1, CHUNK, 2 * CHUNK + 1, N - 1]) {
      const r = await col.get(`r${i}`);
      expect(Array.from(r!.vector)).toEqual([i, -i, 0.5]);
      expect(r!.metadata).toEqual({ i });
      const c = await col.get(`c${i}`);
      expect(Array.from(c!.vector)).toEqual(Array.from(vectors.subarray(i * DIM, (i + 1) * DIM)));
      expect(c!.metadata).toEqual({});
    }
  });

  test('the smallest staged batch, in chunks of the smallest size, is one batch too', async () => {
    const n = STAGE_MIN_RECORDS + 1;
    expect(Math.ceil(n / stageChunkRecords(n))).toBeGreaterThan(2);
    const before = db.lastSeq;
    const { seq } = await col.upsert(Array.from({ length: n }, (_, i) => ({ id: `s${i}`, vector: [i, 2, 2] })));
    expect(seq).toBe(before + 1n);
    expect(Array.from((await col.get(`s${n - 1}`))!.vector)).toEqual([n - 1, 2, 2]);
    expect(await col.get(`s${n}`)).toBeUndefined();
  });

  test('a bad record in a later chunk rejects the whole batch naming it; nothing is written and the next batch commits', async () => {
    const before = db.lastSeq;
    const count = await col.count();
    const bad = 2 * CHUNK + 5;
    const records = Array.from({ length: N }, (_, i) => ({ id: `x${i}`, vector: [i, i === bad ? Number.NaN : 1, 0] }));
    const e1 = await rejectsWith(col.upsert(records), 'CAIRN_INVALID_ARGUMENT');
    expect(e1.message).toMatch(new RegExp(`records\\[${bad}\\]\\.vector\\[1\\] must be a finite number`));
    const ids = Array.from({ length: N }, (_, i) => `y${i}`);
    ids[N - 1] = 'y3';
    const e2 = await rejectsWith(col.upsert({ ids, vectors: new Float32Array(N * DIM) }), 'CAIRN_INVALID_ARGUMENT');
    expect(e2.message).toContain(`records.ids[${N - 1}] 'y3' appears twice in one batch`);
    const metadata: unknown[] = Array.from({ length: N }, () => ({}));
    metadata[N - 2] = { bad: () => 1 };
    const e3 = await rejectsWith(
      col.upsert({ ids: ids.map((_, i) => `z${i}`), vectors: new Float32Array(N * DIM), metadata } as never),
      'CAIRN_INVALID_ARGUMENT',
    );
    expect(e3.message).toContain(`records.metadata[${N - 2}]`);
    expect(db.lastSeq).toBe(before);
    expect(await col.count()).toBe(count);
    expect(await col.get('x0')).toBeUndefined();
    expect((await col.upsert(records.map((r) => ({ ...r, vector: [1, 1, 1] })))).seq).toBe(before + 1n);
    expect(await col.count()).toBe(count + N);
  });

  test('SIGKILL while batches are staged or committed: every acknowledged batch is whole, and no batch is half there', async () => {
    const dir = tempDir();
    const rand = prng(Date.now() % 1_000_000);
    const started = new Set<number>();
    const acked = new Set<number>();
    let next = 0;
    for (let cycle = 0; cycle < KILL_CYCLES; cycle++) {
      const child = spawn(process.execPath, [WRITER, dir, String(next)], { stdio: ['ignore', 'pipe', 'pipe'] });
      const exit = await childLines(child, (line) => {
        const [kind, k] = line.split(' ');
        if (kind === 'O') setTimeout(() => child.kill('SIGKILL'), 300 + Math.floor(rand() * 900));
        if (kind === 'S') started.add(Number(k));
        if (kind === 'A') acked.add(Number(k));
      });
      expect(exit.signal, exit.stderr).toBe('SIGKILL');
      next = Math.max(next - 1, ...started) + 1;
      const store = await open(dir);
      try {
        if (!store.collections().some((c) => c.name === 'bulk')) {
          expect(acked.size).toBe(0);
          continue;
        }
        const bulk = store.collection('bulk');
        let whole = 0;
        for (const k of started) {
          const first = await bulk.get(`b${k}-0`);
          const last = await bulk.get(`b${k}-${BATCH - 1}`);
          expect(first === undefined, `batch ${k}: first and last record both there or both not`).toBe(last === undefined);
          if (acked.has(k)) expect(last, `acknowledged batch ${k}`).toBeDefined();
          if (last === undefined) continue;
          whole++;
          const mid = Math.floor(BATCH / 2) + k;
          const m = await bulk.get(`b${k}-${mid}`);
          expect(Array.from(m!.vector)).toEqual(stagedVector(k, mid));
          expect(m!.metadata).toEqual({ k, i: mid });
        }
        // Ids are unique per batch, so any batch half there would break this count.
        expect(await bulk.count()).toBe(whole * BATCH);
      } finally {
        await store.close();
      }
    }
    expect(acked.size).toBeGreaterThan(0);
  });
});
