/**
 * What a backup of a store directory holds, read without the store's lock (as `restore` reads):
 * the newest snapshot and its base chain from `snapshots/`, and every WAL segment (archived and
 * live) from the one holding the record after that snapshot on. Paths are those of the layout
 * `restore()` reads, so a restore only has to write the files back.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { CairnError } from '../errors.js';
import { LAYOUT } from '../layout.js';
import { nativeModule } from '../native.js';
import { listSnapshots, type SnapshotInfo } from '../restore.js';

export interface SourceFile {
  /** Path in the backup (and in the restore layout). */
  path: string;
  /** Where to read it; a live WAL segment may move to `alt` (the archive) meanwhile. */
  from: string;
  alt?: string;
  bytes: number;
  mtimeMs: number;
  /** Known without reading for snapshot files (their manifest lists it). */
  xxh3?: string;
  /** Immutable once it exists: snapshot files and archived WAL segments. */
  immutable: boolean;
}

export interface SourceContent {
  snapshot: SnapshotInfo | null;
  files: SourceFile[];
}

/** A WAL segment's name: its first sequence number in 20 digits (crates/cairn-core/src/layout.rs). */
const SEGMENT = new RegExp(`^(\\d{20})${LAYOUT.walExt.replace('.', '\\.')}$`);
export const WAL_BACKUP_DIR = LAYOUT.archive;

async function segments(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((n) => SEGMENT.test(n));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

export async function collectSource(dir: string, exclude: ReadonlySet<string>): Promise<SourceContent> {
  const all = await listSnapshots(dir);
  const newest = all.at(-1) ?? null;
  const byId = new Map(all.map((s) => [s.id, s]));
  const chain: SnapshotInfo[] = [];
  for (let cur = newest ?? undefined; cur; cur = cur.base ? byId.get(cur.base) : undefined) {
    chain.unshift(cur);
    if (cur.base && !byId.has(cur.base)) throw new CairnError('CAIRN_NOT_FOUND', `snapshot '${cur.base}' (base of '${cur.id}') is missing from ${dir}`);
  }
  const files: SourceFile[] = [];
  for (const snap of chain) {
    const sdir = join(dir, LAYOUT.snapshots, snap.id);
    for (const f of snap.files) {
      const from = join(sdir, f.path);
      const s = await stat(from);
      files.push({ path: `${LAYOUT.snapshots}/${snap.id}/${f.path}`, from, bytes: f.bytes, mtimeMs: s.mtimeMs, xxh3: f.xxh3, immutable: true });
    }
    const from = join(sdir, LAYOUT.snapshotManifest);
    const s = await stat(from);
    files.push({ path: `${LAYOUT.snapshots}/${snap.id}/${LAYOUT.snapshotManifest}`, from, bytes: s.size, mtimeMs: s.mtimeMs, immutable: true });
  }
  if (!exclude.has('wal')) {
    // The live directory is listed first: a segment a checkpoint archives between the two
    // listings is then seen at least once.
    const live = exclude.has('live-wal') ? [] : await segments(join(dir, LAYOUT.wal));
    const archived = await segments(join(dir, LAYOUT.archive));
    const names = new Map<string, boolean>();
    for (const n of live) names.set(n, true);
    for (const n of archived) names.set(n, false);
    const sorted = [...names.keys()].sort();
    const after = newest ? newest.seq + 1n : 1n;
    // The segment holding record `after` is the last one that starts at or before it.
    let first = 0;
    sorted.forEach((n, i) => {
      if (BigInt(SEGMENT.exec(n)![1]!) <= after) first = i;
    });
    for (const n of sorted.slice(first)) {
      const isLive = names.get(n)!;
      const from = join(dir, isLive ? LAYOUT.wal : LAYOUT.archive, n);
      let s: Awaited<ReturnType<typeof stat>>;
      try {
        s = await stat(from);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || !isLive) throw e;
        s = await stat(join(dir, LAYOUT.archive, n));
      }
      files.push({
        path: `${WAL_BACKUP_DIR}/${n}`,
        from,
        ...(isLive ? { alt: join(dir, LAYOUT.archive, n) } : {}),
        bytes: s.size,
        mtimeMs: s.mtimeMs,
        immutable: !isLive,
      });
    }
  }
  if (files.length === 0) throw new CairnError('CAIRN_NOT_FOUND', `${dir} has no snapshot and no WAL to back up`);
  return { snapshot: newest, files };
}

/**
 * The last valid record of a WAL segment (seq, time), decoded by the engine: records are read up
 * to the first damage, and each must follow `after` (or the one before it) consecutively. A
 * segment whose header is invalid holds no record that can be trusted.
 */
export function lastWalRecord(buf: Buffer, after: { seq: bigint; timeMs: number } | null): { seq: bigint; timeMs: number } | null {
  let segment: ReturnType<typeof nativeModule.decodeWalSegment>;
  try {
    segment = nativeModule.decodeWalSegment(buf);
  } catch {
    return after;
  }
  const damagedAt = segment.damage[0]?.offset ?? Infinity;
  let last = after;
  for (const r of segment.records) {
    if (r.offset >= damagedAt) break;
    if (last && r.seq !== last.seq + 1n && r.seq > last.seq) break;
    if (!last || r.seq > last.seq) last = { seq: r.seq, timeMs: r.timeMs };
  }
  return last;
}

/**
 * A live segment is preallocated with zeros past its last record. Its backup keeps the bytes up
 * to the last non-zero one (8-aligned), the length an archived segment has: a restore reads
 * records until a zero header or the end of the file, so both mean the same.
 */
export function trimPreallocatedTail(buf: Buffer): Buffer {
  let end = buf.length;
  while (end > nativeModule.WAL_SEGMENT_HEADER_BYTES && buf[end - 1] === 0) end--;
  const keep = Math.min(buf.length, Math.ceil(end / 8) * 8);
  return keep === buf.length ? buf : buf.subarray(0, keep);
}
