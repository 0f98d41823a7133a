/**
 * Encodes the batch payload that the engine frames into one WAL record
 * (docs/format.md, "Batch payload"). The engine decodes and re-validates every byte.
 */
import { endianness } from 'node:os';

export const OP_CREATE_COLLECTION = 1;
export const OP_DROP_COLLECTION = 2;
export const OP_UPSERT = 3;
export const OP_DELETE = 4;

export const METRIC_CODES = { cosine: 0, l2: 1, ip: 2 } as const;
export type Metric = keyof typeof METRIC_CODES;

// Vectors are copied as raw float32 bytes; the format is little-endian.
if (endianness() !== 'LE') throw new Error('cairn requires a little-endian host');

/**
 * Metadata as `records.ts` hands it over: its JSON text, or a flat plain-JSON object (string,
 * boolean, finite number and null values: `isFlatJsonObject`), which the writer serializes
 * straight into the payload.
 */
export type UpsertMetadata = string | Readonly<Record<string, unknown>>;

/** One validated upsert, as `records.ts` hands it over: its vector is `vectors[start .. start + dim)`. */
export type UpsertVisitor = (id: string, vectors: Float32Array, start: number, metadata: UpsertMetadata) => void;

export type EncodedOp =
  | { kind: 'create'; name: string; dim: number; metric: Metric; m: number; efConstruction: number }
  | { kind: 'drop'; name: string }
  | { kind: 'upsert'; collection: string; id: string; vector: Float32Array; metadata: string }
  | { kind: 'delete'; collection: string; id: string };

// Upper bound of an op's encoded size: a UTF-16 code unit is at most 3 UTF-8 bytes. Sizing by
// this bound avoids a Buffer.byteLength call per string.
function maxOpSize(op: EncodedOp): number {
  switch (op.kind) {
    case 'create':
      return 1 + 2 + 3 * op.name.length + 4 + 1 + 1 + 2 + 4;
    case 'drop':
      return 1 + 2 + 3 * op.name.length;
    case 'upsert':
      return 1 + 2 + 3 * op.collection.length + 2 + 3 * op.id.length + 4 + op.vector.byteLength + 4 + 3 * op.metadata.length;
    case 'delete':
      return 1 + 2 + 3 * op.collection.length + 2 + 3 * op.id.length;
  }
}

/**
 * Write `s` as UTF-8 at `o`; returns the byte count. ASCII, the common case for ids, names and
 * JSON, is copied in JS: cheaper than a native call for short strings.
 */
function writeUtf8(buf: Buffer, s: string, o: number): number {
  const n = s.length;
  if (n > 64) return buf.write(s, o, 'utf8');
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) return buf.write(s, o, 'utf8');
    buf[o + i] = c;
  }
  return n;
}

/** Whether `Object.prototype` has an enumerable key, which `for...in` would visit on every
 *  object and `JSON.stringify` would not (the flat writer then leaves the object to it). */
function prototypeHasEnumerableKey(): boolean {
  for (const _ in Object.prototype) return true;
  return false;
}

/**
 * Writes `s` as a JSON string at `o` if every unit is printable ASCII other than '"' and '\\'
 * (written as is, exactly as `JSON.stringify` would); returns the next offset, or -1 when `s`
 * needs escaping or does not fit before `end`.
 */
function writeJsonString(buf: Buffer, s: string, o: number, end: number): number {
  const n = s.length;
  if (o + n + 2 > end) return -1;
  buf[o++] = 0x22;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c >= 0x7f || c === 0x22 || c === 0x5c) return -1;
    buf[o++] = c;
  }
  buf[o++] = 0x22;
  return o;
}

/** Writes a finite number as `JSON.stringify` would; returns the next offset, or -1 when it
 *  does not fit before `end`. */
function writeJsonNumber(buf: Buffer, v: number, o: number, end: number): number {
  if (v === (v | 0) && v > -0x80000000) {
    // An int32 (and -0, which JSON writes as 0): its digits, without a string.
    if (o + 11 > end) return -1;
    if (v < 0) {
      buf[o++] = 0x2d;
      v = -v;
    }
    let digits = 1;
    for (let rest = v; rest >= 10; rest = (rest / 10) | 0) digits++;
    for (let at = o + digits - 1; at >= o; at--) {
      buf[at] = 0x30 + (v % 10);
      v = (v / 10) | 0;
    }
    return o + digits;
  }
  return writeAscii(buf, String(v), o, end);
}

/** Writes `s`, known to be ASCII (a number's text, a literal); -1 when it does not fit before `end`. */
function writeAscii(buf: Buffer, s: string, o: number, end: number): number {
  const n = s.length;
  if (o + n > end) return -1;
  for (let i = 0; i < n; i++) buf[o + i] = s.charCodeAt(i);
  return o + n;
}

