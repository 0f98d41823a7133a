// Scans under concurrent writes and across a reopen, and deleteWhere under SIGKILL of a real
// child process: all of it or none of it, and all of it once acknowledged.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { open, restore, type Store } from 'cairndb';
import { expect, test } from 'vitest';

import { tempDir } from './helpers.js';

const CHILD = fileURLToPath(new URL('./fixtures/filter-child.mjs', import.meta.url));
const pad = (i: number) => String(i).padStart(5, '0');

async function seed(store: Store, n: number) {
  const c = await store.createCollection('docs', { dim: 2, metric: 'l2' });
  const stable = Array.from({ length: n }, (_, i) => ({ id: `s${pad(i)}`, vector: [i, 1], metadata: { kind: 'stable', v: 0 } }));
  for (let i = 0; i < n; i += 1000) await c.upsert(stable.slice(i, i + 1000));
  return { c, stable: stable.map((r) => r.id) };
}

test('scan pages cover every row that stays live exactly once while writes continue', async () => {
  const store = await open(tempDir('cairn-scan-'), { sync: 'none' });
  try {
    const { c, stable } = await seed(store, 5000);
    const seen: string[] = [];
    const writes: Array<Promise<unknown>> = [];
    let n = 0;
    // One iteration fetches 1000-row pages natively; writes land between (and during) them:
    // inserts on both sides of the cursor, overwrites of stable rows, deletes of transient ones.
    for await (const row of c.scan({ filter: { kind: { $in: ['stable', 'transient'] } } })) {
      seen.push(row.id);
      if (++n % 97 === 0) {
        const i = n;
        writes.push(
          c.upsert([
            { id: `a${pad(i)}`, vector: [0, 0], metadata: { kind: 'transient' } },
            { id: `t${pad(i)}`, vector: [0, 0], metadata: { kind: 'transient' } },
            { id: `s${pad(i % 5000)}`, vector: [1, 1], metadata: { kind: 'stable', v: i } },
          ]),
        );
        if (i > 200) writes.push(c.delete([`t${pad(i - 194)}`]));
      }
      if (n > 20_000) throw new Error('scan did not end');
    }
    await Promise.all(writes);
    expect(new Set(seen).size, 'no row twice').toBe(seen.length);
    expect([...seen].sort(), 'id order').toEqual(seen);
    const stableSeen = seen.filter((id) => id.startsWith('s'));
    expect(stableSeen).toEqual(stable);
    // Ids before the cursor that appeared meanwhile are skipped; those after it are found.
    expect(seen.some((id) => id.startsWith('t'))).toBe(true);
    expect(seen.some((id) => id.startsWith('a'))).toBe(false);
  } finally {
    await store.close();
  }
});

test('a scan cursor survives a reopen', async () => {
  const dir = tempDir('cairn-scan-');
  let store = await open(dir, { sync: 'group' });
  const { stable } = await seed(store, 3000);
  const first: string[] = [];
  for await (const row of store.collection('docs').scan({ limit: 1234, vectors: true })) {
    expect(row.vector).toBeInstanceOf(Float32Array);
    expect(row.vector!.length).toBe(2);
    first.push(row.id);
  }
  expect(first.length).toBe(1234);
  await store.close();
  store = await open(dir);
  try {
    const rest: string[] = [];
    for await (const row of store.collection('docs').scan({ after: first[first.length - 1]! })) {
      expect(row.vector).toBeUndefined();
      rest.push(row.id);
    }
    expect([...first, ...rest]).toEqual(stable);
  } finally {
    await store.close();
  }
});

interface Run {
  lines: string[];
  killAfter(ms: number): Promise<void>;
}

