/**
 * The read half of a collection: `get`, `getMany`, `count`, `scan`, `query`, `querySync` and `queryBatch`
 * over a source of rows. A `Collection` reads the live store; a read view's collection (and a
 * transaction's) reads the same methods as of the view's seq.
 */

import type { Metric } from './encode.js';
import { fromNative, invalidArgument, native, nativeSync } from './errors.js';
import { encodeFilter, type Filter } from './filter.js';
import type { NativeQueryResult, NativeReadView, NativeRow, NativeStore } from './native.js';
import { polled } from './query-poll.js';
import { checkKnownKeys, checkName, checkPlainObject, checkPositiveInt, checkVector, isPlainName } from './validate.js';

export interface CollectionInfo {
  name: string;
  dim: number;
  metric: Metric;
  m: number;
  efConstruction: number;
  count: number;
}

export type Metadata = Record<string, unknown>;

export interface StoredRecord<M extends object = Metadata> {
  id: string;
  vector: Float32Array;
  metadata: M;
}

export interface QueryOptions {
  k: number;
  /** HNSW beam width (default 64, raised to k). Larger is slower and more exact. */
  ef?: number;
  /** Scan every row instead of using the graph: the ground truth. */
  exact?: boolean;
  /** Only rows matching this filter (operators, dotted paths, arrays: see README "Filters"). */
  filter?: Filter;
}

export interface CountOptions {
  filter?: Filter;
}

export interface ScanOptions {
  filter?: Filter;
  /** Most rows the iteration yields (default: all). */
  limit?: number;
  /** Resume after this id (the last id of an earlier scan): rows with greater ids only. */
  after?: string;
  /** Include each row's vector (default false). */
  vectors?: boolean;
}

export interface ScannedRecord {
  id: string;
  metadata: Metadata;
  /** Present when `vectors: true`. */
  vector?: Float32Array;
}

export interface QueryHit<M extends object = Metadata> {
  id: string;
  /** Cosine similarity (cosine), dot product (ip): higher is closer. Euclidean distance (l2): lower is closer. */
  score: number;
  /** Lower is closer, for every metric, so sorting never depends on the metric: the Euclidean
   *  distance (l2), `1 - cosine similarity` (cosine), `1 - dot product` (ip). */
  distance: number;
  metadata: M;
}

/** A record a query could not consider: damaged on disk and not repaired (see
 *  `RecoveryReport.unreadableRecords`), or an in-memory copy that failed its checksum. */
export interface SkippedRecord {
  id: string;
  reason: string;
}

/**
 * Hits best first. `skipped` (non-enumerable, normally empty) lists the records the query could
 * not consider; the hits are the best of the rest. A query never fails because one record is bad.
 */
export type QueryResult<M extends object = Metadata> = QueryHit<M>[] & { readonly skipped: SkippedRecord[] };

/** The native reads a reader needs: a store's (live) or a view's (as of its seq). */
export type RowSource = Pick<NativeStore & NativeReadView, 'get' | 'getMany' | 'count' | 'countWhere' | 'scan' | 'query' | 'querySync'>;

/** Query options after validation, in the native call's terms (`ef` null: exact). */
interface SearchArgs {
  k: number;
  ef: number | null;
  filter: string | null;
}

const QUERY_KEYS = ['k', 'ef', 'exact', 'filter'] as const;
const SCAN_KEYS = ['filter', 'limit', 'after', 'vectors'] as const;
/** Rows fetched per native call while scanning. */
const SCAN_PAGE = 1000;
const DEFAULT_EF = 64;

export class CollectionReader<M extends object = Metadata> {
  readonly name: string;
  readonly dim: number;
  readonly metric: Metric;
  /** @internal */
  protected readonly source: RowSource;
  readonly #queryPollMicros: number;

  /** @internal */
  constructor(source: RowSource, info: { name: string; dim: number; metric: Metric }, queryPollMicros: number) {
    this.source = source;
    this.#queryPollMicros = queryPollMicros;
    this.name = info.name;
    this.dim = info.dim;
    this.metric = info.metric;
  }

  /** The record, checked against its checksum: a damaged one rejects with `CAIRN_CORRUPTION`
   *  naming it; wrong bytes are never returned. */
  async get(id: string): Promise<StoredRecord<M> | undefined> {
    checkName('id', id);
    return this.toRecord(
      id,
      nativeSync(() => this.source.get(this.name, id)),
    );
  }

  protected toRecord(id: string, row: NativeRow | null | undefined): StoredRecord<M> | undefined {
    return row ? { id, vector: row.vector, metadata: JSON.parse(row.metadata) as M } : undefined;
  }

  /** Live rows; with `filter`, those matching it (counted natively, off the event loop). */
  async count(options?: CountOptions): Promise<number> {
    if (options === undefined) return nativeSync(() => this.source.count(this.name));
    checkPlainObject('options', options);
    checkKnownKeys('options', options, ['filter']);
    if (options.filter === undefined) return nativeSync(() => this.source.count(this.name));
    const filter = encodeFilter('options.filter', options.filter);
    return native(() => this.source.countWhere(this.name, filter));
  }