/**
 * Writes a flat plain-JSON object (`UpsertMetadata`) at `o` byte for byte as
 * `JSON.stringify(meta)` would, without building the string; returns the next offset, or -1
 * when a key or string needs escaping or the text does not fit before `end` (the caller then
 * writes `JSON.stringify(meta)`). Keys come in `for...in` order, which for an object without
 * inherited enumerable keys is `JSON.stringify`'s (integer keys ascending, then insertion order).
 */
function writeFlatJson(buf: Buffer, meta: Readonly<Record<string, unknown>>, o: number, end: number): number {
  if (o + 2 > end) return -1;
  buf[o++] = 0x7b;
  let first = true;
  for (const k in meta) {
    const v = meta[k];
    if (!first) {
      if (o >= end) return -1;
      buf[o++] = 0x2c;
    }
    first = false;
    o = writeJsonString(buf, k, o, end - 1);
    if (o < 0) return -1;
    buf[o++] = 0x3a;
    if (typeof v === 'string') o = writeJsonString(buf, v, o, end);
    else if (typeof v === 'number') o = writeJsonNumber(buf, v, o, end);
    else if (typeof v === 'boolean' || v === null) o = writeAscii(buf, String(v), o, end);
    else return -1;
    if (o < 0) return -1;
  }
  if (o >= end) return -1;
  buf[o++] = 0x7d;
  return o;
}

/** Bytes an upsert reserves for metadata it writes from an object; more goes through `JSON.stringify`. */
const FLAT_JSON_RESERVE = 512;

/** `buf.writeUInt32LE` without its argument checks (a tenth of the cost, per record): `v` is a
 *  length or a dimension and `o + 4` is within a reserved op. Returns the next offset. */
function writeU32(buf: Buffer, v: number, o: number): number {
  buf[o] = v & 0xff;
  buf[o + 1] = (v >>> 8) & 0xff;
  buf[o + 2] = (v >>> 16) & 0xff;
  buf[o + 3] = v >>> 24;
  return o + 4;
}

// Large payloads are built in one reused buffer: a fresh multi-megabyte allocation costs a
// page fault per 4 KiB, more than encoding into it. A build takes it and gives it back, so a
// build nested in another (a metadata getter that writes) gets a buffer of its own.
const SCRATCH_MIN_BYTES = 64 << 10;
const SCRATCH_MAX_BYTES = 16 << 20;
let scratch: Buffer | undefined;

/** A buffer of at least `size` bytes for building a payload; `releasePayloadBuffer` returns it. */
function takePayloadBuffer(size: number): Buffer {
  if (size < SCRATCH_MIN_BYTES || size > SCRATCH_MAX_BYTES) return Buffer.allocUnsafe(size);
  const kept = scratch;
  scratch = undefined;
  if (kept !== undefined && kept.length >= size) return kept;
  return Buffer.allocUnsafe(Math.min(SCRATCH_MAX_BYTES, Math.max(size, 2 * (kept?.length ?? 0))));
}

/** Keeps `buf` for the next build if it is the size the scratch buffer may be. */
function releasePayloadBuffer(buf: Buffer): void {
  if (buf.length >= SCRATCH_MIN_BYTES && buf.length <= SCRATCH_MAX_BYTES && buf.length >= (scratch?.length ?? 0)) scratch = buf;
}

/**
 * Writes ops into a payload buffer, growing it when an op does not fit (each op reserves its
 * upper bound first). One writer serves `encodeBatch` and `upsert` (`upsert-payload.ts`), so
 * the format's layout is spelled once. Vectors are copied without a view per op: with one
 * memcpy through a Float32Array over the buffer when the offset is 4-aligned, else float by
 * float.
 */
export class PayloadWriter {
  #buf: Buffer;
  #floats: Float32Array;
  #view: DataView;
  #o = 4;
  #count = 0;

  constructor(sizeHint: number) {
    this.#buf = takePayloadBuffer(Math.max(4, sizeHint));
    this.#floats = new Float32Array(this.#buf.buffer, 0, this.#buf.buffer.byteLength >>> 2);
    this.#view = new DataView(this.#buf.buffer);
  }

  create(name: string, dim: number, metric: Metric, m: number, efConstruction: number): void {
    this.#reserve(1 + 2 + 3 * name.length + 4 + 1 + 1 + 2 + 4);
    const buf = this.#buf;
    let o = this.#o;
    buf[o++] = OP_CREATE_COLLECTION;
    o = this.#str16(name, o);
    o = buf.writeUInt32LE(dim, o);
    buf[o++] = METRIC_CODES[metric];
    buf[o++] = 0;
    o = buf.writeUInt16LE(m, o);
    this.#end(buf.writeUInt32LE(efConstruction, o));
  }

