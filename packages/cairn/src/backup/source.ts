/**
 * What a backup of a store directory holds, read without the store's lock (as `restore` reads):
 * the newest snapshot and its base chain from `snapshots/`, and every WAL segment (archived and
 * live) from the one holding the record after that snapshot on. Paths are those of the layout
 * `restore()` reads, so a restore only has to write the files back.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { CairnError } from '../errors.js';
import { nativeBytes } from '../native.js';
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

const SEGMENT = /^(\d{20})\.wal$/;
export const WAL_BACKUP_DIR = 'wal-archive';

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
    const sdir = join(dir, 'snapshots', snap.id);
    for (const f of snap.files) {
      const from = join(sdir, f.path);
      const s = await stat(from);
      files.push({ path: `snapshots/${snap.id}/${f.path}`, from, bytes: f.bytes, mtimeMs: s.mtimeMs, xxh3: f.xxh3, immutable: true });
    }
    const from = join(sdir, 'SNAPSHOT');
    const s = await stat(from);
    files.push({ path: `snapshots/${snap.id}/SNAPSHOT`, from, bytes: s.size, mtimeMs: s.mtimeMs, immutable: true });
  }
  if (!exclude.has('wal')) {
    // The live directory is listed first: a segment a checkpoint archives between the two
    // listings is then seen at least once.
    const live = exclude.has('live-wal') ? [] : await segments(join(dir, 'wal'));
    const archived = await segments(join(dir, 'wal-archive'));
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
      const from = join(dir, isLive ? 'wal' : 'wal-archive', n);
      let s;
      try {
        s = await stat(from);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || !isLive) throw e;
        s = await stat(join(dir, 'wal-archive', n));
      }
      files.push({
        path: `${WAL_BACKUP_DIR}/${n}`,
        from,
        ...(isLive ? { alt: join(dir, 'wal-archive', n) } : {}),
        bytes: s.size,
        mtimeMs: s.mtimeMs,
        immutable: !isLive,
      });
    }
  }
  if (files.length === 0) throw new CairnError('CAIRN_NOT_FOUND', `${dir} has no snapshot and no WAL to back up`);
  return { snapshot: newest, files };
}

const WAL_SEGMENT_HEADER = 32;
const WAL_RECORD_HEADER = 24;

/** The last valid record of a WAL segment (seq, time), checking each record's xxh3. */
export function lastWalRecord(buf: Buffer, after: { seq: bigint; timeMs: number } | null): { seq: bigint; timeMs: number } | null {
  let last = after;
  let pos = WAL_SEGMENT_HEADER;
  while (pos + WAL_RECORD_HEADER <= buf.length) {
    const len = buf.readUInt32LE(pos);
    const seq = buf.readBigUInt64LE(pos + 8);
    if (len === 0 && seq === 0n) break;
    const padded = Math.ceil(len / 8) * 8;
    const end = pos + WAL_RECORD_HEADER + padded + 8;
    if (end > buf.length) break;
    const sum = buf.subarray(end - 8, end);
    // The record stores the xxh3 as a little-endian u64; xxh3Hex prints it big-endian.
    const want = Buffer.from(nativeBytes.xxh3Hex(buf.subarray(pos, pos + WAL_RECORD_HEADER + len)), 'hex').reverse();
    if (!sum.equals(want)) break;
    if (last && seq !== last.seq + 1n && seq > last.seq) break;
    if (!last || seq > last.seq) last = { seq, timeMs: Number(buf.readBigUInt64LE(pos + 16)) };
    pos = end;
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
  while (end > WAL_SEGMENT_HEADER && buf[end - 1] === 0) end--;
  const keep = Math.min(buf.length, Math.ceil(end / 8) * 8);
  return keep === buf.length ? buf : buf.subarray(0, keep);
}
