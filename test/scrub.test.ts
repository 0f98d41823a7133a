// Scrub: every kind of damage to every kind of file is found with its file and kind; with
// repair, every live file is rebuilt or copied back (verified, the damaged bytes kept in
// quarantine) and the reopened store equals the model; no read ever returns a wrong value;
// a scrub beside writes and checkpoints reports nothing; throttle, cancel, background
// scrubbing, option validation and the CLI.
import { spawnSync } from 'node:child_process';
import {
  appendFileSync,
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { open, type ScrubReport, type Store, scrub } from 'cairndb';
import { beforeAll, describe, expect, test } from 'vitest';

// Internal modules, for the range path with small ranges (the package exports neither).
import { nativeModule } from '../packages/cairn/dist/native.js';
import { makespan, parseScrubOptions, planSplits, runScrub } from '../packages/cairn/dist/scrub/index.js';
import { expectModel } from './expect-model.js';
import { metadataFor, prng, vectorFor } from './fixtures/records.mjs';
import { rejectsWith, tempDir } from './helpers.js';

const DIM = 8;
const CLI = fileURLToPath(new URL('../packages/cairn/dist/cli.js', import.meta.url));

type Model = Map<string, string>;

async function write(db: Store, model: Model, ids: string[], version: string): Promise<void> {
  await db.collection('docs').upsert(ids.map((id) => ({ id, vector: vectorFor(id, version, DIM), metadata: metadataFor(id, version) })));
  for (const id of ids) model.set(id, version);
}

/** Every id reads back exactly as the model says. */
const ALL_IDS = Array.from({ length: 700 }, (_, i) => `doc-${i}`);

/**
 * A closed store with live checkpoint and graph files, an archived WAL, a full snapshot and an
 * incremental one (which hard-links archived WAL segments), plus writes after both.
 */
async function buildTemplate(dir: string): Promise<Model> {
  const model: Model = new Map();
  const db = await open(dir, { walSegmentBytes: 16384, sync: 'none' });
  await db.createCollection('docs', { dim: DIM, metric: 'l2' });
  for (let r = 0; r < 5; r++) await write(db, model, ALL_IDS.slice(r * 100, r * 100 + 100), 'v1');
  await db.checkpoint();
  await db.snapshot();
  for (let r = 0; r < 4; r++) await write(db, model, ALL_IDS.slice(r * 30, r * 30 + 30), 'v2');
  await db.collection('docs').delete(['doc-400', 'doc-401']);
  model.delete('doc-400');
  model.delete('doc-401');
  await db.checkpoint();
  await db.snapshot({ incremental: true });
  await write(db, model, ALL_IDS.slice(500, 700), 'v1');
  await db.checkpoint();
  await db.close();
  return model;
}

/** Copy a store directory, keeping hard links as hard links (snapshots link their files). */
function cloneStore(src: string, dst: string): void {
  const seen = new Map<string, string>();
  const walk = (rel: string) => {
    const from = join(src, rel);
    const st = statSync(from);
    if (st.isDirectory()) {
      mkdirSync(join(dst, rel), { recursive: true });
      for (const n of readdirSync(from)) walk(join(rel, n));
      return;
    }
    const key = `${st.dev}:${st.ino}`;
    const first = seen.get(key);
    if (first) linkSync(join(dst, first), join(dst, rel));
    else {
      copyFileSync(from, join(dst, rel));
      seen.set(key, rel);
    }
  };
  walk('');
}

function files(dir: string, sub = ''): string[] {
  const out: string[] = [];
  for (const n of readdirSync(join(dir, sub))) {
    const rel = sub ? `${sub}/${n}` : n;
    if (statSync(join(dir, rel)).isDirectory()) out.push(...files(dir, rel));
    else out.push(rel);
  }
  return out;
}

type Damage = 'flip' | 'zero' | 'truncate' | 'append' | 'delete';
const DAMAGES: Damage[] = ['flip', 'zero', 'truncate', 'append', 'delete'];
const KIND_OF: Record<Damage, string> = { flip: 'checksum', zero: 'checksum', truncate: 'truncated', append: 'checksum', delete: 'missing' };

/** Damage a file in place; false when the bytes did not change (zeros over zeros). */
function damage(path: string, how: Damage, rand: () => number = () => 0.5): boolean {
  if (how === 'delete') {
    unlinkSync(path);
    return true;
  }
  const buf = readFileSync(path);
  if (how === 'truncate') {
    truncateSync(path, Math.floor(buf.length * (0.2 + 0.6 * rand())));
    return true;
  }
  if (how === 'append') {
    // A non-zero byte: zeros after a WAL segment's last record look like its preallocation.
    appendFileSync(path, Buffer.from([0xa5]));
    return true;
  }
  const copy = Buffer.from(buf);
  if (how === 'flip') {
    const bit = Math.floor(rand() * buf.length * 8);
    copy[bit >> 3]! ^= 1 << (bit & 7);
  } else {
    const start = Math.floor(rand() * Math.max(1, buf.length - 4096));
    copy.fill(0, start, Math.min(buf.length, start + 4096));
  }
  writeFileSync(path, copy);
  return !copy.equals(buf);
}

function latestSnapshots(dir: string): { full: string; incremental: string } {
  const ids = readdirSync(join(dir, 'snapshots')).sort();
  return { full: ids.find((i) => i.endsWith('-full'))!, incremental: ids.find((i) => i.endsWith('-incremental'))! };
}

/** The files of each type the matrix damages. */
function pickTargets(dir: string): Record<string, string> {
  const data = readdirSync(join(dir, 'data'));
  const { full, incremental } = latestSnapshots(dir);
  const linked = readdirSync(join(dir, 'snapshots', incremental, 'wal')).sort();
  const fullSeg = readdirSync(join(dir, 'snapshots', full, 'data')).find((n) => n.endsWith('.seg'))!;
  return {
    segment: `data/${data.filter((n) => n.endsWith('.seg')).sort()[0]}`,
    index: `data/${data.find((n) => n.endsWith('.hnsw'))}`,
    manifest: 'MANIFEST',
    'manifest copy': 'MANIFEST.copy',
    // A middle archived segment that the incremental snapshot also holds (as a hard link).
    'wal archive segment': `wal-archive/${linked[Math.floor(linked.length / 2)]}`,
    'snapshot manifest': `snapshots/${full}/SNAPSHOT`,
    // Written for the snapshot, not linked: shared with nothing.
    'snapshot file': `snapshots/${full}/MANIFEST`,
    // Hard-linked with the live base file.
    'snapshot data file': `snapshots/${full}/data/${fullSeg}`,
  };
}

function corruptFiles(r: ScrubReport): Set<string> {
  return new Set(r.corrupt.map((c) => c.file));
}

const isLive = (f: string) => f === 'MANIFEST' || f === 'MANIFEST.copy' || f.startsWith('data/');

let template: string;
let model: Model;

beforeAll(async () => {
  template = tempDir('cairn-scrub-template-');
  model = await buildTemplate(template);
});

describe('scrub finds and repairs', () => {
  test('a clean store reports nothing, checks every file, and reads hard links once', async () => {
    const dir = tempDir();
    cloneStore(template, dir);
    const db = await open(dir);
    const r = await db.scrub();
    await db.close();
    expect(r.corrupt).toEqual([]);
    expect(r.unrepaired).toEqual([]);
    // SCRUB_RESULT is the scrub's own output (written after it read everything), not a file it checks.
    const names = files(dir).filter((f) => f !== 'LOCK' && f !== 'SCRUB_RESULT' && !f.startsWith('wal/'));
    expect(r.files).toBeGreaterThanOrEqual(names.length);
    const unique = new Set(names.map((f) => statSync(join(dir, f)).ino));
    expect(r.bytes).toBeLessThanOrEqual([...unique].length * 1e7);
    expect(r.durationMs).toBeGreaterThanOrEqual(0);
  });

  const targets = ['segment', 'index', 'manifest', 'manifest copy', 'wal archive segment', 'snapshot manifest', 'snapshot file', 'snapshot data file'];
  for (const type of targets) {
    for (const how of DAMAGES) {
      test(`${type}: ${how} is found with its file and kind, and repair leaves a store equal to the model`, async () => {
        const dir = tempDir();
        cloneStore(template, dir);
        const rel = pickTargets(dir)[type]!;
        let db = await open(dir);
        expect(damage(join(dir, rel), how)).toBe(true);
        // Reads are served from memory verified at load: never the damaged bytes.
        await expectModel(db, model, ALL_IDS, DIM);

        const found = await db.scrub();
        const hit = found.corrupt.filter((c) => c.file === rel);
        expect(
          hit.map((c) => c.kind),
          JSON.stringify(found.corrupt),
        ).toContain(KIND_OF[how]);
        if (rel.startsWith('data/') && rel.endsWith('.seg')) expect(hit.every((c) => c.collection === 'docs')).toBe(true);
        // Report-only: nothing changed on disk, nothing quarantined.
        expect(existsSync(join(dir, 'quarantine'))).toBe(false);
        expect(new Set(found.unrepaired.map((u) => u.file))).toEqual(corruptFiles(found));

        const fixed = await db.scrub({ repair: true });
        expect(corruptFiles(fixed)).toEqual(corruptFiles(found));
        const repaired = new Set(fixed.repaired.map((r) => r.file));
        const unrepaired = new Set(fixed.unrepaired.map((u) => u.file));
        for (const f of corruptFiles(fixed)) expect(repaired.has(f) !== unrepaired.has(f), `${f} is accounted for once`).toBe(true);
        // Every file the live store depends on is repairable while it is open.
        for (const f of corruptFiles(fixed)) if (isLive(f)) expect(repaired.has(f), `${f} repaired: ${JSON.stringify(fixed.unrepaired)}`).toBe(true);
        // An archived segment deleted while a snapshot still links it comes back from the link;
        // otherwise that link is the same damaged inode and is rightly refused.
        if (type === 'wal archive segment') expect(repaired.has(rel)).toBe(how === 'delete');
        if (type === 'snapshot data file' && how === 'delete') expect(fixed.repaired.find((r) => r.file === rel)?.from).toMatch(/^data\//);
        for (const r of fixed.repaired) {
          if (!r.quarantined) continue;
          const note = JSON.parse(readFileSync(join(dir, `${r.quarantined}.note`), 'utf8'));
          expect(note.file).toBe(r.file);
          expect(['checksum', 'truncated', 'missing', 'unreadable']).toContain(note.kind);
          expect(existsSync(join(dir, r.quarantined))).toBe(true);
        }
        // What could not be repaired stays in place, and its damaged bytes are also kept in
        // quarantine (once: a second repairing scrub adds nothing).
        for (const u of fixed.unrepaired) {
          if (!existsSync(join(dir, u.file))) continue;
          expect(u.quarantined, `${u.file} kept in quarantine`).toMatch(/^quarantine\//);
          expect(readFileSync(join(dir, u.quarantined!)).equals(readFileSync(join(dir, u.file)))).toBe(true);
          expect(JSON.parse(readFileSync(join(dir, `${u.quarantined}.note`), 'utf8'))).toMatchObject({ file: u.file, repaired_from: null });
        }
        const kept = existsSync(join(dir, 'quarantine')) ? readdirSync(join(dir, 'quarantine')).length : 0;
        const fixedAgain = await db.scrub({ repair: true });
        expect(fixedAgain.unrepaired.map((u) => u.quarantined)).toEqual(fixed.unrepaired.map((u) => u.quarantined));
        expect(existsSync(join(dir, 'quarantine')) ? readdirSync(join(dir, 'quarantine')).length : 0).toBe(kept);
        await expectModel(db, model, ALL_IDS, DIM);

        // A second scrub finds only what could not be repaired.
        const again = await db.scrub();
        expect(corruptFiles(again)).toEqual(unrepaired);
        await db.close();
        db = await open(dir);
        await expectModel(db, model, ALL_IDS, DIM);
        expect(db.recoveryReport.indexRebuilds).toEqual([]);
        await db.close();
      });
    }
  }

  test('ranges hashed by separate tasks prove an intact file, and never a damaged one', () => {
    const dir = tempDir();
    cloneStore(template, dir);
    const { segment, index } = pickTargets(dir);
    const manifest = readFileSync(join(dir, 'MANIFEST'));
    const body = JSON.parse(manifest.subarray(24, 24 + Number(manifest.readBigUInt64LE(16))).toString('utf8'));
    const recorded = (rel: string) => {
      const name = rel.slice(5);
      const c = body.collections[0];
      return [...c.segments, c.index].find((f: { file: string }) => f.file === name) as { bytes: number; xxh3: string };
    };
    const byRanges = (rel: string, kind: string, xxh3: string, reverse: boolean) => {
      const scan = nativeModule.scanOpen(null);
      try {
        const { bytes } = recorded(rel);
        const cuts = nativeModule.scanRanges(bytes, 1024);
        expect(cuts.length).toBeGreaterThan(3);
        const split = nativeModule.scanSplitOpen(scan, bytes);
        const order = cuts.slice(0, -1).map((start, i) => [start, cuts[i + 1]!] as const);
        if (reverse) order.reverse();
        for (const [start, end] of order) nativeModule.hashRange(scan, split, join(dir, rel), start, end);
        const proven = nativeModule.scanSplitFinish(scan, split, join(dir, rel), kind, bytes, xxh3);
        return proven;
      } finally {
        nativeModule.scanClose(scan);
      }
    };
    for (const [rel, kind] of [
      [segment!, 'segment'],
      [index!, 'blob'],
    ] as const) {
      const { bytes, xxh3 } = recorded(rel);
      for (const reverse of [false, true]) expect(byRanges(rel, kind, xxh3, reverse)).toMatchObject({ xxh3, read: bytes, findings: [] });
      // Another recorded checksum, or damaged bytes: not proven, left to the whole-file check.
      expect(
        byRanges(
          rel,
          kind,
          xxh3.replace(/.$/, (d) => (d === '0' ? '1' : '0')),
          false,
        ),
      ).toBeNull();
      damage(join(dir, rel), 'flip');
      expect(byRanges(rel, kind, xxh3, false)).toBeNull();
    }
  });

  test('files are split into ranges only while whole files would leave the workers unbalanced', () => {
    const MiB = 1 << 20;
    const ranges = (bytes: number) => {
      const c = nativeModule.scanRanges(bytes, 32 * MiB);
      return c.slice(1).map((end, i) => end - c[i]!);
    };
    const file = (bytes: number, splittable = true) => ({ bytes, ranges: splittable ? ranges(bytes) : null });
    // Largest first, each to the least loaded: 5+3 and 4+3+3 (greedy, not the optimum 9).
    expect(makespan([5, 4, 3, 3, 3], 2)).toBe(10);
    // The bench store: two 1 GB files and 32 WAL segments balance as whole files.
    const bench = [file(1e9), file(1e9), ...Array.from({ length: 32 }, () => file(31e6, false))];
    expect(planSplits(bench, 2, 32 * MiB)).toEqual(new Set());
    // One large file: split, and then the workers finish within a range of each other.
    const one = [file(10e6, false), file(2e9), file(20e6, false), file(300e6)];
    const split = planSplits(one, 2, 32 * MiB);
    expect(split).toEqual(new Set([1]));
    const tasks = one.flatMap((f, i) => (split.has(i) ? f.ranges! : [f.bytes]));
    expect(makespan(tasks, 2)).toBeLessThanOrEqual(one.reduce((s, f) => s + f.bytes, 0) / 2 + 32 * MiB);
    // A file that cannot be split, or one worker: nothing is split.
    expect(planSplits([file(2e9, false), file(10e6)], 2, 32 * MiB)).toEqual(new Set());
    expect(planSplits(one, 1, 32 * MiB)).toEqual(new Set());
  });

  test('with small ranges every damage to a split file is still found with its kind', async () => {
    const workers = 8;
    const opts = { ...parseScrubOptions({ concurrency: workers }), rangeBytes: 1024 };
    const clean = tempDir();
    cloneStore(template, clean);
    const targets = pickTargets(clean);
    const rels = [targets.segment!, targets.index!, targets['snapshot data file']!];
    // A whole file larger than this keeps a worker busy past the ideal finish by more than a
    // range, so the plan must split it (an upper bound: every file of the store, once per inode).
    const inodes = new Map(files(clean).map((f) => [statSync(join(clean, f)).ino, statSync(join(clean, f)).size]));
    const mustSplit = [...inodes.values()].reduce((a, b) => a + b, 0) / workers + 1024;
    for (const rel of rels) expect(statSync(join(clean, rel)).size).toBeGreaterThan(mustSplit);
    // Offline (closed store): the manifest on disk names the files and their checksums.
    expect((await runScrub({ dir: clean }, opts)).corrupt).toEqual([]);
    for (const rel of rels) {
      for (const how of DAMAGES) {
        const dir = tempDir();
        cloneStore(template, dir);
        damage(join(dir, rel), how);
        const r = await runScrub({ dir }, opts);
        expect(
          r.corrupt.filter((c) => c.file === rel).map((c) => c.kind),
          `${how} of ${rel}: ${JSON.stringify(r.corrupt)}`,
        ).toContain(KIND_OF[how]);
        rmSync(dir, { recursive: true, force: true });
      }
    }
  });

  test('an identical copy in a snapshot is preferred to a rebuild, and a hard link to the damage is refused', async () => {
    const dir = tempDir();
    cloneStore(template, dir);
    const { segment, 'snapshot data file': snapCopy } = pickTargets(dir);
    // The snapshot's copy is the live base file: give the snapshot its own inode (as a copy on
    // another file system would be), then damage the live file.
    expect(snapCopy!.endsWith(segment!.slice(5))).toBe(true);
    copyFileSync(join(dir, snapCopy!), join(dir, `${snapCopy}.own`));
    renameSync(join(dir, `${snapCopy}.own`), join(dir, snapCopy!));
    const db = await open(dir);
    damage(join(dir, segment!), 'flip', () => 0.37);
    const r = await db.scrub({ repair: true });
    expect(r.corrupt.map((c) => c.file)).toEqual([segment]);
    expect(r.repaired).toEqual([{ file: segment, from: snapCopy, quarantined: expect.stringMatching(/^quarantine\//) }]);
    expect((await db.scrub()).corrupt).toEqual([]);
    await expectModel(db, model, ALL_IDS, DIM);
    await db.close();
  });

  test('a damaged record is located and named by collection and id', async () => {
    const dir = tempDir();
    cloneStore(template, dir);
    const { segment } = pickTargets(dir);
    const db = await open(dir);
    const buf = readFileSync(join(dir, segment!));
    // The 11th record of the base file: records are sorted by id.
    let pos = 64;
    for (let i = 0; i < 10; i++) pos += buf.readUInt32LE(pos);
    buf[pos + 30]! ^= 0x08;
    writeFileSync(join(dir, segment!), buf);
    const r = await db.scrub();
    const hit = r.corrupt.find((c) => c.file === segment && c.offset === pos);
    expect(hit).toMatchObject({ kind: 'checksum', collection: 'docs', detail: 'record checksum mismatch' });
    expect(ALL_IDS).toContain(hit!.id);
    await db.close();
  });

  test('a store that does not open because of damage is scrubbed offline and repaired from a snapshot', async () => {
    const dir = tempDir();
    cloneStore(template, dir);
    const { segment, 'snapshot data file': snapCopy } = pickTargets(dir);
    copyFileSync(join(dir, snapCopy!), join(dir, `${snapCopy}.own`));
    renameSync(join(dir, `${snapCopy}.own`), join(dir, snapCopy!));
    damage(join(dir, segment!), 'zero');
    await rejectsWith(open(dir), 'CAIRN_CORRUPTION');
    const r = await scrub(dir, { repair: true });
    expect(r.repaired.map((x) => [x.file, x.from])).toEqual([[segment, snapCopy]]);
    const db = await open(dir);
    await expectModel(db, model, ALL_IDS, DIM);
    await db.close();
  });

  test('three hundred random injections: always found, live files always repaired, never a wrong value', async () => {
    const rand = prng(20240601);
    // Not the oldest archived segment: losing it is indistinguishable from archive retention.
    const oldest = `wal-archive/${readdirSync(join(template, 'wal-archive')).sort()[0]}`;
    const all = files(template).filter((f) => f !== 'LOCK' && !f.startsWith('wal/') && f !== oldest);
    let cases = 0;
    const dir = tempDir();
    for (let i = 0; i < 300; i++) {
      rmSync(dir, { recursive: true, force: true });
      cloneStore(template, dir);
      const rel = all[Math.floor(rand() * all.length)]!;
      const how = DAMAGES[Math.floor(rand() * DAMAGES.length)]!;
      const db = await open(dir);
      if (!damage(join(dir, rel), how, rand)) {
        await db.close();
        continue;
      }
      cases++;
      const r = await db.scrub({ repair: true, concurrency: 1 });
      expect(corruptFiles(r).has(rel), `${how} of ${rel}: ${JSON.stringify(r.corrupt)}`).toBe(true);
      for (const f of corruptFiles(r))
        if (isLive(f))
          expect(
            r.repaired.some((x) => x.file === f),
            `${how} of ${rel}: ${f}`,
          ).toBe(true);
      await expectModel(db, model, ALL_IDS, DIM);
      await db.close();
      if (i % 2 === 1) continue;
      const again = await open(dir);
      await expectModel(again, model, ALL_IDS, DIM);
      await again.close();
    }
    expect(cases).toBeGreaterThan(270);
  }, 360_000);
});

describe('scrub beside a working store', () => {
  test('scrubs during writes, checkpoints and snapshots report no damage', async () => {
    const dir = tempDir();
    const m: Model = new Map();
    const db = await open(dir, { walSegmentBytes: 8192, sync: 'none' });
    await db.createCollection('docs', { dim: DIM, metric: 'l2' });
    await write(db, m, ALL_IDS.slice(0, 200), 'v0');
    await db.snapshot();
    let stop = false;
    const writer = (async () => {
      for (let round = 1; !stop; round++) {
        await write(db, m, ALL_IDS.slice((round * 37) % 600, ((round * 37) % 600) + 40), `v${round}`);
        if (round % 5 === 0) await db.checkpoint();
        if (round % 17 === 0) await db.snapshot({ incremental: true });
      }
    })();
    const reports: ScrubReport[] = [];
    for (let i = 0; i < 12; i++) reports.push(await db.scrub({ concurrency: 2 }));
    stop = true;
    await writer;
    for (const r of reports) expect(r.corrupt).toEqual([]);
    expect(reports.some((r) => r.files > 5)).toBe(true);
    await expectModel(db, m, ALL_IDS, DIM);
    await db.close();
  });

  test('throttleMBps holds the read rate (generous bound) and an AbortSignal cancels', async () => {
    const dir = tempDir();
    const db = await open(dir, { sync: 'none' });
    const big = 256;
    const docs = await db.createCollection('docs', { dim: big, metric: 'l2' });
    for (let b = 0; b < 8; b++) {
      await docs.upsert(Array.from({ length: 500 }, (_, i) => ({ id: `r${b}-${i}`, vector: new Float32Array(big).fill(b + i / 1000) })));
    }
    await db.checkpoint();
    const fast = await db.scrub();
    const rate = 2; // MB/s
    const slow = await db.scrub({ throttleMBps: rate });
    const expectedMs = (slow.bytes / (rate * 1e6)) * 1000;
    expect(slow.bytes).toBeGreaterThan(4e6);
    expect(slow.durationMs).toBeGreaterThan(expectedMs * 0.6);
    expect(slow.durationMs).toBeLessThan(expectedMs * 3 + 5000);
    expect(fast.durationMs).toBeLessThan(slow.durationMs);

    const abort = new AbortController();
    const t0 = Date.now();
    setTimeout(() => abort.abort(), 300);
    await rejectsWith(db.scrub({ throttleMBps: 1, signal: abort.signal }), 'CAIRN_ABORTED');
    expect(Date.now() - t0).toBeLessThan(3000);
    const already = new AbortController();
    already.abort();
    await rejectsWith(db.scrub({ signal: already.signal }), 'CAIRN_ABORTED');
    await db.close();
  });

  test('background scrubbing emits reports, repairs, and stops on close', async () => {
    const dir = tempDir();
    cloneStore(template, dir);
    const db = await open(dir, { scrub: { intervalMs: 50, repair: true, throttleMBps: 500 } });
    const first = await new Promise<ScrubReport>((resolve) => db.once('scrub', resolve));
    expect(first.corrupt).toEqual([]);
    const { index } = pickTargets(dir);
    damage(join(dir, index!), 'flip');
    const repaired = await new Promise<ScrubReport>((resolve) => {
      const on = (r: ScrubReport) => {
        if (r.repaired.length > 0) {
          db.off('scrub', on);
          resolve(r);
        }
      };
      db.on('scrub', on);
    });
    expect(repaired.repaired).toEqual([{ file: index, from: 'engine', quarantined: expect.any(String) }]);
    let after = 0;
    db.on('scrub', () => after++);
    await db.close();
    await new Promise((r) => setTimeout(r, 200));
    expect(after).toBe(0);
  });

  test('options are validated with messages that name the field', async () => {
    const dir = tempDir();
    for (const [scrubOpt, field] of [
      [{}, 'options.scrub.intervalMs'],
      [{ intervalMs: 0 }, 'options.scrub.intervalMs'],
      [{ intervalMs: 10, throttleMBps: -1 }, 'options.scrub.throttleMBps'],
      [{ intervalMs: 10, repair: 'yes' }, 'options.scrub.repair'],
      [{ intervalMs: 10, every: 1 }, 'options.scrub.every'],
      [{ intervalMs: 10, concurrency: 1.5 }, 'options.scrub.concurrency'],
    ] as const) {
      const e = await rejectsWith(open(dir, { scrub: scrubOpt as never }), 'CAIRN_INVALID_ARGUMENT');
      expect(e.message).toContain(field);
    }
    const db = await open(dir);
    expect((await rejectsWith(db.scrub({ throttleMBps: 0 }), 'CAIRN_INVALID_ARGUMENT')).message).toContain('options.throttleMBps');
    expect((await rejectsWith(db.scrub({ nope: true } as never), 'CAIRN_INVALID_ARGUMENT')).message).toContain('options.nope');
    await db.close();
  });

  test('cairn scrub CLI: JSON report, exit status 1 while damage remains, 0 after --repair', () => {
    const dir = tempDir();
    cloneStore(template, dir);
    const clean = spawnSync(process.execPath, [CLI, 'scrub', dir, '--json'], { encoding: 'utf8' });
    expect(clean.status, clean.stderr).toBe(0);
    expect(JSON.parse(clean.stdout).corrupt).toEqual([]);
    // A damaged graph file still lets the store open (the graph is rebuilt in memory), so the
    // CLI scrubs it open and rebuilds the file from the engine.
    const { index } = pickTargets(dir);
    damage(join(dir, index!), 'append');
    const bad = spawnSync(process.execPath, [CLI, 'scrub', dir], { encoding: 'utf8' });
    expect(bad.status).toBe(1);
    expect(bad.stdout).toContain(index);
    const fixed = spawnSync(process.execPath, [CLI, 'scrub', dir, '--repair', '--throttle', '200', '--json'], { encoding: 'utf8' });
    expect(fixed.status, fixed.stderr).toBe(0);
    const r = JSON.parse(fixed.stdout) as ScrubReport;
    expect(r.repaired.map((x) => [x.file, x.from])).toEqual([[index, 'engine']]);
  });
});
