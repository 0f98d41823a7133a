// Golden fixture (test/fixtures/golden/v1): a store written by today's format is opened, read,
// queried, scrubbed and restored through the public API, on a temporary copy; its
// hand-corrupted copies give the outcomes their case.json names. The Rust side of the same
// checks is crates/cairn-core/tests/golden.rs, which also regenerates the fixture.
import { cpSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { open, restore, type Store, scrub } from 'cairndb';
import { describe, expect, test } from 'vitest';

import { rejectsWith, tempDir } from './helpers.js';

const ROOT = fileURLToPath(new URL('./fixtures/golden/v1/', import.meta.url));

interface Row {
  id: string;
  vector: number[];
  metadata: Record<string, unknown>;
}
type Collections = Record<string, { dim: number; metric: string; m?: number; ef_construction?: number; rows: Row[] }>;
interface Expected {
  last_seq: number;
  checkpoint_seq: number;
  collections: Collections;
  queries: Array<{ collection: string; vector: number[]; k: number; ids: string[] }>;
  points_in_time: Array<{ seq: number; snapshot: string | null; collections: Collections }>;
  empty_dirs: string[];
}
interface Case {
  file: string;
  offset: number;
  id?: string;
  collection?: string;
  last_seq?: number;
  absent?: Array<[string, string]>;
  copy?: string;
}

const expected = JSON.parse(readFileSync(join(ROOT, 'expected.json'), 'utf8')) as Expected;
const caseOf = (name: string) => JSON.parse(readFileSync(join(ROOT, 'corrupt', name, 'case.json'), 'utf8')) as Case;

/** A temporary copy of the golden store, with a corrupted case's files laid over it (git keeps
 *  no empty directories, so those are made again). */
function storeCopy(caseName?: string): string {
  const dir = join(tempDir('cairn-golden-'), 'store');
  cpSync(join(ROOT, 'store'), dir, { recursive: true });
  for (const d of expected.empty_dirs) mkdirSync(join(dir, d), { recursive: true });
  if (caseName) cpSync(join(ROOT, 'corrupt', caseName, 'files'), dir, { recursive: true });
  return dir;
}

async function expectRows(db: Store, collections: Collections, absent: Array<[string, string]> = []): Promise<void> {
  expect(
    db
      .collections()
      .map((c) => c.name)
      .sort(),
  ).toEqual(Object.keys(collections).sort());
  for (const [name, c] of Object.entries(collections)) {
    const coll = db.collection(name);
    const info = db.collections().find((i) => i.name === name)!;
    expect([info.dim, info.metric]).toEqual([c.dim, c.metric]);
    const gone = new Set(absent.filter(([cn]) => cn === name).map(([, id]) => id));
    const rows = c.rows.filter((r) => !gone.has(r.id));
    expect(await coll.count()).toBe(rows.length);
    for (const r of rows) {
      const got = await coll.get(r.id);
      expect(got, `${name}/${r.id}`).toBeDefined();
      expect(Array.from(got!.vector), `${name}/${r.id}`).toEqual(r.vector);
      expect(got!.metadata, `${name}/${r.id}`).toEqual(r.metadata);
    }
    for (const id of gone) expect(await coll.get(id)).toBeUndefined();
  }
}

describe('the golden store written by format v1', () => {
  test('opens with every row, answers queries, and scrubs clean', async () => {
    const db = await open(storeCopy(), { recovery: 'absolute-consistency' });
    try {
      const report = db.recoveryReport;
      expect(report.tornTail).toBeNull();
      expect(report.indexRebuilds).toEqual([]);
      expect(report.repairedRecords).toEqual([]);
      expect(report.checkpointSeq).toBe(BigInt(expected.checkpoint_seq));
      expect(db.lastSeq).toBe(BigInt(expected.last_seq));
      await expectRows(db, expected.collections);
      for (const info of db.collections()) {
        const c = expected.collections[info.name]!;
        expect([info.m, info.efConstruction]).toEqual([c.m, c.ef_construction]);
      }
      for (const q of expected.queries) {
        const coll = db.collection(q.collection);
        const graph = await coll.query(q.vector, { k: q.k });
        const exact = await coll.query(q.vector, { k: q.k, exact: true });
        expect(graph.map((h) => h.id)).toEqual(q.ids);
        expect(exact.map((h) => h.id)).toEqual(q.ids);
      }
      const scrubbed = await db.scrub({ deep: true });
      expect(scrubbed.corrupt).toEqual([]);
      expect(scrubbed.unrepaired).toEqual([]);
      expect(scrubbed.files).toBeGreaterThan(20);
      expect((await db.snapshots()).map((s) => s.kind)).toEqual(['full', 'incremental']);
    } finally {
      await db.close();
    }
  });

  test('restores to every recorded point in time', async () => {
    const source = storeCopy();
    for (const point of expected.points_in_time) {
      const target = join(tempDir('cairn-golden-restore-'), 'store');
      const result = await restore({ source, target, to: { seq: BigInt(point.seq) } });
      expect(result.seq).toBe(BigInt(point.seq));
      expect(result.snapshot).toBe(point.snapshot);
      const db = await open(target, { recovery: 'absolute-consistency' });
      try {
        await expectRows(db, point.collections);
      } finally {
        await db.close();
      }
    }
  });
});

describe('hand-corrupted copies of the golden store', () => {
  test('a bit flip in a data file is located, refused by absolute-consistency, and repaired from the WAL', async () => {
    const c = caseOf('bit-flip-in-data-file');
    const dir = storeCopy('bit-flip-in-data-file');
    const offline = await scrub(dir);
    expect(offline.corrupt.map((f) => [f.file, f.offset, f.id])).toEqual([[c.file, c.offset, c.id]]);
    const err = await rejectsWith(open(dir, { recovery: 'absolute-consistency' }), 'CAIRN_CORRUPTION');
    expect([err.file?.endsWith(c.file), err.offset]).toEqual([true, c.offset]);
    const db = await open(dir);
    try {
      expect(db.recoveryReport.repairedRecords.map((r) => [r.collection, r.id, r.file, r.offset])).toEqual([[c.collection, c.id, c.file, c.offset]]);
      await expectRows(db, expected.collections);
      expect((await db.scrub()).corrupt).toEqual([]);
    } finally {
      await db.close();
    }
  });

  test('a torn WAL tail is truncated', async () => {
    const c = caseOf('torn-wal-tail');
    const dir = storeCopy('torn-wal-tail');
    await rejectsWith(open(dir, { recovery: 'absolute-consistency' }), 'CAIRN_CORRUPTION');
    const db = await open(dir);
    try {
      const torn = db.recoveryReport.tornTail;
      expect(torn).not.toBeNull();
      expect([torn!.file.endsWith(c.file.split('/').pop()!), torn!.offset]).toEqual([true, c.offset]);
      expect(db.lastSeq).toBe(BigInt(c.last_seq!));
      await expectRows(db, expected.collections, c.absent);
      expect((await db.scrub()).corrupt).toEqual([]);
    } finally {
      await db.close();
    }
  });

  test('a bit flip in an archived WAL segment is located and repaired from the snapshot copy', async () => {
    const c = caseOf('bit-flip-in-archived-wal');
    const dir = storeCopy('bit-flip-in-archived-wal');
    const offline = await scrub(dir);
    expect(offline.corrupt.map((f) => [f.file, f.offset])).toEqual([[c.file, c.offset]]);
    const repaired = await scrub(dir, { repair: true });
    expect(repaired.repaired.map((r) => [r.file, r.from])).toEqual([[c.file, c.copy]]);
    expect(repaired.repaired[0]!.quarantined).toMatch(/^quarantine\//);
    expect((await scrub(dir)).corrupt).toEqual([]);
    expect(readFileSync(join(dir, c.file))).toEqual(readFileSync(join(dir, c.copy!)));
    const db = await open(dir, { recovery: 'absolute-consistency' });
    try {
      await expectRows(db, expected.collections);
    } finally {
      await db.close();
    }
  });

  test('a damaged MANIFEST is recovered from MANIFEST.copy', async () => {
    const c = caseOf('damaged-manifest');
    const dir = storeCopy('damaged-manifest');
    const offline = await scrub(dir);
    expect(offline.corrupt.map((f) => [f.file, f.offset])).toEqual([[c.file, c.offset]]);
    await rejectsWith(open(dir, { recovery: 'absolute-consistency' }), 'CAIRN_CORRUPTION');
    const db = await open(dir);
    try {
      expect(db.recoveryReport.manifestRestored).not.toBeNull();
      expect(db.recoveryReport.quarantined.map((q) => q.file)).toContain('MANIFEST');
      expect(db.lastSeq).toBe(BigInt(expected.last_seq));
      await expectRows(db, expected.collections);
    } finally {
      await db.close();
    }
    expect(readFileSync(join(dir, 'MANIFEST'))).toEqual(readFileSync(join(dir, 'MANIFEST.copy')));
  });
});
