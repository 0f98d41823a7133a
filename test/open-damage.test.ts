// Damage to checkpoint and graph files underneath an open store (issue 13: open reads those
// files section by section into memory, nothing stays mapped). While the store is open it serves
// the bytes it verified at open; the next open finds the damage: a record is repaired from the
// WAL or reads fail with CAIRN_CORRUPTION, a graph is rebuilt, a short data file fails the open.
// Never a wrong value, never a crash of this process.
import { readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { type CairnError, open } from 'cairndb';
import { describe, expect, test } from 'vitest';

import { prng } from './fixtures/records.mjs';
import { rejectsWith, segRecords, tempDir } from './helpers.js';

const DIM = 8;
const ROWS = 3000;

function vectorOf(i: number): Float32Array {
  const next = prng(i + 1);
  return Float32Array.from({ length: DIM }, () => next() * 2 - 1);
}

async function buildStore(dir: string): Promise<void> {
  const db = await open(dir);
  const col = await db.createCollection('c', { dim: DIM, metric: 'l2' });
  const records = Array.from({ length: ROWS }, (_, i) => ({ id: `r${i}`, vector: vectorOf(i), metadata: { i } }));
  await col.upsert(records);
  await col.waitForIndex();
  await db.checkpoint();
  await db.close();
}

function dataFile(dir: string, ext: string): string {
  const names = readdirSync(join(dir, 'data')).filter((n) => n.endsWith(ext));
  expect(names).toHaveLength(1);
  return join(dir, 'data', names[0] as string);
}

/** Flip one bit inside the vector of every 10th record of a checkpoint file. */
function flipVectorBits(seg: string): number {
  const buf = readFileSync(seg);
  const records = segRecords(buf);
  let flipped = 0;
  for (let r = 0; r < records.length; r += 10) {
    // Version 2 records: 32 fixed bytes, then the vector.
    const at = (records[r] as { offset: number }).offset + 32 + 4 * (r % DIM) + 2;
    buf[at] = (buf[at] as number) ^ 0x10;
    flipped++;
  }
  writeFileSync(seg, buf);
  return flipped;
}

/** Every row reads back as written or fails with CAIRN_CORRUPTION; queries never return a row
 *  whose vector is not the one written. */
async function expectNoWrongValue(db: Awaited<ReturnType<typeof open>>): Promise<{ served: number; refused: number }> {
  const col = db.collection('c');
  let served = 0;
  let refused = 0;
  for (let i = 0; i < ROWS; i++) {
    try {
      const row = await col.get(`r${i}`);
      expect(row, `r${i}`).toBeDefined();
      expect(Array.from(row?.vector ?? []), `r${i}`).toEqual(Array.from(vectorOf(i)));
      expect(row?.metadata).toEqual({ i });
      served++;
    } catch (e) {
      expect((e as CairnError).code, `r${i}: ${e}`).toBe('CAIRN_CORRUPTION');
      refused++;
    }
  }
  for (let i = 0; i < ROWS; i += 97) {
    const hits = await col.query(vectorOf(i), { k: 3 });
    for (const h of hits) {
      const j = Number(h.id.slice(1));
      const q = vectorOf(i);
      const l2 = Math.sqrt(vectorOf(j).reduce((s, x, d) => s + (x - (q[d] as number)) ** 2, 0));
      expect(h.distance, `${h.id} for the query of r${i}`).toBeCloseTo(l2, 4);
    }
  }
  return { served, refused };
}

describe('damage to files underneath an open store', () => {
  test('bit flips in a checkpoint file: the open store serves what it verified; the next open repairs or refuses each row', async () => {
    const dir = tempDir();
    await buildStore(dir);
    const db = await open(dir);
    const flipped = flipVectorBits(dataFile(dir, '.seg'));
    expect(await expectNoWrongValue(db)).toEqual({ served: ROWS, refused: 0 });
    await db.close();

    const again = await open(dir);
    const report = again.recoveryReport;
    // Each damaged record is named: rebuilt from the WAL write that produced it, or unreadable.
    expect(report.repairedRecords.length + report.unreadableRecords.length).toBe(flipped);
    const { served, refused } = await expectNoWrongValue(again);
    expect(served + refused).toBe(ROWS);
    expect(refused).toBe(report.unreadableRecords.length);
    await again.close();
  }, 60_000);

  test('a graph file cut short underneath an open store: the next open rebuilds it and answers right', async () => {
    const dir = tempDir();
    await buildStore(dir);
    const db = await open(dir);
    const graph = dataFile(dir, '.hnsw');
    truncateSync(graph, Math.floor(statSync(graph).size / 2));
    expect(await expectNoWrongValue(db)).toEqual({ served: ROWS, refused: 0 });
    await db.close();

    const again = await open(dir);
    expect(again.recoveryReport.indexRebuilds).toHaveLength(1);
    expect(await expectNoWrongValue(again)).toEqual({ served: ROWS, refused: 0 });
    await again.close();
  }, 60_000);

  test('a checkpoint file cut short underneath an open store fails the next open with CAIRN_CORRUPTION', async () => {
    const dir = tempDir();
    await buildStore(dir);
    const db = await open(dir);
    const seg = dataFile(dir, '.seg');
    truncateSync(seg, Math.floor(statSync(seg).size / 2));
    expect(await expectNoWrongValue(db)).toEqual({ served: ROWS, refused: 0 });
    await db.close();
    await rejectsWith(open(dir), 'CAIRN_CORRUPTION');
  }, 60_000);
});
