import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { type CollectionInfo, CollectionReader, type Metadata, type StoredRecord } from './collection-reader.js';
import { type EncodedOp, encodeBatch, type Metric } from './encode.js';
import { CairnError, fromNative, invalidArgument, native, nativeSync } from './errors.js';
import { encodeFilter, type Filter } from './filter.js';
import { type NativeReadKey, type NativeReadView, type NativeStore, nativeModule } from './native.js';
import { type ByteProgress, withNativeProgress } from './native-progress.js';
import { type HealthReport, type HttpServer, type ServeHttpOptions, StoreOps, type StoreStatus } from './ops/index.js';
import { checkQueryPollMicros, DEFAULT_QUERY_POLL_MICROS } from './query-poll.js';
import { ReadView } from './read-view.js';
import { type ColumnarRecords, encodeDeletes, encodeUpserts, forEachUpsert, type VectorRecord } from './records.js';
import { parseNodeId } from './replication/options.js';
import { type ReplicationServer, type ServeReplicationOptions, startReplicationServer } from './replication/server.js';
import type { PrimaryStatus, ReplicaNodeStatus, ReplicationHook, StandaloneStatus, WriteConcern } from './replication/types.js';
import { parseWriteConcern } from './replication/write-concern.js';
import { listSnapshots, pruneSnapshots, type RecoverableRange, recoverableRange, type SnapshotInfo, toSnapshotInfo } from './restore.js';
import { type ParsedScrubOptions, parseScrubOptions, runScrub, type ScrubOptions, type ScrubReport } from './scrub/index.js';
import { ReplicaSource } from './scrub/replica-source.js';
import { defaultSources, type RepairSource } from './scrub/sources.js';
import { checkStoreDir } from './store-dir.js';
import { runTransaction, type Transaction, type TransactionOptions, type TransactionStats } from './transaction.js';
import { STAGE_MIN_RECORDS, UpsertPayload } from './upsert-payload.js';
import { checkKnownKeys, checkName, checkOneOf, checkPlainObject, checkPositiveInt, MAX_DIM } from './validate.js';

export type {
  CollectionInfo,
  CountOptions,
  Metadata,
  QueryHit,
  QueryOptions,
  QueryResult,
  ScannedRecord,
  ScanOptions,
  SkippedRecord,
  StoredRecord,
} from './collection-reader.js';
export type { ColumnarRecords, VectorRecord } from './records.js';

/**
 * When a write's promise resolves:
 * - `always`: after its own fdatasync. Survives a process crash and a power cut.
 * - `group`: after an fdatasync shared with the commits that were queued with it. Survives a
 *   process crash and a power cut.
 * - `none`: after the write() into the OS page cache. Survives a process crash, not a power cut.
 */
export type SyncMode = 'none' | 'group' | 'always';

/**
 * What recovery on open does with damage (RocksDB's names):
 * - `tolerate-torn-tail` (default): truncate an unacknowledged torn write at the end of the
 *   log; refuse to open on any other damage, naming file and offset.
 * - `absolute-consistency`: refuse to open on any damage, a torn tail included.
 * - `skip-corrupt`: skip damaged records, open, and report every lost sequence range.
 */
export type RecoveryMode = 'tolerate-torn-tail' | 'absolute-consistency' | 'skip-corrupt';

export interface OpenOptions {
  /**
   * Create a new store when `dir` is missing or an empty directory (default true). With `false`,
   * a missing path or empty directory rejects with `CAIRN_NOT_FOUND`. Either way, a path that
   * exists and is not a store (a file, or a directory holding other files) rejects with
   * `CAIRN_NOT_A_STORE` and is left untouched.
   */
  create?: boolean;
  sync?: SyncMode;
  recovery?: RecoveryMode;
  /** Size of a preallocated WAL segment in bytes (default 32 MiB). */
  walSegmentBytes?: number;
  /**
   * WAL archive retention, applied at each checkpoint. Deleting archived WAL shrinks the range
   * point-in-time recovery can reach (`recoverableRange()`). Default: keep everything.
   */
  walArchive?: { maxAgeMs?: number; maxBytes?: number };
  /**
   * Snapshot schedule: a full snapshot every `fullIntervalMs`, an incremental one every
   * `incrementalIntervalMs`, keeping the newest `keep` (and every base a kept incremental
   * needs). Failures are emitted as `'snapshot-error'`; each snapshot as `'snapshot'`.
   */
  snapshots?: { fullIntervalMs?: number; incrementalIntervalMs?: number; keep?: number };
  /**
   * Background scrubbing: a scrub every `intervalMs` (one at a time), with the `db.scrub()`
   * options `throttleMBps`, `repair` and `concurrency`. Each report is emitted as `'scrub'`,
   * each failure as `'scrub-error'`. A running scrub is cancelled by `close()`.
   */
  scrub?: { intervalMs: number; throttleMBps?: number; repair?: boolean; concurrency?: number; deep?: boolean };
  /** This node's id in replication (default: the host name). */
  nodeId?: string;
  /** @internal set by `openReplica`: local writes are refused (`CAIRN_NOT_PRIMARY`). */
  replica?: boolean;
  /**
   * Keep the engine's counters and histograms for `db.metrics()` (default true; a few atomic
   * adds and two clock reads per commit group). `false`: the engine's figures stay zero.
   */
  metrics?: boolean;
  /**
   * Share of one core the background HNSW indexer may use while writes arrive, from 0 to 1
   * (default 0.5). Writes being written or acknowledged in the last 100 ms count as arriving; once they stop,
   * the indexer uses every core at low priority. 0 defers indexing until writes pause. Rows
   * not yet in the graph are scanned exactly by queries, so a long ingest at a small share
   * makes queries slower until the indexer catches up (`indexStats().pending`).
   */
  indexerWriteShare?: number;
  /**
   * A read view open longer than this is released, with a `'warning'` event, so that a leaked
   * view cannot keep row versions alive without bound (default 300 000 = 5 minutes).
   * Transactions are bounded by their own `timeoutMs` instead.
   */
  maxViewAgeMs?: number;
  /**
   * How long, in microseconds after a `query` is sent, the event loop keeps polling for its
   * answer instead of sleeping (default 1000; 0: never). Polling saves the wake-up of the
   * JavaScript thread, tens of microseconds on a VM, at the cost of that thread's CPU while it
   * would otherwise be idle; it stops when the answer arrives, and never runs while as many
   * queries are outstanding as there are cores (`query-poll.ts`).
   */
  queryPollMicros?: number;
}