  drop(name: string): void {
    this.#reserve(1 + 2 + 3 * name.length);
    this.#buf[this.#o] = OP_DROP_COLLECTION;
    this.#end(this.#str16(name, this.#o + 1));
  }

  /** An upsert whose vector is `vectors[start .. start + dim)`. */
  upsert(collection: string, id: string, vectors: Float32Array, start: number, dim: number, metadata: UpsertMetadata): void {
    const metaBytes = typeof metadata === 'string' ? 3 * metadata.length : FLAT_JSON_RESERVE;
    this.#reserve(1 + 2 + 3 * collection.length + 2 + 3 * id.length + 4 + 4 * dim + 4 + metaBytes);
    const buf = this.#buf;
    let o = this.#o;
    buf[o++] = OP_UPSERT;
    o = this.#str16(collection, o);
    o = this.#str16(id, o);
    o = writeU32(buf, dim, o);
    const at = buf.byteOffset + o;
    if ((at & 3) === 0) {
      this.#floats.set(start === 0 && vectors.length === dim ? vectors : vectors.subarray(start, start + dim), at >>> 2);
    } else {
      const view = this.#view;
      for (let j = 0, p = at; j < dim; j++, p += 4) view.setFloat32(p, vectors[start + j]!, true);
    }
    o += 4 * dim;
    let next = -1;
    // Checked per record: a metadata getter may have given Object.prototype a key meanwhile.
    if (typeof metadata !== 'string' && !prototypeHasEnumerableKey()) next = writeFlatJson(buf, metadata, o + 4, o + 4 + FLAT_JSON_RESERVE);
    if (next < 0) {
      const text = typeof metadata === 'string' ? metadata : JSON.stringify(metadata);
      this.#reserve(o + 4 + 3 * text.length - this.#o, o);
      next = o + 4 + writeUtf8(this.#buf, text, o + 4);
    }
    writeU32(this.#buf, next - o - 4, o);
    this.#end(next);
  }

  delete(collection: string, id: string): void {
    this.#reserve(1 + 2 + 3 * collection.length + 2 + 3 * id.length);
    this.#buf[this.#o] = OP_DELETE;
    this.#end(this.#str16(id, this.#str16(collection, this.#o + 1)));
  }

  /** Operations written since the last take. */
  get count(): number {
    return this.#count;
  }

  /** The operations written since the last take, back to back without the count field (a
   *  staged chunk); valid until the next write: hand it straight to the native call, which
   *  copies it. */
  takeOps(): Buffer {
    const ops = this.#buf.subarray(4, this.#o);
    this.#o = 4;
    this.#count = 0;
    return ops;
  }

  /** Gives the buffer back for the next payload; after the last `takeOps`. */
  release(): void {
    releasePayloadBuffer(this.#buf);
  }

  /** The payload; valid until the next payload is built: hand it straight to the native
   *  commit, which copies it before returning. */
  finish(): Buffer {
    this.#buf.writeUInt32LE(this.#count, 0);
    releasePayloadBuffer(this.#buf);
    return this.#buf.subarray(0, this.#o);
  }

  #end(o: number): void {
    this.#o = o;
    this.#count++;
  }

  #str16(s: string, o: number): number {
    const n = writeUtf8(this.#buf, s, o + 2);
    this.#buf[o] = n & 0xff;
    this.#buf[o + 1] = n >>> 8;
    return o + 2 + n;
  }

  /** Room for `bytes` more from the op being written; a grown buffer keeps what is written up
   *  to `kept` (the ops before it, or part of it). */
  #reserve(bytes: number, kept = this.#o): void {
    if (this.#o + bytes <= this.#buf.length) return;
    const grown = takePayloadBuffer(Math.max(2 * this.#buf.length, this.#o + bytes));
    this.#buf.copy(grown, 0, 0, kept);
    releasePayloadBuffer(this.#buf);
    this.#buf = grown;
    this.#floats = new Float32Array(grown.buffer, 0, grown.buffer.byteLength >>> 2);
    this.#view = new DataView(grown.buffer);
  }
}

/** The payload of `ops`; valid until the next payload is built (`PayloadWriter.finish`). */
export function encodeBatch(ops: readonly EncodedOp[]): Buffer {
  let size = 4;
  for (const op of ops) size += maxOpSize(op);
  const w = new PayloadWriter(size);
  for (const op of ops) {
    switch (op.kind) {
      case 'create':
        w.create(op.name, op.dim, op.metric, op.m, op.efConstruction);
        break;
      case 'drop':
        w.drop(op.name);
        break;
      case 'upsert':
        w.upsert(op.collection, op.id, op.vector, 0, op.vector.length, op.metadata);
        break;
      case 'delete':
        w.delete(op.collection, op.id);
        break;
    }
  }
  return w.finish();
}