  /**
   * Rows matching `filter` in id order, fetched natively in pages. Resumable: pass the last id
   * seen as `after`, also after a reopen. Each page is one consistent state; a row that stays
   * live throughout the scan is yielded exactly once, whatever is written meanwhile.
   */
  scan(options: ScanOptions = {}): AsyncIterable<ScannedRecord> {
    const handle = this.source;
    const { name, dim } = this;
    return {
      async *[Symbol.asyncIterator]() {
        // Checked here, so a bad option rejects the first `next()` (and `for await`) with
        // CAIRN_INVALID_ARGUMENT naming the field, as every async API rejects; nothing throws
        // synchronously from `scan()` itself.
        checkPlainObject('options', options);
        checkKnownKeys('options', options, SCAN_KEYS);
        const filter = options.filter === undefined ? null : encodeFilter('options.filter', options.filter);
        const limit = options.limit === undefined ? Number.POSITIVE_INFINITY : checkPositiveInt('options.limit', options.limit);
        if (options.after !== undefined && typeof options.after !== 'string') throw invalidArgument('options.after must be a string id');
        if (options.vectors !== undefined && typeof options.vectors !== 'boolean') throw invalidArgument('options.vectors must be a boolean');
        const vectors = options.vectors === true;
        let after = options.after ?? null;
        let left = limit;
        while (left > 0) {
          const want = Math.min(left, SCAN_PAGE);
          const page = await native(() => handle.scan(name, filter, after, want, vectors));
          const packed = page.vectors
            ? new Float32Array(page.vectors.buffer.slice(page.vectors.byteOffset, page.vectors.byteOffset + page.vectors.byteLength))
            : null;
          for (let i = 0; i < page.ids.length; i++) {
            const row: ScannedRecord = { id: page.ids[i]!, metadata: JSON.parse(page.metadata[i]!) as Metadata };
            if (packed) row.vector = packed.slice(i * dim, (i + 1) * dim);
            yield row;
          }
          left -= page.ids.length;
          if (page.ids.length < want) return;
          after = page.ids[page.ids.length - 1]!;
        }
      },
    };
  }

  /** Rows by id, in input order; `undefined` for an id with no row. */
  async getMany(ids: string[]): Promise<Array<StoredRecord | undefined>> {
    if (!Array.isArray(ids)) throw invalidArgument('ids must be an array');
    ids.forEach((id, i) => {
      if (!isPlainName(id)) checkName(`ids[${i}]`, id);
    });
    const rows = nativeSync(() => this.source.getMany(this.name, ids));
    return rows.map((row, i) => (row ? { id: ids[i]!, vector: row.vector, metadata: JSON.parse(row.metadata) as Metadata } : undefined));
  }

  /** k nearest rows, best first. Every acknowledged write is visible, indexed or not. Records
   *  that cannot be read are skipped and listed in the result's `skipped`. The search runs on
   *  one of the engine's query workers, off the event loop; the event loop polls for its answer
   *  for up to `OpenOptions.queryPollMicros` rather than sleep (`query-poll.ts`). */
  query(vector: Float32Array | number[], options: QueryOptions): Promise<QueryResult<M>> {
    // Chained on the native promise rather than awaited through `native()`: two async frames
    // less per query. Rejects, never throws.
    try {
      const q = checkVector('vector', vector, this.dim);
      const { k, ef, filter } = searchArgs(options);
      return polled(this.source.query(this.name, q, 1, k, ef, filter), this.#queryPollMicros).then(([result]) => this.toResult(result!), rejectNative);
    } catch (e) {
      return Promise.reject(fromNative(e));
    }
  }

  /**
   * `query` on the calling thread, returning the result instead of a promise: the same options,
   * checks, errors (thrown, not rejected) and result. It saves the hop to a query worker (about 25 µs),
   * which is most of the cost of a small search, but the whole search blocks the event loop
   * meanwhile: use it where a search takes well under a millisecond (small `ef`, small
   * collections, selective indexed filters), and `query` otherwise (README, `querySync`).
   */
  querySync(vector: Float32Array | number[], options: QueryOptions): QueryResult<M> {
    const q = checkVector('vector', vector, this.dim);
    const { k, ef, filter } = searchArgs(options);
    return this.toResult(nativeSync(() => this.source.querySync(this.name, q, k, ef, filter)));
  }

  /** Many queries at once, searched in parallel on all cores, off the event loop. */
  async queryBatch(vectors: Array<Float32Array | number[]>, options: QueryOptions): Promise<QueryResult<M>[]> {
    if (!Array.isArray(vectors) || vectors.length === 0) throw invalidArgument('vectors must be a non-empty array');
    const packed = new Float32Array(vectors.length * this.dim);
    vectors.forEach((v, i) => {
      packed.set(checkVector(`vectors[${i}]`, v, this.dim), i * this.dim);
    });
    const { k, ef, filter } = searchArgs(options);
    const results = await native(() => this.source.query(this.name, packed, vectors.length, k, ef, filter));
    return results.map((r) => this.toResult(r));
  }

  protected toResult({ ids, scores, metadata, skipped }: NativeQueryResult): QueryResult<M> {
    const l2 = this.metric === 'l2';
    const meta = JSON.parse(metadata) as M[];
    const out: QueryHit<M>[] = [];
    for (let i = 0; i < ids.length; i++) {
      const score = scores[i]!;
      out.push({ id: ids[i]!, score, distance: l2 ? score : 1 - score, metadata: meta[i]! });
    }
    // Non-enumerable: results still compare and print as plain arrays of hits.
    return Object.defineProperty(out, 'skipped', { value: skipped, enumerable: false }) as QueryResult<M>;
  }
}

const rejectNative = (e: unknown): never => {
  throw fromNative(e);
};

/** The checked options of `query`, `querySync` and `queryBatch`. */
function searchArgs(options: QueryOptions): SearchArgs {
  checkPlainObject('options', options);
  checkKnownKeys('options', options, QUERY_KEYS);
  const k = checkPositiveInt('options.k', options.k, 100_000);
  const ef = options.ef === undefined ? DEFAULT_EF : checkPositiveInt('options.ef', options.ef, 100_000);
  if (options.exact !== undefined && typeof options.exact !== 'boolean') throw invalidArgument('options.exact must be a boolean');
  const filter = options.filter === undefined ? null : encodeFilter('options.filter', options.filter);
  return { k, ef: options.exact ? null : ef, filter };
}
