/**
 * Restore: the snapshots and the recoverable range a store offers, and point-in-time restore
 * into a new directory. (Rust's "recovery" is replay on open; this is not that.)
 * The engine does the file work (crates/cairn-core/src/{snapshot,pitr}.rs); this file validates
 * arguments and converts results.
 */
import { rename, rm } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';

import { invalidArgument, native } from './errors.js';
import { LAYOUT } from './layout.js';
import { type NativeSnapshotInfo, nativeModule } from './native.js';
import { withNativeProgress } from './native-progress.js';
import { checkKnownKeys, checkPlainObject } from './validate.js';

export interface SnapshotInfo {
  id: string;
  seq: bigint;
  time: Date;
  kind: 'full' | 'incremental';
  /** The snapshot an incremental one builds on. */
  base?: string;
  /** Bytes this snapshot holds itself (an incremental: only what its base chain lacks). */
  bytes: number;
  files: Array<{ path: string; bytes: number; xxh3: string }>;
}

export interface RecoverablePoint {
  seq: bigint;
  time: Date;
}

export interface RecoverableRange {
  from: RecoverablePoint;
  to: RecoverablePoint;
}

export type RestoreTo = { seq: bigint | number } | { time: Date | number };

export interface RestoreOptions {
  source: string;
  target: string;
  /** Omitted: the latest durable state. */
  to?: RestoreTo;
  /** Called about every 200 ms and once at the end with the bytes of source files copied or
   *  read (checkpoint files of the snapshot chain, WAL segments) of their total; never past it. */
  onProgress?: (p: { bytes: number; totalBytes: number }) => void;
  /**
   * Copy every snapshot file instead of linking it (default false). By default the immutable
   * checkpoint and graph files of the snapshot are cloned (FICLONE) or hard-linked after their
   * checksum is verified: fast, but a linked file shares its bytes with the source's snapshot,
   * so it is no independent copy for scrub to repair from (docs/architecture.md).
   */
  copy?: boolean;
}

export interface RestoreResult {
  seq: bigint;
  time: Date;
  /** The snapshot the restore started from, if any (otherwise the WAL from its first record). */
  snapshot: string | null;
  replayedRecords: number;
  /** How the snapshot's files reached the restored store. */
  files: { cloned: number; linked: number; copied: number };
}

export function toSnapshotInfo(raw: NativeSnapshotInfo): SnapshotInfo {
  return {
    id: raw.id,
    seq: raw.seq,
    time: new Date(raw.timeMs),
    kind: raw.kind,
    ...(raw.base ? { base: raw.base } : {}),
    bytes: raw.bytes,
    files: raw.files,
  };
}

export async function listSnapshots(dir: string): Promise<SnapshotInfo[]> {
  const raw = await native(() => nativeModule.listSnapshots(resolvePath(dir)));
  return raw.map(toSnapshotInfo);
}

export async function recoverableRange(dir: string): Promise<RecoverableRange> {
  const r = await native(() => nativeModule.recoverableRange(resolvePath(dir)));
  const point = (p: { seq: bigint; timeMs: number }) => ({ seq: p.seq, time: new Date(p.timeMs) });
  return { from: point(r.from), to: point(r.to) };
}

/**
 * Restore `source` as of `to` into `target` (which must not exist or be empty): the newest
 * snapshot at or before the target, then the archived WAL up to and including it. Works while
 * another process writes `source`; never takes its lock. A target outside the recoverable
 * range is an error that states the range.
 */
export async function restore(options: RestoreOptions): Promise<RestoreResult> {
  checkPlainObject('options', options);
  checkKnownKeys('options', options, ['source', 'target', 'to', 'onProgress', 'copy']);
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') throw invalidArgument('options.onProgress must be a function');
  if (options.copy !== undefined && typeof options.copy !== 'boolean') throw invalidArgument('options.copy must be a boolean');
  if (typeof options.source !== 'string' || options.source === '') throw invalidArgument('options.source must be a directory path');
  if (typeof options.target !== 'string' || options.target === '') throw invalidArgument('options.target must be a directory path');
  let seq: bigint | null = null;
  let timeMs: number | null = null;
  if (options.to !== undefined) {
    const to = checkPlainObject('options.to', options.to);
    checkKnownKeys('options.to', to, ['seq', 'time']);
    if ('seq' in to && 'time' in to) throw invalidArgument('options.to must give either seq or time, not both');
    if ('seq' in to) {
      const s = to.seq;
      if (typeof s === 'bigint' && s >= 0n) seq = s;
      else if (typeof s === 'number' && Number.isSafeInteger(s) && s >= 0) seq = BigInt(s);
      else throw invalidArgument('options.to.seq must be a non-negative integer or bigint');
    } else if ('time' in to) {
      const t = to.time instanceof Date ? to.time.getTime() : to.time;
      if (typeof t !== 'number' || !Number.isFinite(t) || t < 0) throw invalidArgument('options.to.time must be a valid Date or epoch milliseconds');
      timeMs = t;
    } else throw invalidArgument('options.to must have seq or time');
  }
  const r = await withNativeProgress(options.onProgress, (handle) =>
    native(() => nativeModule.restoreStore(resolvePath(options.source), resolvePath(options.target), seq, timeMs, handle, options.copy === true)),
  );
  return {
    seq: r.seq,
    time: new Date(r.timeMs),
    snapshot: r.snapshot,
    replayedRecords: r.replayedRecords,
    files: { cloned: r.clonedFiles, linked: r.linkedFiles, copied: r.copiedFiles },
  };
}

/**
 * Keep the newest `keep` snapshots and every snapshot a kept incremental builds on; delete the
 * rest. A snapshot is first renamed to a `.tmp` name, which listing ignores, then removed, so
 * a crash halfway never leaves a listed, partial snapshot. Returns the deleted ids.
 */
export async function pruneSnapshots(dir: string, keep: number): Promise<string[]> {
  const all = await listSnapshots(dir);
  const byId = new Map(all.map((s) => [s.id, s]));
  const kept = new Set<string>();
  for (const s of all.slice(Math.max(0, all.length - keep))) {
    for (let cur: SnapshotInfo | undefined = s; cur && !kept.has(cur.id); cur = cur.base ? byId.get(cur.base) : undefined) {
      kept.add(cur.id);
    }
  }
  const deleted: string[] = [];
  for (const s of all) {
    if (kept.has(s.id)) continue;
    const from = join(resolvePath(dir), LAYOUT.snapshots, s.id);
    const doomed = `${from}.deleting.tmp`;
    await rename(from, doomed);
    await rm(doomed, { recursive: true, force: true });
    deleted.push(s.id);
  }
  return deleted;
}
