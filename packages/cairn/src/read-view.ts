/**
 * Read views: `db.readView()` pins the store at `db.lastSeq`, and every read through the view
 * (`get`, `getMany`, `count`, `scan`, `query`, `querySync`) answers as of that seq while writes,
 * checkpoints and graph compaction go on. The engine keeps the row versions a view needs
 * (docs/architecture.md, "Read views and transactions") and frees them on `release()`.
 */
import { type CollectionInfo, CollectionReader, type Metadata } from './collection-reader.js';
import { CairnError, nativeSync } from './errors.js';
import type { NativeReadView } from './native.js';
import { checkName } from './validate.js';

/** A collection as of a view's seq: the reads of `Collection`; writes reject `CAIRN_READ_ONLY`. */
export class ViewCollection<M extends object = Metadata> extends CollectionReader<M> {
  /** A view is read-only: rejects with `CAIRN_READ_ONLY`. */
  async upsert(_records: unknown): Promise<never> {
    throw readOnly(this.name);
  }

  /** A view is read-only: rejects with `CAIRN_READ_ONLY`. */
  async delete(_ids: unknown): Promise<never> {
    throw readOnly(this.name);
  }
}

function readOnly(collection: string): CairnError {
  return new CairnError(
    'CAIRN_READ_ONLY',
    `collection '${collection}' was taken from a read view, which cannot write; write through the store or a transaction`,
    {
      collection,
    },
  );
}

/**
 * A consistent view of the store at `seq`. Release it when done (`release()`, or `using view =
 * db.readView()`): it keeps the row versions written after it alive. `close()` releases every
 * view; a view older than `maxViewAgeMs` (an `open` option) is released with a `'warning'`.
 */
export class ReadView {
  /** The sequence number every read answers as of. */
  readonly seq: bigint;
  readonly #native: NativeReadView;
  readonly #onRelease: (view: ReadView) => void;
  readonly #queryPollMicros: number;
  #released = false;

  /** @internal use `db.readView()`. */
  constructor(handle: NativeReadView, onRelease: (view: ReadView) => void, queryPollMicros: number) {
    this.#native = handle;
    this.#queryPollMicros = queryPollMicros;
    this.seq = handle.seq;
    this.#onRelease = onRelease;
  }

  get released(): boolean {
    return this.#released;
  }

  /** The collections that existed at `seq`, with their counts then. */
  collections(): CollectionInfo[] {
    this.#check();
    return nativeSync(() => this.#native.collections());
  }

  /** The collection as of `seq`; throws `CAIRN_NOT_FOUND` if it did not exist then. */
  collection<M extends object = Metadata>(name: string): ViewCollection<M> {
    checkName('name', name);
    const info = this.collections().find((c) => c.name === name);
    if (!info) throw new CairnError('CAIRN_NOT_FOUND', `collection '${name}' did not exist at seq ${this.seq}`, { collection: name });
    return new ViewCollection<M>(this.#native, info, this.#queryPollMicros);
  }

  /** Unpin the view and free the versions only it kept; idempotent. Later reads reject with
   *  `CAIRN_VIEW_RELEASED`. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#native.release();
    this.#onRelease(this);
  }

  [Symbol.dispose](): void {
    this.release();
  }

  #check(): void {
    if (this.#released) throw new CairnError('CAIRN_VIEW_RELEASED', `read view at seq ${this.seq} was released`);
  }
}
