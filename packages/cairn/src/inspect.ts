/**
 * `inspectStore(dir)`: what a store holds and how it stands, read without its lock, so it works
 * while another process has the store open. Everything comes from files the engine keeps
 * consistent for readers: the manifest and its checkpoint files plus a read-only replay of the
 * WAL after them (native `liveView`: counts as of the last intact record, stopping at the torn
 * tail of a segment being written), the snapshot manifests, the recoverable range and the last
 * scrub's result. Nothing is written.
 */
import { lstat, readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Metric } from './encode.js';
import { CairnError, fromNative, nativeSync } from './errors.js';
import { LAYOUT } from './layout.js';
import { nativeModule } from './native.js';
import { listSnapshots, type RecoverableRange, recoverableRange, type SnapshotInfo } from './restore.js';
import { type LastScrub, readLastScrub } from './scrub/result.js';
import { checkStoreDir } from './store-dir.js';

export interface InspectedCollection {
  name: string;
  dim: number;
  metric: Metric;
  /** Rows as of `lastSeq`: the checkpoint plus every intact WAL record after it (including
   *  rows known to be unreadable). */
  count: number;
  /** Records in the collection's checkpoint files (a delta file counts the rows it changed);
   *  0 for a collection created since the checkpoint. */
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
  /** The last intact WAL record in sequence (or the checkpoint's, when none follows it). With
   *  `sync: 'none'` a record may be in the OS cache only; otherwise it is durable. */
  lastSeq: bigint;
  /** Its commit time (the checkpoint's when no record follows it). */
  lastTime: Date | null;
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
  /** The last scrub that ran to the end, from any process; null when none was recorded. */
  lastScrub: LastScrub | null;
  /** Why `SCRUB_RESULT` could not be read (it is damaged), else null. */
  lastScrubError: string | null;
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

export async function inspectStore(dir: string): Promise<StoreInspection> {
  const root = resolve(dir);
  await checkStoreDir(root, false);
  const openElsewhere = nativeSync(() => nativeModule.lockHeld(root));
  const manifest = nativeSync(() => nativeModule.readManifest(root));
  const live = await nativeModule.liveView(root).catch((e: unknown) => {
    throw fromNative(e);
  });
  const checkpointSeq = live?.checkpointSeq ?? manifest?.checkpointSeq ?? 0n;
  let lastScrub: LastScrub | null = null;
  let lastScrubError: string | null = null;
  try {
    lastScrub = readLastScrub(root);
  } catch (e) {
    if (!(e instanceof CairnError)) throw e;
    lastScrubError = `${e.code}: ${e.message}`;
  }
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
  const inCheckpoint = new Map((manifest?.collections ?? []).map((c) => [c.name, c]));
  const lastTimeMs = live?.lastTimeMs ?? manifest?.checkpointTimeMs ?? 0;
  return {
    dir: root,
    openElsewhere,
    checkpointSeq,
    checkpointTime: manifest && manifest.checkpointTimeMs > 0 ? new Date(manifest.checkpointTimeMs) : null,
    lastSeq: live?.lastSeq ?? checkpointSeq,
    lastTime: lastTimeMs > 0 ? new Date(lastTimeMs) : null,
    walRecordsAfterCheckpoint: live?.walRecords ?? 0,
    cleanShutdownSeq: manifest?.cleanShutdownSeq ?? null,
    collections: (live?.collections ?? []).map((c) => {
      const m = inCheckpoint.get(c.name);
      return {
        name: c.name,
        dim: c.dim,
        metric: c.metric,
        count: c.count,
        checkpointRecords: m ? m.segments.reduce((n, s) => n + s.records, 0) : 0,
        dataFiles: m?.segments.length ?? 0,
        unreadable: m?.unreadable.length ?? 0,
      };
    }),
    range,
    rangeError,
    snapshots,
    disk,
    quarantined,
    lastScrub,
    lastScrubError,
  };
}
