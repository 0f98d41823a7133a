/**
 * What the operations layer (metrics, status, health, HTTP) reads from an open store. `Store`
 * satisfies it; the ops code never imports `store.ts`, so the store can import the ops code.
 */
import type { NativeEngineStats } from '../native.js';
import type { RecoverableRange, SnapshotInfo } from '../restore.js';
import type { ScrubReport } from '../scrub/index.js';

export interface ReplicaStatusLike {
  nodeId: string;
  state: string;
  lagRecords?: number;
  lagMs?: number;
  lastContact?: number | Date | null;
}

/** The part of `db.replicationStatus()` the ops layer reads; everything optional, so that it
 *  works with whatever the replication code returns. */
export interface ReplicationStatusLike {
  role?: string;
  nodeId?: string;
  epoch?: number | bigint;
  fenced?: boolean;
  connected?: boolean;
  state?: string;
  /** A replica's last connection error (`CODE: message`). */
  lastError?: string;
  replicas?: ReplicaStatusLike[];
}

/** Keep only what `ReplicationStatusLike` names, with the types it says; null for no status. */
export function asReplicationStatus(raw: unknown): ReplicationStatusLike | null {
  if (raw === null || typeof raw !== 'object') return null;
  const r = raw as Record<string, unknown>;
  const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
  const num = (v: unknown) => (typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined);
  const bool = (v: unknown) => (typeof v === 'boolean' ? v : undefined);
  const replicas = Array.isArray(r.replicas)
    ? r.replicas.flatMap((x): ReplicaStatusLike[] => {
        if (x === null || typeof x !== 'object') return [];
        const y = x as Record<string, unknown>;
        const contact = y.lastContact;
        return [
          {
            nodeId: String(y.nodeId ?? '?'),
            state: String(y.state ?? 'unknown'),
            lagRecords: num(y.lagRecords),
            lagMs: num(y.lagMs),
            lastContact: contact instanceof Date || typeof contact === 'number' ? contact : null,
          },
        ];
      })
    : undefined;
  return {
    role: str(r.role),
    nodeId: str(r.nodeId),
    epoch: num(r.epoch),
    fenced: bool(r.fenced),
    connected: bool(r.connected),
    state: str(r.state),
    lastError: str(r.lastError),
    replicas,
  };
}

export interface OpsSource {
  readonly dir: string;
  readonly lastSeq: bigint;
  readonly poisoned: string | null;
  collections(): Array<{ name: string; dim: number; metric: string; count: number }>;
  snapshots(): Promise<SnapshotInfo[]>;
  recoverableRange(): Promise<RecoverableRange>;
  /** Present once replication is there; read through `asReplicationStatus`, so that the ops
   *  layer does not depend on the replication code's exact types. */
  replicationStatus?: () => unknown;
  /** Read views and transactions (`Store.stats()`). */
  stats?: () => {
    views: { open: number; pinnedVersions: number };
    transactions: { committed: number; conflicts: number; retries: number; aborted: number; timedOut: number };
  };
}

/** One backup as a target's catalog lists it (the part of `BackupMetadata` `/status` reads). */
export interface BackupListing {
  id: string;
  target: string;
  kind: string;
  status: string;
  timestamp: Date;
  error: string | null;
}

/** Where a store's backups go and how to list them: a `BackupManager` satisfies it. */
export interface BackupCatalog {
  readonly targets: string[];
  list(): Promise<BackupListing[]>;
}

/** A scrub as remembered for status and metrics. */
export interface ScrubRecord {
  time: Date;
  durationMs: number;
  files: number;
  bytes: number;
  corrupt: number;
  repaired: number;
  unrepaired: number;
  unreadableRecords: number;
  /** Short descriptions of what is still damaged after this scrub. */
  damage: string[];
}

export function scrubRecord(report: ScrubReport, time = new Date()): ScrubRecord {
  const damage = [
    ...report.unrepaired.map((u) => `${u.file}: ${u.reason}`),
    ...report.unreadableRecords.map((r) => `${r.collection}/${r.id}: unreadable (${r.reason})`),
  ];
  return {
    time,
    durationMs: report.durationMs,
    files: report.files,
    bytes: report.bytes,
    corrupt: report.corrupt.length,
    repaired: report.repaired.length,
    unrepaired: report.unrepaired.length,
    unreadableRecords: report.unreadableRecords.length,
    damage,
  };
}

export type EngineStatsReader = () => NativeEngineStats;
