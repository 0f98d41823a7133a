/**
 * Optimistic transactions (RocksDB's OptimisticTransactionDB). `db.transaction(fn)` runs `fn`
 * against a snapshot (a read view at its start) and buffers its writes here. At the end the
 * writes go to the commit thread as ONE batch, with the ids read through `get`/`getMany`: if
 * any id it read or wrote was written by someone else after the snapshot, the engine refuses it
 * with `CAIRN_CONFLICT` and `fn` is run again, up to `retries` times. A throw, a timeout or
 * `tx.abort()` writes nothing.
 *
 * `count`, `scan` and `query` inside a transaction read the snapshot and are not validated:
 * this is snapshot isolation, not serializability. Write skew is possible: two transactions
 * that each count the on-call doctors (2), each take a different one off call and commit both
 * succeed, leaving none. Read the rows you decide on with `get`/`getMany` (they are validated),
 * or write a common row both must change, to serialize such decisions.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import {
  type CollectionInfo,
  CollectionReader,
  type CountOptions,
  type Metadata,
  type QueryOptions,
  type QueryResult,
  type ScannedRecord,
  type ScanOptions,
  type StoredRecord,
} from './collection-reader.js';
import type { EncodedOp } from './encode.js';
import { CairnError, invalidArgument } from './errors.js';
import type { NativeReadKey, NativeReadView } from './native.js';
import { type ColumnarRecords, encodeDeletes, encodeUpserts, type VectorRecord } from './records.js';
import { checkKnownKeys, checkName, checkPlainObject, checkPositiveInt } from './validate.js';

export interface TransactionOptions {
  /** Re-runs of the function after a conflict (default 0: the first conflict rejects). */
  retries?: number;
  /** Time the function may take, per attempt, before the transaction is abandoned with
   *  `CAIRN_TIMEOUT` (default 30 000). */
  timeoutMs?: number;
}

/** Transactions since open (`db.stats().transactions`). */
export interface TransactionStats {
  committed: number;
  /** Commits refused because an id changed after the snapshot (each retry's too). */
  conflicts: number;
  /** Re-runs after a conflict. */
  retries: number;
  /** Ended by `tx.abort()`, a throw in the function, or a timeout. */
  aborted: number;
  timedOut: number;
}

/** What the store lends a transaction. */
export interface TransactionHost {
  /** A snapshot: a native view and the collections at its seq. */
  snapshot(): { view: NativeReadView; collections: CollectionInfo[] };
  /** Commit the batch if nothing read or written changed after the view (write concern applies). */
  commit(view: NativeReadView, payload: EncodedOp[], reads: NativeReadKey[]): Promise<bigint>;
  /** Resolves once `seq` is applied (or after a bounded wait). */
  applied(seq: bigint): Promise<void>;
  stats: TransactionStats;
  /** `OpenOptions.queryPollMicros` of the store, for the snapshot's queries. */
  queryPollMicros: number;
}

const TX_KEYS = ['retries', 'timeoutMs'] as const;
const DEFAULT_TIMEOUT_MS = 30_000;

/** The transaction whose function is running in this async context (nesting is refused). */
const running = new AsyncLocalStorage<Transaction>();

/** Run `fn` as a transaction, re-running it on conflict; resolves with its value once committed. */
export async function runTransaction<T>(host: TransactionHost, fn: (tx: Transaction) => Promise<T> | T, options: TransactionOptions = {}): Promise<T> {
  // A callback the function scheduled may run after its transaction ended: that is not nesting.
  if (running.getStore()?.ended === false) {
    throw new CairnError('CAIRN_NESTED_TRANSACTION', 'db.transaction was called inside a transaction function; use the outer transaction (tx) instead');
  }
  if (typeof fn !== 'function') throw invalidArgument('fn must be a function (tx) => ...');
  checkPlainObject('options', options);
  checkKnownKeys('options', options, TX_KEYS);
  const retries = options.retries === undefined ? 0 : checkRetries(options.retries);
  const timeoutMs = options.timeoutMs === undefined ? DEFAULT_TIMEOUT_MS : checkPositiveInt('options.timeoutMs', options.timeoutMs, 2 ** 31 - 1);
  for (let attempt = 0; ; attempt++) {
    const tx = new Transaction(host);
    try {
      const value = await running.run(tx, () => tx.run(fn, timeoutMs));
      await tx.commit();
      host.stats.committed++;
      return value;
    } catch (e) {
      if (e instanceof CairnError && e.code === 'CAIRN_CONFLICT') {
        host.stats.conflicts++;
        if (attempt < retries) {
          host.stats.retries++;
          // The conflicting write may still be on its way to the disk (framed in the same group):
          // a snapshot taken now would not hold it, and the retry would conflict again.
          if (e.seq !== undefined) await host.applied(e.seq);
          continue;
        }
        if (retries > 0) e.message = `${e.message} (after ${retries} retries)`;
      } else if (e instanceof CairnError && e.code === 'CAIRN_TIMEOUT') {
        host.stats.timedOut++;
      } else {
        host.stats.aborted++;
      }
      throw e;
    } finally {
      tx.end('ended');
    }
  }
}