export interface CollectionOptions {
  dim: number;
  metric?: Metric;
  m?: number;
  efConstruction?: number;
}

export type PayloadIndexType = 'keyword' | 'number' | 'bool';

export interface PayloadIndexInfo {
  field: string;
  type: PayloadIndexType;
  /** (value, row) pairs held: a row whose array holds n distinct indexed values counts n times. */
  entries: number;
}

export type BatchOp = { collection: string; op: 'upsert'; records: VectorRecord[] | ColumnarRecords } | { collection: string; op: 'delete'; ids: string[] };

export interface RecoveryReport {
  checkpointSeq: bigint;
  replayedRecords: number;
  lastSeq: bigint;
  /** Invalid bytes at the end of the log, truncated. `unsyncedLost`: valid records that followed
   *  a hole in a segment written with `sync: 'none'` (never fsynced, so a power cut may keep any
   *  of its pages), dropped with the tail so that the store stays a prefix of its history. */
  tornTail: { file: string; offset: number; bytes: number; unsyncedLost: { fromSeq: bigint; toSeq: bigint } | null } | null;
  skipped: Array<{ file: string; offset: number; fromSeq: bigint; toSeq: bigint | null; reason: string }>;
  badSegmentRecords: Array<{ file: string; offset: number; reason: string }>;
  /** Collections whose persisted HNSW graph was missing or unusable and is rebuilt in the background. */
  indexRebuilds: Array<{ collection: string; reason: string }>;
  /** Damaged checkpoint records rebuilt from the write that produced them (`from`: the WAL segment). */
  repairedRecords: Array<{ collection: string; id: string; file: string; offset: number; from: string }>;
  /** Damaged checkpoint records that could not be repaired: `get` of them fails with
   *  `CAIRN_CORRUPTION` and queries report them in `skipped`, until they are written or deleted. */
  unreadableRecords: Array<{ collection: string; id: string; file: string; offset: number; reason: string }>;
  /** Damaged checkpoint files this open replaced (`file`), and where their bytes were kept
   *  (`kept`, under `quarantine/`); both relative to the store directory. */
  quarantined: Array<{ file: string; kept: string }>;
  /** Why `MANIFEST` was unusable when this open used its identical copy `MANIFEST.copy` instead
   *  (and rewrote it); `null` normally. `absolute-consistency` refuses instead. */
  manifestRestored: string | null;
}

export interface IndexStats {
  /** Rows in the HNSW graph. */
  indexed: number;
  /** Acknowledged rows not yet in the graph; queries scan them exactly. */
  pending: number;
  /** Deleted or overwritten nodes still in the graph (removed by compaction). */
  tombstones: number;
  /** Heap bytes held by the graph (links, labels, per-node slots). Its vectors are the rows'
   *  own, shared rather than copied, and not counted here. */
  bytes: number;
}

const OPEN_KEYS = [
  'create',
  'sync',
  'indexerWriteShare',
  'recovery',
  'walSegmentBytes',
  'walArchive',
  'snapshots',
  'scrub',
  'nodeId',
  'replica',
  'metrics',
  'maxViewAgeMs',
  'queryPollMicros',
] as const;
const DEFAULT_MAX_VIEW_AGE_MS = 300_000;
const COLLECTION_KEYS = ['dim', 'metric', 'm', 'efConstruction'] as const;
const INDEX_TYPES: readonly PayloadIndexType[] = ['keyword', 'number', 'bool'];
const METRICS: readonly Metric[] = ['cosine', 'l2', 'ip'];

/**
 * Open the store in `dir`, recovering it if it was not closed cleanly. A new store is created
 * only in a missing or empty directory, and only unless `options.create` is false.
 */
