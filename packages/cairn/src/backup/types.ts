/**
 * The shapes `BackupManager` takes and returns. Type-only and a leaf: every backup file may
 * import it, and it imports nothing of theirs but other leaves' types.
 */
import type { CairnError } from '../errors.js';
import type { Store } from '../store.js';
import type { ChunkProblem } from './chunks.js';
import type { BackupKind, BackupMetadata } from './metadata.js';

/** Time source for timestamps, retention and schedules; tests inject a simulated one. */
export interface BackupClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export type BackupExclude = 'wal' | 'live-wal';

export interface BackupManagerOptions {
  /** A store directory (read without its lock, like `restore`), or an open Store. */
  source: string | Store;
  /** `file:///path` or `s3://bucket/prefix`, or several: each gets every backup. */
  target: string | string[];
  /** Keep a backup while it is among the newest `count` or younger than `days`; omitted: keep all. */
  retention?: { days?: number; count?: number };
  /** zstd level 1..19 (default 3). */
  compression?: { level?: number };
  /** AES-256-GCM per chunk; the key is 32 bytes (or 64 hex digits). */
  encryption?: { key: Uint8Array | string };
  /** 'wal': no WAL (restores reach the snapshot only); 'live-wal': archived WAL only. */
  exclude?: BackupExclude[];
  clock?: BackupClock;
  /** Chunk uploads in flight per target (default 4). */
  concurrency?: number;
  /** S3 client settings (endpoint, region, credentials, forcePathStyle) for s3:// targets. */
  s3?: S3Settings;
}

export interface S3Settings {
  endpoint?: string;
  region?: string;
  credentials?: { accessKeyId: string; secretAccessKey: string };
  forcePathStyle?: boolean;
}

export type TargetResult = { target: string; ok: true; metadata: BackupMetadata } | { target: string; ok: false; error: CairnError; metadata: BackupMetadata };

/** The metadata of the backup on the first target that completed it, and every target's own result. */
export type CreateResult = BackupMetadata & { targets: TargetResult[] };

/** Reported after each file a run has taken (read or reused from its base). */
export interface BackupProgress {
  target: string;
  files: number;
  totalFiles: number;
  bytes: number;
  totalBytes: number;
}

export type VerifyProblemKind = 'manifest' | 'extra' | ChunkProblem | 'file' | 'target';

export interface VerifyProblem {
  target: string;
  kind: VerifyProblemKind;
  message: string;
}

export interface VerifyReport {
  id: string;
  ok: boolean;
  problems: VerifyProblem[];
  /** Per target holding the backup: whether it verified, and what was read. */
  targets: Array<{ target: string; ok: boolean; chunks: number; bytes: number }>;
}

export interface PruneResult {
  target: string;
  kept: string[];
  deleted: string[];
  chunksDeleted: number;
  bytesFreed: number;
  /** Why unreferenced chunks were left in place, if they were. */
  gcSkipped: string | null;
}

export interface ScheduleOptions {
  kind?: BackupKind;
  /** Prune after each backup (default true). */
  prune?: boolean;
  onBackup?: (result: CreateResult) => void;
  onError?: (error: unknown) => void;
}

export interface ScheduleHandle {
  stop(): void;
  /** When the next backup fires, or null once stopped. */
  readonly next: Date | null;
}