function deleteWhereChild(dir: string, sync: string, rows: number): Promise<Run> {
  const proc = spawn(process.execPath, [CHILD, 'delete-where', dir, sync, String(rows)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let stderr = '';
  proc.stderr.on('data', (s) => (stderr += s));
  const exited = new Promise<void>((resolve) => proc.on('close', () => resolve()));
  return new Promise((resolve, reject) => {
    let partial = '';
    const deadline = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`child never loaded: ${stderr}`));
    }, 60_000);
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (s: string) => {
      const parts = (partial + s).split('\n');
      partial = parts.pop() ?? '';
      lines.push(...parts);
      if (parts.includes('loaded')) {
        clearTimeout(deadline);
        resolve({
          lines,
          killAfter: async (ms) => {
            if (ms > 0) await new Promise((r) => setTimeout(r, ms));
            proc.kill('SIGKILL');
            await exited;
          },
        });
      }
    });
    proc.on('close', () => reject(new Error(`child exited early: ${stderr}`)));
  });
}

test('deleteWhere killed by SIGKILL at any moment is all or nothing, and all once acknowledged', async () => {
  const ROWS = 20_000;
  const outcomes = { none: 0, all: 0 };
  // Delays from "loaded" (the deleteWhere call starts) to SIGKILL, spread over resolution,
  // the WAL write and the fsync.
  for (const [i, delay] of [0, 10, 25, 50, 75, 100, 150, 250, 500].entries()) {
    const sync = i % 2 === 0 ? 'always' : 'group';
    const dir = tempDir('cairn-delwhere-');
    const run = await deleteWhereChild(dir, sync, ROWS);
    await run.killAfter(delay);
    const acked = run.lines.find((l) => l.startsWith('deleted '));
    const store = await open(dir);
    try {
      const docs = store.collection('docs');
      const doomed = await docs.count({ filter: { group: 'doomed' } });
      expect(await docs.count({ filter: { group: 'kept' } })).toBe(ROWS / 2);
      expect([0, ROWS / 2], `delay ${delay} ms: doomed rows left`).toContain(doomed);
      if (acked) {
        expect(doomed, 'an acknowledged deleteWhere survives').toBe(0);
        expect(acked.split(' ')[2]).toBe(String(ROWS / 2));
      }
      outcomes[doomed === 0 ? 'all' : 'none']++;
    } finally {
      await store.close();
    }
  }
  // Both outcomes are legal; printed so a run shows where the kills landed.
  console.log('deleteWhere kill outcomes', outcomes);
});