export async function open(dir: string, options: OpenOptions = {}): Promise<Store> {
  if (typeof dir !== 'string' || dir.length === 0) throw invalidArgument('dir must be a non-empty string');
  checkPlainObject('options', options);
  checkKnownKeys('options', options, OPEN_KEYS);
  const sync = checkOneOf('options.sync', options.sync ?? 'group', ['none', 'group', 'always'] as const);
  const recovery = checkOneOf('options.recovery', options.recovery ?? 'tolerate-torn-tail', [
    'tolerate-torn-tail',
    'absolute-consistency',
    'skip-corrupt',
  ] as const);
  const segmentBytes = options.walSegmentBytes === undefined ? undefined : checkPositiveInt('options.walSegmentBytes', options.walSegmentBytes, 2 ** 31);
  const archive: { archiveMaxAgeMs?: number; archiveMaxBytes?: number } = {};
  if (options.walArchive !== undefined) {
    const w = checkPlainObject('options.walArchive', options.walArchive);
    checkKnownKeys('options.walArchive', w, ['maxAgeMs', 'maxBytes']);
    if (w.maxAgeMs !== undefined) archive.archiveMaxAgeMs = checkPositiveInt('options.walArchive.maxAgeMs', w.maxAgeMs);
    if (w.maxBytes !== undefined) archive.archiveMaxBytes = checkPositiveInt('options.walArchive.maxBytes', w.maxBytes);
  }
  let schedule: Required<NonNullable<OpenOptions['snapshots']>> | undefined;
  if (options.snapshots !== undefined) {
    const sc = checkPlainObject('options.snapshots', options.snapshots);
    checkKnownKeys('options.snapshots', sc, ['fullIntervalMs', 'incrementalIntervalMs', 'keep']);
    schedule = {
      fullIntervalMs: sc.fullIntervalMs === undefined ? 0 : checkPositiveInt('options.snapshots.fullIntervalMs', sc.fullIntervalMs),
      incrementalIntervalMs: sc.incrementalIntervalMs === undefined ? 0 : checkPositiveInt('options.snapshots.incrementalIntervalMs', sc.incrementalIntervalMs),
      keep: sc.keep === undefined ? Number.MAX_SAFE_INTEGER : checkPositiveInt('options.snapshots.keep', sc.keep),
    };
  }
  let scrubSchedule: { intervalMs: number; options: ParsedScrubOptions } | undefined;
  if (options.scrub !== undefined) {
    const sc = checkPlainObject('options.scrub', options.scrub);
    checkKnownKeys('options.scrub', sc, ['intervalMs', 'throttleMBps', 'repair', 'concurrency', 'deep']);
    const { intervalMs, ...rest } = sc;
    scrubSchedule = { intervalMs: checkPositiveInt('options.scrub.intervalMs', intervalMs, 2 ** 31 - 1), options: parseScrubOptions(rest, 'options.scrub') };
  }
  const nodeId = options.nodeId === undefined ? hostname() : parseNodeId('options.nodeId', options.nodeId);
  if (options.replica !== undefined && typeof options.replica !== 'boolean') throw invalidArgument('options.replica must be a boolean');
  const replica = options.replica === true;
  if (options.metrics !== undefined && typeof options.metrics !== 'boolean') throw invalidArgument('options.metrics must be a boolean');
  const metrics = options.metrics ?? true;
  const share = options.indexerWriteShare;
  if (share !== undefined && (typeof share !== 'number' || !(share >= 0 && share <= 1))) {
    throw invalidArgument(`options.indexerWriteShare must be a number from 0 to 1 (got ${String(share)})`);
  }
  const maxViewAgeMs =
    options.maxViewAgeMs === undefined ? DEFAULT_MAX_VIEW_AGE_MS : checkPositiveInt('options.maxViewAgeMs', options.maxViewAgeMs, 2 ** 31 - 1);
  const queryPollMicros = options.queryPollMicros === undefined ? DEFAULT_QUERY_POLL_MICROS : checkQueryPollMicros(options.queryPollMicros);
  if (options.create !== undefined && typeof options.create !== 'boolean') throw invalidArgument('options.create must be a boolean');
  await checkStoreDir(resolve(dir), options.create !== false);
  const handle = await native(() =>
    nativeModule.openStore(resolve(dir), {
      sync,
      recovery,
      ...(segmentBytes === undefined ? {} : { segmentBytes }),
      ...archive,
      replica,
      metrics,
      ...(share === undefined ? {} : { indexerWriteShare: share }),
    }),
  );
  const store = new Store(resolve(dir), handle, sync, { replica, maxViewAgeMs, queryPollMicros });
  store.nodeId = nodeId;
  if (schedule) store.startSnapshotSchedule(schedule);
  if (scrubSchedule) store.startScrubSchedule(scrubSchedule);
  return store;
}

/** The events a `Store` emits, with their listeners' arguments. */
export interface StoreEvents {
  /** A collection's persisted graph was missing or unusable on open; it is rebuilt in the background. */
  'index-rebuild': [rebuild: { collection: string; reason: string }];
  /** A scheduled snapshot was taken (`options.snapshots`). */
  snapshot: [info: SnapshotInfo];
  'snapshot-error': [error: unknown];
  /** A scheduled scrub finished (`options.scrub`). */
  scrub: [report: ScrubReport];
  'scrub-error': [error: unknown];
  /** Something the store did on its own that the application should know of; today: a read
   *  view open longer than `maxViewAgeMs` was released (`code: 'CAIRN_VIEW_EXPIRED'`). */
  warning: [warning: StoreWarning];
}

export interface StoreWarning {
  code: 'CAIRN_VIEW_EXPIRED';
  message: string;
  /** The released view's seq. */
  seq: bigint;
}

/** `db.stats()`: read views and the versions they keep, and transactions since open. */
export interface StoreStats {
  views: {
    /** Read views open, including the snapshot of each running transaction. */
    open: number;
    /** Prior row versions kept alive for them (rows changed or deleted after a view's seq). */
    pinnedVersions: number;
    /** The oldest seq a view pins; null when none is open. */
    oldestSeq: bigint | null;
  };
  transactions: TransactionStats;
}

