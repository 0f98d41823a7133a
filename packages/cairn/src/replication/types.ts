/**
 * Shapes shared by the store and the replication modules (a leaf: the store hands replication
 * a `ReplicationHost` and gets a `ReplicationHook` back, so neither imports the other's class).
 */
import type { NativeQuarantineNote, NativeStore } from '../native.js';
import type { HealReport, RecordRepair } from './record-repair.js';
import type { SegmentRepair } from './segment-repair.js';

export type WriteConcernLevel = 'local' | 'majority' | 'all';

/** Per-write override of the server's default write concern. */
export interface WriteConcern {
  w?: WriteConcernLevel;
  timeoutMs?: number;
}

export type ReplicaState = 'streaming' | 'catching-up' | 'snapshotting' | 'disconnected';

export interface ReplicaStatus {
  nodeId: string;
  /** host:port the replica connected from; null before its first connection. */
  address: string | null;
  state: ReplicaState;
  receivedSeq: bigint;
  durableSeq: bigint;
  appliedSeq: bigint;
  /** Records the primary has that this replica has not applied. */
  lagRecords: bigint;
  /** How long the oldest record this replica has not applied has been committed on the
   *  primary (monotonic clock); 0 when it is caught up. */
  lagMs: number;
  /** Wall-clock time of the last frame from the replica (data only); null if never. */
  lastContact: Date | null;
  /** Why the last connection ended, if it did. */
  lastError: string | null;
  /** WAL bytes sent to it and not yet acknowledged as received (bounded: back-pressure). */
  inFlightBytes: number;
}

export interface PrimaryStatus {
  role: 'primary';
  nodeId: string;
  lastSeq: bigint;
  /** Highest seq durable on a majority of the voters (the primary and its configured replicas). */
  commitSeq: bigint;
  replicas: ReplicaStatus[];
  /** The latest connections refused before they streamed (bad token, bad frames, unknown node), newest last. */
  rejected: RejectedConnection[];
  /** The last pass that repaired damaged records from the replicas; null before any. */
  lastHeal?: RecordHealStatus | null;
}

export interface RejectedConnection {
  address: string;
  /** The node id its HELLO claimed, if it got that far. */
  nodeId: string | null;
  error: string;
  at: Date;
}

export interface ReplicaNodeStatus {
  role: 'replica';
  nodeId: string;
  primary: string;
  state: 'connecting' | 'streaming' | 'catching-up' | 'snapshotting' | 'disconnected' | 'closed';
  receivedSeq: bigint;
  durableSeq: bigint;
  appliedSeq: bigint;
  /** The primary's last seq as last heard minus `appliedSeq`. */
  lagRecords: bigint;
  /** Monotonic ms since this replica last had everything the primary had told it of; 0 when caught up. */
  lagMs: number;
  lastContact: Date | null;
  lastError: string | null;
  /** Snapshots installed to catch up since this replica was opened. */
  snapshotsInstalled: number;
  /** The last pass that repaired damaged records from the other nodes; null before any. */
  lastHeal?: RecordHealStatus | null;
}

export interface StandaloneStatus {
  role: 'standalone';
  nodeId: string;
  lastSeq: bigint;
  commitSeq: bigint;
  replicas: ReplicaStatus[];
}

/** What the store lends replication: its native handle and identity. */
export interface ReplicationHost {
  readonly native: NativeStore;
  readonly nodeId: string;
  /** The store's directory (snapshots for catch-up are exported from it). */
  readonly dir: string;
}

/** What replication plugs into the store's write path. */
export interface ReplicationHook {
  /** Commit an encoded batch at a write concern (primary), or forward or refuse it (replica). */
  commit(payload: Buffer, concern: WriteConcern): Promise<bigint>;
  /** Run a local commit that only the primary can resolve at a write concern: `deleteWhere`
   *  (resolved on the commit thread) or a transaction (checked against its read view). A
   *  replica refuses it; forwarding would lose the resolution or the check. */
  commitBy(submit: () => Promise<bigint>, concern: WriteConcern): Promise<bigint>;
  /** Whether writes commit here (a primary), so a large batch may be staged in chunks
   *  (`Store.commitStaged`); a replica forwards whole payloads to its primary. */
  readonly commitsLocally: boolean;
  status(): PrimaryStatus | ReplicaNodeStatus;
  close(): Promise<void>;
  /** Repair one damaged record here from the other nodes (read-repair on `get`). */
  repairRecord?(collection: string, id: string): Promise<RecordRepair>;
  /** Repair every damaged record here from the other nodes (scrub, and after connecting). */
  healDamaged?(): Promise<HealReport>;
  /** Rebuild a damaged sealed WAL segment here from the other nodes' records (scrub). */
  repairWalSegment?(rel: string, expected: { bytes: number; xxh3: string } | undefined, note: NativeQuarantineNote): Promise<SegmentRepair>;
}

/** The last pass that repaired records from the other nodes (after a connection, or a scrub). */
export interface RecordHealStatus {
  at: Date;
  repaired: number;
  failed: HealReport['failed'];
}
