export type { ArchiveProgress, ExportOptions, ExportResult, ImportOptions, ImportResult } from './archive.js';
export { exportSnapshot, importSnapshot } from './archive.js';
export type { Cron } from './backup/cron.js';
export { parseCron } from './backup/cron.js';
export { BackupManager } from './backup/manager.js';
export type { BackupKind, BackupMetadata, BackupStatus } from './backup/metadata.js';
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
export { type DrillOptions, type DrillReport, runDrill, type ScenarioResult, SEED_CLAIMS } from './drill/index.js';
export type { Metric } from './encode.js';
export type { CairnErrorCode } from './errors.js';
export { CairnError } from './errors.js';
export type { ClusterNode, NodeRole, RoleEvent } from './failover/node.js';
export { startNode } from './failover/node.js';
export type { StartNodeOptions } from './failover/options.js';
export type { ClusterMemberStatus, ClusterStatus } from './failover/status.js';
export { clusterStatus } from './failover/status.js';
export type { FieldOperators, Filter, FilterScalar } from './filter.js';
export type { DiskUse, InspectedCollection, StoreInspection } from './inspect.js';
export { inspectStore } from './inspect.js';
export type { HealthReport, HttpServer, ServeHttpOptions, StoreStatus } from './ops/index.js';
export type { BackupCatalog } from './ops/types.js';
export { ReadView, ViewCollection } from './read-view.js';
export type { OpenReplicaOptions } from './replication/replica.js';
export { openReplica, Replica } from './replication/replica.js';
export type { ReplicationServer, ServeReplicationOptions } from './replication/server.js';
export type {
  PrimaryStatus,
  RejectedConnection,
  ReplicaNodeStatus,
  ReplicaState,
  ReplicaStatus,
  StandaloneStatus,
  WriteConcern,
  WriteConcernLevel,
} from './replication/types.js';
export { ReplicationTimeoutError } from './replication/write-concern.js';
export type { RecoverablePoint, RecoverableRange, RestoreOptions, RestoreResult, RestoreTo, SnapshotInfo } from './restore.js';
export { listSnapshots, pruneSnapshots, recoverableRange, restore } from './restore.js';
export { scrub } from './scrub/directory.js';
export type {
  DamagedFile,
  DamageKind,
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
export { CopySource, EngineSource } from './scrub/index.js';
export type { LastScrub } from './scrub/result.js';
export type {
  BatchOp,
  CollectionInfo,
  CollectionOptions,
  ColumnarRecords,
  CountOptions,
  IndexStats,
  Metadata,
  OpenOptions,
  PayloadIndexInfo,
  PayloadIndexType,
  QueryHit,
  QueryOptions,
  QueryResult,
  RecoveryMode,
  RecoveryReport,
  ScannedRecord,
  ScanOptions,
  SkippedRecord,
  StoredRecord,
  StoreEvents,
  StoreStats,
  StoreWarning,
  SyncMode,
  VectorRecord,
} from './store.js';
export { Collection, open, Store } from './store.js';
export type { TransactionOptions, TransactionStats } from './transaction.js';
export { Transaction, TransactionCollection } from './transaction.js';
