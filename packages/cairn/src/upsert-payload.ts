/**
 * Writes a batch of upserts of one collection straight into a payload (docs/format.md, "Batch
 * payload"), byte for byte what `encodeBatch` writes for the same ops, without an op object or a
 * vector view per record: a bulk load then makes little garbage, so V8's young generation stays
 * small (bench/hnsw.js peak RSS) and the JS thread spends less per record.
 */
import { OP_UPSERT, releasePayloadBuffer, takePayloadBuffer, type UpsertVisitor, writeUtf8 } from './encode.js';

export class UpsertPayload {
  readonly #collection: string;
  readonly #vectorBytes: number;
  #buf: Buffer;
  #floats: Float32Array;
  #view: DataView;
  #o = 4;
  #count = 0;

  constructor(collection: string, dim: number, expectedRecords: number) {
    this.#collection = collection;
    this.#vectorBytes = 4 * dim;
    this.#buf = takePayloadBuffer(4 + expectedRecords * (16 + 3 * collection.length + this.#vectorBytes));
    this.#floats = new Float32Array(this.#buf.buffer, 0, this.#buf.buffer.byteLength >>> 2);
    this.#view = new DataView(this.#buf.buffer);
  }

  /** Appends one upsert; `add` is bound, to be passed as an `UpsertVisitor`. */
  readonly add: UpsertVisitor = (id, vectors, start, metadata) => {
    const collection = this.#collection;
    const vectorBytes = this.#vectorBytes;
    this.#reserve(1 + 2 + 3 * collection.length + 2 + 3 * id.length + 4 + vectorBytes + 4 + 3 * metadata.length);
    const buf = this.#buf;
    let o = this.#o;
    buf[o++] = OP_UPSERT;
    o = this.#str16(collection, o);
    o = this.#str16(id, o);
    o = buf.writeUInt32LE(vectorBytes >>> 2, o);
    const at = buf.byteOffset + o;
    if ((at & 3) === 0) {
      // Aligned: one memcpy, through a view made once per buffer.
      this.#floats.set(start === 0 && vectors.length === vectorBytes >>> 2 ? vectors : vectors.subarray(start, start + (vectorBytes >>> 2)), at >>> 2);
    } else {
      const view = this.#view;
      for (let j = 0, p = at; j < vectorBytes >>> 2; j++, p += 4) view.setFloat32(p, vectors[start + j]!, true);
    }
    o += vectorBytes;
    const n = writeUtf8(buf, metadata, o + 4);
    buf.writeUInt32LE(n, o);
    this.#o = o + 4 + n;
    this.#count++;
  };

  /** The payload; valid until the next payload is built (see `encodeBatch`). */
  finish(): Buffer {
    this.#buf.writeUInt32LE(this.#count, 0);
    releasePayloadBuffer(this.#buf);
    return this.#buf.subarray(0, this.#o);
  }

  #str16(s: string, o: number): number {
    const n = writeUtf8(this.#buf, s, o + 2);
    this.#buf[o] = n & 0xff;
    this.#buf[o + 1] = n >>> 8;
    return o + 2 + n;
  }

  #reserve(bytes: number): void {
    if (this.#o + bytes <= this.#buf.length) return;
    const grown = takePayloadBuffer(Math.max(2 * this.#buf.length, this.#o + bytes));
    this.#buf.copy(grown, 0, 0, this.#o);
    releasePayloadBuffer(this.#buf);
    this.#buf = grown;
    this.#floats = new Float32Array(grown.buffer, 0, grown.buffer.byteLength >>> 2);
    this.#view = new DataView(grown.buffer);
  }
}
