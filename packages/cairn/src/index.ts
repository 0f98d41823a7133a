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
  RecoveryMode,
  RecoveryReport,
  StoredRecord,
  SyncMode,
  VectorRecord,
} from './store.js';
export type { Metric } from './encode.js';
export { CairnError } from './errors.js';
export { exportSnapshot, importSnapshot } from './archive.js';
export type { ExportOptions, ExportResult, ImportResult } from './archive.js';
export { restore, listSnapshots, pruneSnapshots, recoverableRange } from './recovery.js';
export type { RecoverableRange, RecoverablePoint, RestoreOptions, RestoreResult, RestoreTo, SnapshotInfo } from './recovery.js';
export type { CairnErrorCode } from './errors.js';