function checkRetries(v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 1_000_000) throw invalidArgument('options.retries must be an integer from 0 to 1000000');
  return v;
}

type Buffered = EncodedOp & ({ kind: 'upsert' } | { kind: 'delete' });

/** One attempt of a transaction function: its snapshot, reads and buffered writes. */
export class Transaction {
  readonly #host: TransactionHost;
  readonly #view: NativeReadView;
  readonly #collections: Map<string, CollectionInfo>;
  /** (collection, id) -> the last write to it, in first-write order. */
  readonly #writes = new Map<string, Buffered>();
  readonly #reads = new Map<string, NativeReadKey>();
  /** Why the transaction can no longer be used; null while it runs. */
  #ended: string | null = null;
  #fail: ((e: CairnError) => void) | null = null;

  /** @internal made by `db.transaction`. */
  constructor(host: TransactionHost) {
    this.#host = host;
    const { view, collections } = host.snapshot();
    this.#view = view;
    this.#collections = new Map(collections.map((c) => [c.name, c]));
  }

  /** Whether the transaction has committed, aborted, failed or timed out. */
  get ended(): boolean {
    return this.#ended !== null;
  }

  /** The seq the transaction reads as of. */
  get seq(): bigint {
    return this.#view.seq;
  }

  /** The collection as of the snapshot; throws `CAIRN_NOT_FOUND` if it did not exist then. */
  collection<M extends object = Metadata>(name: string): TransactionCollection<M> {
    this.check();
    checkName('name', name);
    const info = this.#collections.get(name);
    if (!info)
      throw new CairnError('CAIRN_NOT_FOUND', `collection '${name}' does not exist (at the transaction's snapshot, seq ${this.seq})`, { collection: name });
    return new TransactionCollection<M>(this, this.#view, info, this.#host.queryPollMicros);
  }

  /** End the transaction now, writing nothing: `db.transaction` rejects with `CAIRN_ABORTED`. */
  abort(reason?: string): void {
    this.check();
    this.#failWith(new CairnError('CAIRN_ABORTED', `transaction aborted${reason === undefined ? '' : `: ${reason}`}`));
  }

  /** @internal */
  check(): void {
    if (this.#ended !== null) {
      throw new CairnError('CAIRN_TRANSACTION_ENDED', `the transaction has ${this.#ended}; start a new db.transaction to read or write`);
    }
  }

  /** @internal record an id read through get/getMany (validated at commit). */
  read(collection: string, id: string): void {
    this.#reads.set(`${collection}\0${id}`, { collection, id });
  }

  /** @internal buffer writes; the last write to an id wins. */
  write(ops: EncodedOp[]): void {
    this.check();
    for (const op of ops) {
      if (op.kind !== 'upsert' && op.kind !== 'delete') continue;
      const key = `${op.collection}\0${op.id}`;
      // Copied: the caller may reuse its arrays before the commit.
      const copy: Buffered = op.kind === 'upsert' ? { ...op, vector: Float32Array.from(op.vector) } : { ...op };
      this.#writes.delete(key);
      this.#writes.set(key, copy);
    }
  }

  /** @internal this transaction's own write to the id, if any. */
  own(collection: string, id: string): Buffered | undefined {
    return this.#writes.get(`${collection}\0${id}`);
  }

  /** @internal run the function until it settles, the timeout fires or `abort()` is called. */
  async run<T>(fn: (tx: Transaction) => Promise<T> | T, timeoutMs: number): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const stopped = new Promise<never>((_, reject) => {
      this.#fail = reject;
      timer = setTimeout(
        () =>
          this.#failWith(
            new CairnError('CAIRN_TIMEOUT', `transaction function did not finish within options.timeoutMs (${timeoutMs} ms); nothing was written`),
          ),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([Promise.resolve().then(() => fn(this)), stopped]);
    } finally {
      clearTimeout(timer);
    }
  }

  #failWith(e: CairnError): void {
    if (this.#ended !== null) return;
    this.#ended = e.code === 'CAIRN_TIMEOUT' ? 'timed out' : 'been aborted';
    this.#fail?.(e);
  }

  /** @internal commit the buffered writes (nothing to write: nothing to check, as of the snapshot). */
  async commit(): Promise<void> {
    this.check();
    this.#ended = 'committed';
    if (this.#writes.size === 0) return;
    await this.#host.commit(this.#view, [...this.#writes.values()], [...this.#reads.values()]);
  }

  /** @internal release the snapshot; any later use throws `CAIRN_TRANSACTION_ENDED`. */
  end(why: string): void {
    this.#ended ??= why;
    this.#view.release();
  }
}

/**
 * A collection inside a transaction. `get`/`getMany` read the snapshot plus this transaction's
 * own writes and are validated at commit; `upsert`/`delete` are buffered until the commit;
 * `count`, `scan`, `query` and `querySync` read the snapshot only (not this transaction's writes) and are
 * not validated.
 */
export class TransactionCollection<M extends object = Metadata> {
  readonly name: string;
  readonly dim: number;
  readonly #tx: Transaction;
  readonly #snapshot: CollectionReader<M>;

  /** @internal use `tx.collection()`. */
  constructor(tx: Transaction, view: NativeReadView, info: CollectionInfo, queryPollMicros: number) {
    this.#tx = tx;
    this.#snapshot = new CollectionReader<M>(view, info, queryPollMicros);
    this.name = info.name;
    this.dim = info.dim;
  }

  async get(id: string): Promise<StoredRecord<M> | undefined> {
    this.#tx.check();
    checkName('id', id);
    this.#tx.read(this.name, id);
    const own = this.#tx.own(this.name, id);
    if (own) return own.kind === 'upsert' ? { id, vector: Float32Array.from(own.vector), metadata: JSON.parse(own.metadata) as M } : undefined;
    return this.#snapshot.get(id);
  }

  async getMany(ids: string[]): Promise<Array<StoredRecord<M> | undefined>> {
    this.#tx.check();
    const found = await this.#snapshot.getMany(ids);
    return ids.map((id, i) => {
      this.#tx.read(this.name, id);
      const own = this.#tx.own(this.name, id);
      if (!own) return found[i] as StoredRecord<M> | undefined;
      return own.kind === 'upsert' ? { id, vector: Float32Array.from(own.vector), metadata: JSON.parse(own.metadata) as M } : undefined;
    });
  }

  /** Buffered until the commit. */
  async upsert(records: VectorRecord<M>[] | ColumnarRecords<M>): Promise<void> {
    this.#tx.check();
    const encoded: EncodedOp[] = [];
    encodeUpserts('records', this.name, this.dim, records, encoded);
    this.#tx.write(encoded);
  }

  /** Buffered until the commit. */
  async delete(ids: string[]): Promise<void> {
    this.#tx.check();
    const encoded: EncodedOp[] = [];
    encodeDeletes('ids', this.name, ids, encoded);
    this.#tx.write(encoded);
  }

  /** As of the snapshot; not validated at commit. */
  async count(options?: CountOptions): Promise<number> {
    this.#tx.check();
    return this.#snapshot.count(options);
  }

  /** As of the snapshot; not validated at commit. */
  scan(options?: ScanOptions): AsyncIterable<ScannedRecord> {
    this.#tx.check();
    return this.#snapshot.scan(options);
  }

  /** As of the snapshot; not validated at commit. */
  async query(vector: Float32Array | number[], options: QueryOptions): Promise<QueryResult<M>> {
    this.#tx.check();
    return this.#snapshot.query(vector, options);
  }

  /** `query` on the calling thread (see `CollectionReader.querySync`); as of the snapshot. */
  querySync(vector: Float32Array | number[], options: QueryOptions): QueryResult<M> {
    this.#tx.check();
    return this.#snapshot.querySync(vector, options);
  }
}