test('scrub finds a damaged payload index file and repairs it; a reopen rebuilds a lost one', async () => {
  const { readdirSync, readFileSync, rmSync, writeFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const dir = tempDir('cairn-pidx-');
  let store = await open(dir, { sync: 'group' });
  const c = await store.createCollection('docs', { dim: 2, metric: 'l2' });
  await c.upsert(Array.from({ length: 500 }, (_, i) => ({ id: `r${pad(i)}`, vector: [i, 0], metadata: { lang: i % 3 === 0 ? 'en' : 'de' } })));
  await c.createIndex('lang', { type: 'keyword' });
  const pidx = () => readdirSync(join(dir, 'data')).filter((n) => n.endsWith('.pidx'));
  expect(pidx().length).toBe(1);
  const name = pidx()[0]!;
  const file = join(dir, 'data', name);
  const bytes = readFileSync(file);
  bytes[bytes.length >> 1]! ^= 0x08;
  writeFileSync(file, bytes);
  const report = await store.scrub({ repair: true });
  expect(report.corrupt.map((x) => x.file)).toEqual([`data/${name}`]);
  expect(report.repaired.length).toBe(1);
  expect((await store.scrub()).corrupt).toEqual([]);
  expect(await c.count({ filter: { lang: 'en' } })).toBe(167);
  await store.close();
  for (const n of pidx()) rmSync(join(dir, 'data', n));
  store = await open(dir);
  try {
    expect(store.collection('docs').indexes()).toEqual([{ field: 'lang', type: 'keyword', entries: 500 }]);
    expect(await store.collection('docs').count({ filter: { lang: 'de' } })).toBe(333);
  } finally {
    await store.close();
  }
});

test('deleteWhere among concurrent writes deletes exactly the rows matching just before its own record', async () => {
  const store = await open(tempDir('cairn-delwhere-'), { sync: 'group' });
  try {
    const c = await store.createCollection('docs', { dim: 2, metric: 'l2' });
    const ROWS = 60;
    // Reference model: id -> v of every live row.
    const model = new Map<string, number>();
    const initial = Array.from({ length: ROWS }, (_, i) => ({ id: `r${pad(i)}`, vector: [i, 0], metadata: { v: 0 } }));
    await c.upsert(initial);
    for (const r of initial) model.set(r.id, 0);
    let rand = 12345;
    const next = (n: number) => {
      rand = (Math.imul(rand, 1103515245) + 12345) >>> 0;
      return (rand >>> 8) % n;
    };
    type Done = { kind: 'upsert'; seq: bigint; id: string; v: number } | { kind: 'where'; seq: bigint; deleted: number };
    let nonEmpty = 0;
    for (let round = 0; round < 25; round++) {
      const pending: Array<Promise<Done>> = [];
      // 48 writes in flight at once, with two deleteWhere calls among them: the commit thread
      // orders them, and each deleteWhere must judge exactly the writes ordered before it.
      for (let i = 0; i < 48; i++) {
        if (i === 16 || i === 33) {
          pending.push(c.deleteWhere({ v: 1 }).then(({ seq, deleted }) => ({ kind: 'where', seq, deleted })));
        } else {
          const id = `r${pad(next(ROWS))}`;
          const v = next(2);
          pending.push(c.upsert([{ id, vector: [0, 1], metadata: { v } }]).then(({ seq }) => ({ kind: 'upsert', seq, id, v })));
        }
      }
      const done = await Promise.all(pending);
      // Seq order; a deleteWhere that wrote nothing reports the last seq it saw, so it comes
      // after the write that holds that seq (an upsert, or a deleteWhere that deleted rows).
      const wrote = (d: Done) => d.kind === 'upsert' || d.deleted > 0;
      done.sort((a, b) => (a.seq === b.seq ? Number(!wrote(a)) - Number(!wrote(b)) : a.seq < b.seq ? -1 : 1));
      const seqs = done.filter(wrote).map((d) => d.seq);
      expect(new Set(seqs).size, 'every write is its own record').toBe(seqs.length);
      for (const d of done) {
        if (d.kind === 'upsert') {
          model.set(d.id, d.v);
          continue;
        }
        const doomed = [...model].filter(([, v]) => v === 1).map(([id]) => id);
        expect(d.deleted, `deleteWhere at seq ${d.seq}`).toBe(doomed.length);
        if (d.deleted > 0) nonEmpty++;
        for (const id of doomed) model.delete(id);
      }
      const actual = new Map<string, number>();
      for await (const row of c.scan()) actual.set(row.id, (row.metadata as { v: number }).v);
      expect(actual).toEqual(model);
    }
    expect(nonEmpty, 'the deletes had rows to delete').toBeGreaterThan(10);
  } finally {
    await store.close();
  }
});

test('PITR sees a deleteWhere as one record: restored just before it, every row; at it, none of the matching', async () => {
  const { join } = await import('node:path');
  const dir = tempDir('cairn-delwhere-pitr-');
  const store = await open(dir, { sync: 'group' });
  try {
    const c = await store.createCollection('docs', { dim: 2, metric: 'l2' });
    await c.upsert(Array.from({ length: 300 }, (_, i) => ({ id: `r${pad(i)}`, vector: [i, 0], metadata: { odd: i % 2 === 1 } })));
    await store.snapshot();
    const { seq, deleted } = await c.deleteWhere({ odd: true });
    expect(deleted).toBe(150);
    await c.upsert([{ id: 'after', vector: [0, 0], metadata: { odd: true } }]);
    const out = tempDir('cairn-delwhere-pitr-out-');
    const counts: Array<[bigint, number, number]> = [];
    for (const to of [seq - 1n, seq]) {
      const target = join(out, String(to));
      const r = await restore({ source: dir, target, to: { seq: to } });
      expect(r.seq).toBe(to);
      const restored = await open(target);
      try {
        const rc = restored.collection('docs');
        counts.push([to, await rc.count(), await rc.count({ filter: { odd: true } })]);
      } finally {
        await restored.close();
      }
    }
    expect(counts).toEqual([
      [seq - 1n, 300, 150],
      [seq, 150, 0],
    ]);
  } finally {
    await store.close();
  }
});