type StoreEventName = keyof StoreEvents;

/** Typed overloads of the EventEmitter methods for `StoreEvents` (merged into the class). */
export interface Store {
  on<E extends StoreEventName>(event: E, listener: (...args: StoreEvents[E]) => void): this;
  once<E extends StoreEventName>(event: E, listener: (...args: StoreEvents[E]) => void): this;
  off<E extends StoreEventName>(event: E, listener: (...args: StoreEvents[E]) => void): this;
  addListener<E extends StoreEventName>(event: E, listener: (...args: StoreEvents[E]) => void): this;
  removeListener<E extends StoreEventName>(event: E, listener: (...args: StoreEvents[E]) => void): this;
  emit<E extends StoreEventName>(event: E, ...args: StoreEvents[E]): boolean;
}

/**
 * Events: `'index-rebuild'` ({ collection, reason }) for each collection whose persisted graph
 * was missing or unusable on open; emitted on the next tick after `open` resolves.
 * `'snapshot'` / `'snapshot-error'` and `'scrub'` (a `ScrubReport`) / `'scrub-error'` from the
 * schedules set by `open` options.
 */
// biome-ignore lint/suspicious/noUnsafeDeclarationMerging: the merged interface only narrows EventEmitter's methods to StoreEvents and declares nothing the class lacks
export class Store extends EventEmitter {
  readonly dir: string;
  readonly sync: SyncMode;
  readonly #native: NativeStore;
  #closed = false;
  #timers: NodeJS.Timeout[] = [];
  /** Snapshots run one at a time; a tick that finds one running is skipped. */
  #snapshotRunning = false;
  /** The background scrub in progress, if any: `close()` cancels it and waits. */
  #scrubRun: { abort: AbortController; done: Promise<void> } | null = null;
  /** What recovery found when this store was opened. */
  readonly recoveryReport: RecoveryReport;
  /** This node's id in replication (`options.nodeId`). */
  nodeId = hostname();
  /** Replication's part of the write path: a primary's server, or a replica's forwarding. */
  #replication: ReplicationHook | null = null;
  /** Metrics, status, health and HTTP: created on first use (see `ops/`). */
  #ops: StoreOps | null = null;
  /** Opened as a replica: local writes and transactions are refused. */
  readonly #replica: boolean;
  readonly #maxViewAgeMs: number;
  readonly #queryPollMicros: number;
  /** Open read views and the timers that expire them. */
  readonly #views = new Map<ReadView, NodeJS.Timeout>();
  readonly #txStats: TransactionStats = { committed: 0, conflicts: 0, retries: 0, aborted: 0, timedOut: 0 };

  /** @internal use `open()`. */
  constructor(dir: string, handle: NativeStore, sync: SyncMode, options: { replica?: boolean; maxViewAgeMs?: number; queryPollMicros?: number } = {}) {
    super();
    this.dir = dir;
    this.sync = sync;
    this.#native = handle;
    this.#replica = options.replica === true;
    this.#maxViewAgeMs = options.maxViewAgeMs ?? DEFAULT_MAX_VIEW_AGE_MS;
    this.#queryPollMicros = options.queryPollMicros ?? DEFAULT_QUERY_POLL_MICROS;
    this.recoveryReport = handle.recoveryReport();
    for (const rebuild of this.recoveryReport.indexRebuilds) {
      setImmediate(() => this.emit('index-rebuild', rebuild));
    }
  }

  /** Highest sequence number that is durable (per the sync mode) and visible. */
  get lastSeq(): bigint {
    return this.#native.lastSeq;
  }

  /** Why writes are refused, when an earlier write or fsync failed; otherwise null. */
  get poisoned(): string | null {
    return this.#native.poisoned;
  }

  #checkOpen(): void {
    if (this.#closed) throw new CairnError('CAIRN_CLOSED', 'store is closed');
  }

  /**
   * @internal Rejects, never throws. Chains on the native promise directly rather than through
   * `native()`: one async frame less on every commit, which matters to small ones.
   */
  commit(ops: EncodedOp[], concern?: WriteConcern): Promise<{ seq: bigint }> {
    try {
      return this.commitPayload(encodeBatch(ops), concern);
    } catch (e) {
      return Promise.reject(fromNative(e));
    }
  }

