/**
 * A batch of upserts of one collection written straight into a payload as `records.ts`
 * validates them (`forEachUpsert`), without an op object per record: a bulk load then makes
 * little garbage, so V8's young generation stays small (bench/hnsw.js peak RSS) and the JS
 * thread spends less per record. The bytes are those `encodeBatch` writes for the same ops.
 *
 * Given a chunk sink, it hands over every `stageChunkRecords(expectedRecords)` operations as
 * they are written (a staged batch, `Store.commitStaged`), so the commit thread decodes one
 * chunk while the next is encoded.
 */
import { PayloadWriter, type UpsertVisitor } from './encode.js';

/** Operations per staged chunk, at least: enough that a chunk's hand-over (a copy and a
 *  wake-up of the commit thread) is a small share of encoding it. */
const MIN_STAGE_CHUNK_RECORDS = 256;
/** And at most: the last chunk is decoded after the writer is done, so it is kept short. */
const MAX_STAGE_CHUNK_RECORDS = 1024;
/** Batches of at least this many records (two chunks) are staged; smaller ones are committed
 *  whole. */
export const STAGE_MIN_RECORDS = 2 * MIN_STAGE_CHUNK_RECORDS;

/** Records per chunk when a batch of `records` is staged: about a quarter of it, within bounds
 *  (1,000-record batches ran 15-20% faster in four chunks than in two or whole; bench/README). */
export function stageChunkRecords(records: number): number {
  return Math.min(MAX_STAGE_CHUNK_RECORDS, Math.max(MIN_STAGE_CHUNK_RECORDS, Math.ceil(records / 4)));
}

export class UpsertPayload {
  readonly #collection: string;
  readonly #dim: number;
  readonly #writer: PayloadWriter;
  readonly #sink: ((ops: Buffer) => void) | undefined;
  readonly #chunkRecords: number;

  constructor(collection: string, dim: number, expectedRecords: number, chunkSink?: (ops: Buffer) => void) {
    this.#collection = collection;
    this.#dim = dim;
    this.#sink = chunkSink;
    this.#chunkRecords = stageChunkRecords(expectedRecords);
    const records = chunkSink === undefined ? expectedRecords : this.#chunkRecords;
    this.#writer = new PayloadWriter(4 + records * (16 + 3 * collection.length + 4 * dim));
  }

  /** Appends one upsert; bound, to be passed as an `UpsertVisitor`. */
  readonly add: UpsertVisitor = (id, vectors, start, metadata) => {
    this.#writer.upsert(this.#collection, id, vectors, start, this.#dim, metadata);
    if (this.#sink !== undefined && this.#writer.count === this.#chunkRecords) this.#sink(this.#writer.takeOps());
  };

  /** The payload; valid until the next payload is built (`PayloadWriter.finish`). */
  finish(): Buffer {
    return this.#writer.finish();
  }

  /** With a chunk sink: hands over the last chunk and gives the buffer back. */
  flush(): void {
    if (this.#writer.count > 0) this.#sink?.(this.#writer.takeOps());
    this.#writer.release();
  }
}
