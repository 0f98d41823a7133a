export { open, Store, Collection } from './store.js';
export type {
  BatchOp,
  CollectionInfo,
  CollectionOptions,
  IndexStats,
  Metadata,
  OpenOptions,
  QueryHit,
  QueryOptions,
  QueryResult,
  RecoveryMode,
  RecoveryReport,
  SkippedRecord,
  StoredRecord,
  SyncMode,
  VectorRecord,
} from './store.js';
export type { Metric } from './encode.js';
export { CairnError } from './errors.js';
export { exportSnapshot, importSnapshot } from './archive.js';
export type { ExportOptions, ExportResult, ImportResult } from './archive.js';
export { restore, listSnapshots, pruneSnapshots, recoverableRange } from './restore.js';
export type { RecoverableRange, RecoverablePoint, RestoreOptions, RestoreResult, RestoreTo, SnapshotInfo } from './restore.js';
export type { CairnErrorCode } from './errors.js';
export { scrub } from './scrub/directory.js';
export { CopySource, EngineSource } from './scrub/index.js';
export type {
  DamageKind,
  DamagedFile,
  RepairAttempt,
  RepairContext,
  RepairSource,
  ScrubFinding,
  ScrubOptions,
  ScrubProgress,
  ScrubRepair,
  ScrubReport,
  ScrubUnrepaired,
} from './scrub/index.js';
export { BackupManager } from './backup/manager.js';
export type {
  BackupClock,
  BackupExclude,
  BackupManagerOptions,
  BackupProgress,
  CreateResult,
  PruneResult,
  S3Settings,
  ScheduleHandle,
  ScheduleOptions,
  TargetResult,
  VerifyProblem,
  VerifyReport,
} from './backup/types.js';
export type { BackupKind, BackupMetadata, BackupStatus } from './backup/metadata.js';
export { parseCron } from './backup/cron.js';
export type { Cron } from './backup/cron.js';
