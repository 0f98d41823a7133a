/**
 * `inspectStore(dir)`: what a store holds and how it stands, read without its lock, so it works
 * while another process has the store open. Everything comes from files the engine keeps
 * consistent for readers: the manifest, the WAL segments (decoded by the binding, which checks
 * every record), the snapshot manifests and the recoverable range. Nothing is written.
 */
import { lstat, readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Metric } from './encode.js';
import { CairnError, nativeSync } from './errors.js';
import { LAYOUT } from './layout.js';
import { nativeModule } from './native.js';
import { listSnapshots, type RecoverableRange, recoverableRange, type SnapshotInfo } from './restore.js';
import { checkStoreDir } from './store-dir.js';

export interface InspectedCollection {
  name: string;
  dim: number;
  metric: Metric;
  /** Records in the collection's checkpoint files as of `checkpointSeq`: its row count then when
   *  `dataFiles` is 1 (a base file alone). Writes after the checkpoint are in the WAL
   *  (`walRecordsAfterCheckpoint`); a collection created since appears after the next checkpoint. */
  checkpointRecords: number;
  /** Checkpoint data files (a base and the deltas on it). */
  dataFiles: number;
  /** Records known to be damaged beyond repair. */
  unreadable: number;
}

/** Bytes on disk by kind. Snapshot files are hard links: they share blocks with `data`/`archive`. */
export interface DiskUse {
  wal: number;
  archive: number;
  data: number;
  graph: number;
  snapshots: number;
  quarantine: number;
  total: number;
}

export interface StoreInspection {
  dir: string;
  /** A process holds the store's writer lock. */
  openElsewhere: boolean;
  checkpointSeq: bigint;
  checkpointTime: Date | null;
  /** Highest sequence number in the WAL (or the checkpoint's, when the WAL is empty). With
   *  `sync: 'none'` a record may be in the OS cache only; otherwise it is durable. */
  lastSeq: bigint;
  walRecordsAfterCheckpoint: number;
  /** The manifest records a clean close at this seq (the store is not open). */
  cleanShutdownSeq: bigint | null;
  collections: InspectedCollection[];
  /** `null` with `rangeError` when nothing can be restored. */
  range: RecoverableRange | null;
  rangeError: string | null;
  snapshots: Array<Omit<SnapshotInfo, 'files'>>;
  disk: DiskUse;
  /** Damaged files kept under `quarantine/` (their notes excluded). */
  quarantined: number;
}

async function sizeOf(path: string, match: (name: string) => boolean = () => true): Promise<number> {
  let total = 0;
  let entries: string[];
  try {
    entries = (await readdir(path, { recursive: true })) as string[];
  } catch (e) {
    if ((e as { code?: string }).code === 'ENOENT') return 0;
    throw e;
  }
  for (const name of entries) {
    if (!match(name)) continue;
    try {
      const s = await lstat(join(path, name));
      if (s.isFile()) total += s.size;
    } catch (e) {
      if ((e as { code?: string }).code !== 'ENOENT') throw e; // removed meanwhile
    }
  }
  return total;
}

/** The WAL segments in `wal/` (not the preallocated next one), decoded; segments removed while
 *  we look (archived by a checkpoint) are skipped. */
async function walTail(dir: string): Promise<{ lastSeq: bigint; records: Array<{ seq: bigint }> }> {
  const walDir = join(dir, LAYOUT.wal);
  let names: string[] = [];
  try {
    names = (await readdir(walDir)).filter((n) => n.endsWith(LAYOUT.walExt)).sort();
  } catch (e) {
    if ((e as { code?: string }).code !== 'ENOENT') throw e;
  }
  let lastSeq = 0n;
  const records: Array<{ seq: bigint }> = [];
  for (const name of names) {
    let bytes: Buffer;
    try {
      bytes = await readFile(join(walDir, name));
    } catch (e) {
      if ((e as { code?: string }).code === 'ENOENT') continue;
      throw e;
    }
    const segment = nativeSync(() => nativeModule.decodeWalSegment(bytes));
    for (const r of segment.records) {
      records.push({ seq: r.seq });
      if (r.seq > lastSeq) lastSeq = r.seq;
    }
  }
  return { lastSeq, records };
}

export async function inspectStore(dir: string): Promise<StoreInspection> {
  const root = resolve(dir);
  await checkStoreDir(root, false);
  const openElsewhere = nativeSync(() => nativeModule.lockHeld(root));
  const manifest = nativeSync(() => nativeModule.readManifest(root));
  const checkpointSeq = manifest?.checkpointSeq ?? 0n;
  const tail = await walTail(root);
  let range: RecoverableRange | null = null;
  let rangeError: string | null = null;
  try {
    range = await recoverableRange(root);
  } catch (e) {
    if (!(e instanceof CairnError)) throw e;
    rangeError = `${e.code}: ${e.message}`;
  }
  const snapshots = (await listSnapshots(root)).map(({ files: _files, ...rest }) => rest);
  const data = join(root, LAYOUT.data);
  const quarantineDir = join(root, LAYOUT.quarantine);
  const disk: DiskUse = {
    wal: await sizeOf(join(root, LAYOUT.wal)),
    archive: await sizeOf(join(root, LAYOUT.archive)),
    data: await sizeOf(data, (n) => n.endsWith(LAYOUT.dataExt)),
    graph: await sizeOf(data, (n) => n.endsWith(LAYOUT.graphExt)),
    snapshots: await sizeOf(join(root, LAYOUT.snapshots)),
    quarantine: await sizeOf(quarantineDir),
    total: 0,
  };
  disk.total = disk.wal + disk.archive + disk.data + disk.graph + disk.snapshots + disk.quarantine;
  let quarantined = 0;
  try {
    quarantined = (await readdir(quarantineDir)).filter((n) => !n.endsWith(LAYOUT.noteSuffix)).length;
  } catch (e) {
    if ((e as { code?: string }).code !== 'ENOENT') throw e;
  }
  return {
    dir: root,
    openElsewhere,
    checkpointSeq,
    checkpointTime: manifest && manifest.checkpointTimeMs > 0 ? new Date(manifest.checkpointTimeMs) : null,
    lastSeq: tail.lastSeq > checkpointSeq ? tail.lastSeq : checkpointSeq,
    walRecordsAfterCheckpoint: tail.records.filter((r) => r.seq > checkpointSeq).length,
    cleanShutdownSeq: manifest?.cleanShutdownSeq ?? null,
    collections: (manifest?.collections ?? []).map((c) => ({
      name: c.name,
      dim: c.dim,
      metric: c.metric,
      checkpointRecords: c.segments.reduce((n, s) => n + s.records, 0),
      dataFiles: c.segments.length,
      unreadable: c.unreadable.length,
    })),
    range,
    rangeError,
    snapshots,
    disk,
    quarantined,
  };
}