  /** @internal Delete the rows of `collection` matching `filter` (JSON text) as one batch,
   *  resolved on the commit thread, through the write path. */
  commitDeleteWhere(collection: string, filter: string, concern?: WriteConcern): Promise<{ seq: bigint; deleted: number }> {
    try {
      this.#checkOpen();
      let deleted = 0;
      const submit = () =>
        this.#native.deleteWhere(collection, filter).then((r) => {
          deleted = r.deleted;
          return r.seq;
        }, rejectNative);
      const hook = this.#replication;
      const seq = hook !== null ? hook.commitBy(submit, concern ?? {}) : submit();
      return seq.then((s) => ({ seq: s, deleted }));
    } catch (e) {
      return Promise.reject(fromNative(e));
    }
  }

  /** @internal Commit an encoded batch payload (docs/format.md) through the write path. */
  commitPayload(payload: Buffer, concern?: WriteConcern): Promise<{ seq: bigint }> {
    try {
      this.#checkOpen();
      const hook = this.#replication;
      if (hook !== null) return hook.commit(payload, concern ?? {}).then(toSeq);
      return this.#native.commit(payload).then(toSeq, rejectNative);
    } catch (e) {
      return Promise.reject(fromNative(e));
    }
  }

  /** @internal Whether a large batch may be staged (`commitStaged`): not on a replica, which
   *  forwards whole payloads to its primary. */
  get stagesWrites(): boolean {
    return this.#replication === null || this.#replication.commitsLocally;
  }

  /**
   * @internal Commit one batch handed to the commit thread in chunks as `fill` encodes it
   * (`staged_batch.rs`): `fill` passes each chunk (operations without the count field) to
   * `stage`; if it throws, the staged chunks are dropped and the commit rejects with its error.
   */
  commitStaged(fill: (stage: (ops: Buffer) => void) => void, concern?: WriteConcern): Promise<{ seq: bigint }> {
    try {
      this.#checkOpen();
      const batch = this.#native.beginBatch();
      try {
        fill((ops) => this.#native.stageChunk(batch, ops));
      } catch (e) {
        batch.abort();
        throw e;
      }
      const hook = this.#replication;
      if (hook === null) return this.#native.commitStaged(batch).then(toSeq, rejectNative);
      // A hook may refuse before committing (a fenced primary): drop the staged rows then too.
      return hook
        .commitBy(() => this.#native.commitStaged(batch), concern ?? {})
        .then(toSeq, (e: unknown) => {
          batch.abort();
          throw e;
        });
    } catch (e) {
      return Promise.reject(fromNative(e));
    }
  }

  /** `M` types the collection's metadata; it is not checked at run time beyond being JSON. */
  async createCollection<M extends object = Metadata>(name: string, options: CollectionOptions): Promise<Collection<M>> {
    this.#checkOpen();
    checkName('name', name);
    checkPlainObject('options', options);
    checkKnownKeys('options', options, COLLECTION_KEYS);
    const dim = checkPositiveInt('options.dim', options.dim, MAX_DIM);
    const metric = checkOneOf('options.metric', options.metric ?? 'cosine', METRICS);
    const m = options.m === undefined ? 16 : checkPositiveInt('options.m', options.m, 256);
    if (m < 2) throw invalidArgument('options.m must be at least 2');
    const efConstruction = options.efConstruction === undefined ? 200 : checkPositiveInt('options.efConstruction', options.efConstruction, 1 << 20);
    await this.commit([{ kind: 'create', name, dim, metric, m, efConstruction }]);
    return this.collection<M>(name);
  }

  /** Throws CAIRN_NOT_FOUND if the collection does not exist. `M` types its metadata (not
   *  checked at run time beyond being JSON). */
  collection<M extends object = Metadata>(name: string): Collection<M> {
    this.#checkOpen();
    checkName('name', name);
    const info = this.collections().find((c) => c.name === name);
    if (!info) throw new CairnError('CAIRN_NOT_FOUND', `collection '${name}' does not exist`);
    return new Collection<M>(this, this.#native, info, this.#queryPollMicros);
  }

  collections(): CollectionInfo[] {
    this.#checkOpen();
    return nativeSync(() => this.#native.collections());
  }

  async dropCollection(name: string): Promise<{ seq: bigint }> {
    this.#checkOpen();
    checkName('name', name);
    return this.commit([{ kind: 'drop', name }]);
  }

  /** Apply operations on one or more collections atomically: all of them or none after a crash.
   *  `options` overrides the replication server's write concern for this write. */
  async batch(ops: BatchOp[], options?: WriteConcern): Promise<{ seq: bigint }> {
    this.#checkOpen();
    const concern = parseWriteConcern('options', options);
    if (!Array.isArray(ops) || ops.length === 0) throw invalidArgument('ops must be a non-empty array');
    const encoded: EncodedOp[] = [];
    const dims = new Map(this.collections().map((c) => [c.name, c.dim]));
    ops.forEach((op, i) => {
      checkPlainObject(`ops[${i}]`, op);
      const name = checkName(`ops[${i}].collection`, op.collection);
      const dim = dims.get(name);
      if (dim === undefined) throw new CairnError('CAIRN_NOT_FOUND', `ops[${i}].collection '${name}' does not exist`);
      if (op.op === 'upsert') {
        checkKnownKeys(`ops[${i}]`, op, ['collection', 'op', 'records']);
        encodeUpserts(`ops[${i}].records`, name, dim, op.records, encoded);
      } else if (op.op === 'delete') {
        checkKnownKeys(`ops[${i}]`, op, ['collection', 'op', 'ids']);
        encodeDeletes(`ops[${i}].ids`, name, op.ids, encoded);
      } else {
        throw invalidArgument(`ops[${i}].op must be 'upsert' or 'delete'`);
      }
    });
    return this.commit(encoded, concern);
  }

  /**
   * A consistent read view at `lastSeq`: its collections' `get`, `getMany`, `count`, `scan` and
   * `query` answer as of `view.seq` whatever is written, checkpointed or compacted meanwhile.
   * Release it when done (`view.release()` or `using view = db.readView()`).
   */
  readView(): ReadView {
    this.#checkOpen();
    const view = new ReadView(
      nativeSync(() => this.#native.readView()),
      (v) => {
        clearTimeout(this.#views.get(v));
        this.#views.delete(v);
      },
      this.#queryPollMicros,
    );
    const expire = setTimeout(() => {
      if (view.released) return;
      view.release();
      this.emit('warning', {
        code: 'CAIRN_VIEW_EXPIRED',
        message: `read view at seq ${view.seq} was open longer than maxViewAgeMs (${this.#maxViewAgeMs} ms) and was released`,
        seq: view.seq,
      });
    }, this.#maxViewAgeMs);
    expire.unref();
    this.#views.set(view, expire);
    return view;
  }

  /**
   * Run `fn` as an optimistic transaction: its reads see a snapshot plus its own writes, and
   * its writes commit as ONE batch (one WAL record, atomic and durable like `batch`) unless an
   * id it read with `get`/`getMany` or wrote was written by someone else after the snapshot.
   * Then it is re-run up to `options.retries` times, and finally rejects with `CAIRN_CONFLICT`
   * naming the collection and id. A throw in `fn`, `tx.abort()` (`CAIRN_ABORTED`) or
   * `options.timeoutMs` (`CAIRN_TIMEOUT`) writes nothing. Resolves with `fn`'s value.
   */
  async transaction<T>(fn: (tx: Transaction) => Promise<T> | T, options?: TransactionOptions): Promise<T> {
    this.#checkOpen();
    if (this.#replica) throw new CairnError('CAIRN_NOT_PRIMARY', 'this store is a replica: run transactions on the primary');
    return runTransaction(
      {
        snapshot: () => {
          this.#checkOpen();
          const view = nativeSync(() => this.#native.readView());
          return { view, collections: nativeSync(() => view.collections()) };
        },
        commit: (view, ops, reads) => this.#commitTransaction(view, ops, reads),
        applied: (seq) => this.#applied(seq),
        stats: this.#txStats,
        queryPollMicros: this.#queryPollMicros,
      },
      fn,
      options,
    );
  }

  /** Resolves once `seq` is applied, polling each millisecond for at most 2 s: the write is in
   *  a commit group whose fsync is under way (or failed, which the retry then reports). */
  async #applied(seq: bigint): Promise<void> {
    for (let i = 0; i < 2000 && this.#native.lastSeq < seq && !this.#closed; i++) await new Promise((r) => setTimeout(r, 1));
  }

  #commitTransaction(view: NativeReadView, ops: EncodedOp[], reads: NativeReadKey[]): Promise<bigint> {
    this.#checkOpen();
    const payload = encodeBatch(ops);
    const submit = () => this.#native.commitTransaction(view, payload, reads).catch(rejectNative);
    const hook = this.#replication;
    return hook === null ? submit() : hook.commitBy(submit, {});
  }

  /** Read views open and the versions they keep; transactions since open. */
  stats(): StoreStats {
    this.#checkOpen();
    const v = this.#native.viewStats();
    return { views: { open: v.views, pinnedVersions: v.versions, oldestSeq: v.oldestSeq ?? null }, transactions: { ...this.#txStats } };
  }

  /**
   * Write the state to immutable checkpoint files, replace the manifest atomically, and move
   * the WAL segments it covers to the WAL archive.
   */
  async checkpoint(): Promise<{ seq: bigint }> {
    this.#checkOpen();
    const seq = await native(() => this.#native.checkpoint());
    return { seq };
  }

  /**
   * Checkpoint, then keep the checkpoint's files as a snapshot (hard links). An incremental
   * snapshot holds only the files and WAL added since the previous snapshot, its base.
   * `onProgress` gets the bytes the checkpoint writes plus, for an incremental one, the archived
   * WAL it reads to checksum, of a total known before the first byte; it ends at the total.
   */
  async snapshot(options: { incremental?: boolean; onProgress?: (p: ByteProgress) => void } = {}): Promise<SnapshotInfo> {
    this.#checkOpen();
    checkPlainObject('options', options);
    checkKnownKeys('options', options, ['incremental', 'onProgress']);
    if (options.incremental !== undefined && typeof options.incremental !== 'boolean') throw invalidArgument('options.incremental must be a boolean');
    if (options.onProgress !== undefined && typeof options.onProgress !== 'function') throw invalidArgument('options.onProgress must be a function');
    const info = await withNativeProgress(options.onProgress, (handle) => native(() => this.#native.snapshot(options.incremental === true, handle)));
    return toSnapshotInfo(info);
  }

  async snapshots(): Promise<SnapshotInfo[]> {
    this.#checkOpen();
    return listSnapshots(this.dir);
  }

  /** The seqs and times `restore` can reach from this store. */
  async recoverableRange(): Promise<RecoverableRange> {
    this.#checkOpen();
    return recoverableRange(this.dir);
  }

  /** Delete all but the newest `keep` snapshots, never a base that a kept incremental needs. */
  async pruneSnapshots(keep: number): Promise<string[]> {
    this.#checkOpen();
    return pruneSnapshots(this.dir, checkPositiveInt('keep', keep));
  }

  /** @internal started by `open` with `options.snapshots`. */
  startSnapshotSchedule(schedule: { fullIntervalMs: number; incrementalIntervalMs: number; keep: number }): void {
    const tick = async (incremental: boolean) => {
      if (this.#closed || this.#snapshotRunning) return;
      this.#snapshotRunning = true;
      try {
        const hasBase = incremental && (await this.snapshots()).length > 0;
        const info = await this.snapshot({ incremental: hasBase });
        await this.pruneSnapshots(schedule.keep);
        this.emit('snapshot', info);
      } catch (e) {
        // No write since the last snapshot is not a failure worth reporting.
        if (!(e instanceof CairnError && e.code === 'CAIRN_ALREADY_EXISTS') && !this.#closed) this.emit('snapshot-error', e);
      } finally {
        this.#snapshotRunning = false;
      }
    };
    if (schedule.fullIntervalMs > 0) this.#timers.push(setInterval(() => void tick(false), schedule.fullIntervalMs).unref());
    if (schedule.incrementalIntervalMs > 0) this.#timers.push(setInterval(() => void tick(true), schedule.incrementalIntervalMs).unref());
  }

  /**
   * Verify every file the store depends on (see `ScrubOptions`), in worker threads, while the
   * store keeps serving reads and writes. With `repair`, each damaged file is moved to
   * `quarantine/` with a note and replaced by an identical verified copy from a snapshot, or
   * rebuilt from the verified in-memory state. Rejects with `CAIRN_ABORTED` when cancelled
   * through `options.signal`.
   */
  async scrub(options: ScrubOptions = {}): Promise<ScrubReport> {
    this.#checkOpen();
    const report = await runScrub({ dir: this.dir, native: this.#native, ...this.#replicaSources() }, parseScrubOptions(options));
    this.#opsLayer().recordScrub(report);
    return report;
  }

  /** A replicated store's scrub also repairs from the other nodes, after the local sources. */
  #replicaSources(): { sources?: RepairSource[] } {
    const hook = this.#replication;
    const heal = hook?.healDamaged?.bind(hook);
    const segment = hook?.repairWalSegment?.bind(hook);
    return heal && segment ? { sources: [...defaultSources(), new ReplicaSource(heal, segment)] } : {};
  }

  /**
   * @internal Read-repair: `get` hit a damaged record. On a node with peers, fetch the record
   * from them (verified, majority) and install it here; resolves false when there are no peers.
   * Rejects CAIRN_CORRUPTION when no verified majority exists.
   */
  async readRepair(collection: string, id: string): Promise<boolean> {
    const hook = this.#replication;
    if (!hook?.repairRecord) return false;
    await hook.repairRecord(collection, id);
    return true;
  }

  #opsLayer(): StoreOps {
    this.#ops ??= new StoreOps(this, () => this.#native.stats(), this.recoveryReport.unreadableRecords.length);
    return this.#ops;
  }

  /** The Prometheus text exposition of this store's metrics (its own prom-client registry). */
  async metrics(): Promise<string> {
    this.#checkOpen();
    return this.#opsLayer().metrics();
  }

  /** 200-style health: ok, or the reasons the store is not (poisoned, unrepaired damage, fenced
   *  or disconnected replica). */
  async health(): Promise<HealthReport> {
    this.#checkOpen();
    return this.#opsLayer().health();
  }

  /** What `/status` serves: collections, seq, recoverable range, snapshots, scrubs, backups,
   *  replication, engine counters. */
  async status(): Promise<StoreStatus> {
    this.#checkOpen();
    return this.#opsLayer().status();
  }

  /**
   * Serve `/metrics`, `/health`, `/status` and a dashboard at `/` over HTTP. Loopback by
   * default (`127.0.0.1:9464`); any other address needs `token` (sent as a bearer token).
   * Closed by `close()` of the server or of the store.
   */
  async serveHttp(options: ServeHttpOptions = {}): Promise<HttpServer> {
    this.#checkOpen();
    return this.#opsLayer().serveHttp(options);
  }

  /** @internal started by `open` with `options.scrub`. */
  startScrubSchedule(schedule: { intervalMs: number; options: ParsedScrubOptions }): void {
    const tick = async () => {
      if (this.#closed || this.#scrubRun) return;
      const abort = new AbortController();
      const run = runScrub({ dir: this.dir, native: this.#native, ...this.#replicaSources() }, { ...schedule.options, signal: abort.signal });
      this.#scrubRun = {
        abort,
        done: run.then(
          () => {},
          () => {},
        ),
      };
      try {
        const report = await run;
        if (!this.#closed) this.#opsLayer().recordScrub(report);
        if (!this.#closed) this.emit('scrub', report);
      } catch (e) {
        if (!this.#closed) this.emit('scrub-error', e);
      } finally {
        this.#scrubRun = null;
      }
    };
    this.#timers.push(setInterval(() => void tick(), schedule.intervalMs).unref());
  }

  /**
   * Serve this store's WAL to replicas (see `ServeReplicationOptions`); from now on every write
   * waits for its write concern. `close()` of the store closes the server too.
   */
  async serveReplication(options: ServeReplicationOptions): Promise<ReplicationServer> {
    this.#checkOpen();
    if (this.#replication !== null) throw new CairnError('CAIRN_ALREADY_EXISTS', 'this store already serves replication or follows a primary');
    const server = await startReplicationServer({ native: this.#native, nodeId: this.nodeId, dir: this.dir }, options);
    this.#replication = server.hook;
    return {
      address: server.address,
      get inFlightCommits() {
        return server.inFlightCommits;
      },
      close: async () => {
        if (this.#replication === server.hook) this.#replication = null;
        await server.close();
      },
    };
  }

  /** Replication as this node sees it: its role, seqs and, on a primary, each replica's progress. */
  replicationStatus(): PrimaryStatus | ReplicaNodeStatus | StandaloneStatus {
    if (this.#replication !== null) return this.#replication.status();
    const lastSeq = this.#native.lastSeq;
    return { role: 'standalone', nodeId: this.nodeId, lastSeq, commitSeq: lastSeq, replicas: [] };
  }

  /** @internal `openReplica` routes writes through its connection to the primary. */
  attachReplication(make: (native: NativeStore) => ReplicationHook): ReplicationHook {
    if (this.#replication !== null) throw new CairnError('CAIRN_ALREADY_EXISTS', 'this store already serves replication or follows a primary');
    this.#replication = make(this.#native);
    return this.#replication;
  }

  /** Waits for queued writes, syncs, and records a clean shutdown. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const replication = this.#replication;
    this.#replication = null;
    if (replication) await replication.close();
    for (const t of this.#timers.splice(0)) clearInterval(t);
    for (const view of [...this.#views.keys()]) view.release();
    await this.#ops?.close();
    const scrub = this.#scrubRun;
    if (scrub) {
      scrub.abort.abort();
      await scrub.done;
    }
    await native(() => this.#native.close());
  }
}

const toSeq = (seq: bigint): { seq: bigint } => ({ seq });
const rejectNative = (e: unknown): never => {
  throw fromNative(e);
};

export class Collection<M extends object = Metadata> extends CollectionReader<M> {
  readonly #store: Store;
  readonly #native: NativeStore;

  /** @internal use `store.collection()`. */
  constructor(store: Store, handle: NativeStore, info: CollectionInfo, queryPollMicros: number) {
    super(handle, info, queryPollMicros);
    this.#store = store;
    this.#native = handle;
  }

  /** The stored record, checked against its checksum. A record known to be damaged, or whose
   *  copy fails its checksum, rejects with `CAIRN_CORRUPTION` naming it: wrong bytes are never
   *  returned. With replication, a damaged record is repaired from the other nodes and read again. */
  override async get(id: string): Promise<StoredRecord<M> | undefined> {
    try {
      return await super.get(id);
    } catch (e) {
      if (!(e instanceof CairnError && e.code === 'CAIRN_CORRUPTION') || !(await this.#store.readRepair(this.name, id))) throw e;
      return this.toRecord(
        id,
        nativeSync(() => this.#native.get(this.name, id)),
      );
    }
  }

  /** `options` overrides the replication server's write concern for this write. */
  /** `records` is an array of records, or their columnar form (`ColumnarRecords`). */
  async upsert(records: VectorRecord<M>[] | ColumnarRecords<M>, options?: WriteConcern): Promise<{ seq: bigint }> {
    const concern = parseWriteConcern('options', options);
    const count = upsertCount(records);
    if (count >= STAGE_MIN_RECORDS && this.#store.stagesWrites) {
      return this.#store.commitStaged((stage) => {
        const payload = new UpsertPayload(this.name, this.dim, count, stage);
        forEachUpsert('records', this.dim, records, payload.add);
        payload.flush();
      }, concern);
    }
    const payload = new UpsertPayload(this.name, this.dim, count);
    forEachUpsert('records', this.dim, records, payload.add);
    return this.#store.commitPayload(payload.finish(), concern);
  }

  async delete(ids: string[], options?: WriteConcern): Promise<{ seq: bigint }> {
    const concern = parseWriteConcern('options', options);
    const encoded: EncodedOp[] = [];
    encodeDeletes('ids', this.name, ids, encoded);
    return this.#store.commit(encoded, concern);
  }

  /**
   * Delete every row matching `filter` as ONE batch: atomic, durable per the sync mode, and one
   * WAL record for PITR and replication. The rows are resolved on the commit thread against the
   * state as of the record just before the batch, so a concurrent write is either before it
   * (and judged by the filter) or after it (and untouched). Nothing matching: nothing is
   * written, and `seq` is the last one. On a replica it rejects with `CAIRN_NOT_PRIMARY`.
   */
  async deleteWhere(filter: Filter, options?: WriteConcern): Promise<{ seq: bigint; deleted: number }> {
    const concern = parseWriteConcern('options', options);
    const text = encodeFilter('filter', filter);
    return this.#store.commitDeleteWhere(this.name, text, concern);
  }

  /** Index a metadata field (dotted path) for filters; built now and persisted. */
  async createIndex(field: string, options: { type: PayloadIndexType }): Promise<void> {
    if (typeof field !== 'string' || field.length === 0) throw invalidArgument('field must be a non-empty string');
    checkPlainObject('options', options);
    checkKnownKeys('options', options, ['type']);
    const type = checkOneOf('options.type', options.type, INDEX_TYPES);
    await native(() => this.#native.createIndex(this.name, field, type));
  }

  indexes(): PayloadIndexInfo[] {
    return nativeSync(() => this.#native.indexes(this.name)).map((i) => ({ field: i.field, type: i.type, entries: i.entries }));
  }

  async dropIndex(field: string): Promise<void> {
    if (typeof field !== 'string' || field.length === 0) throw invalidArgument('field must be a non-empty string');
    await native(() => this.#native.dropIndex(this.name, field));
  }

  /** Resolves once every acknowledged row is in the HNSW graph. */
  async waitForIndex(): Promise<void> {
    await native(() => this.#native.waitForIndex(this.name));
  }

  indexStats(): IndexStats {
    return nativeSync(() => this.#native.indexStats(this.name));
  }
}

/** Records in either upsert form, to size its payload; 1 when the shape is wrong (validation
 *  then reports it). */
function upsertCount(records: unknown): number {
  if (Array.isArray(records)) return records.length;
  const ids = (records as { ids?: unknown } | null)?.ids;
  return Array.isArray(ids) ? ids.length : 1;
}
