/**
 * A batch of upserts of one collection written straight into a payload as `records.ts`
 * validates them (`forEachUpsert`), without an op object per record: a bulk load then makes
 * little garbage, so V8's young generation stays small (bench/hnsw.js peak RSS) and the JS
 * thread spends less per record. The bytes are those `encodeBatch` writes for the same ops.
 */
import { PayloadWriter, type UpsertVisitor } from './encode.js';

export class UpsertPayload {
  readonly #collection: string;
  readonly #dim: number;
  readonly #writer: PayloadWriter;

  constructor(collection: string, dim: number, expectedRecords: number) {
    this.#collection = collection;
    this.#dim = dim;
    this.#writer = new PayloadWriter(4 + expectedRecords * (16 + 3 * collection.length + 4 * dim));
  }

  /** Appends one upsert; bound, to be passed as an `UpsertVisitor`. */
  readonly add: UpsertVisitor = (id, vectors, start, metadata) => {
    this.#writer.upsert(this.#collection, id, vectors, start, this.#dim, metadata);
  };

  /** The payload; valid until the next payload is built (`PayloadWriter.finish`). */
  finish(): Buffer {
    return this.#writer.finish();
  }
}
