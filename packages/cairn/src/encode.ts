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

/** One validated upsert, as `records.ts` hands it over: its vector is `vectors[start .. start + dim)`. */
export type UpsertVisitor = (id: string, vectors: Float32Array, start: number, metadata: string) => void;

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
export function writeUtf8(buf: Buffer, s: string, o: number): number {
  const n = s.length;
  if (n > 64) return buf.write(s, o, 'utf8');
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) return buf.write(s, o, 'utf8');
    buf[o + i] = c;
  }
  return n;
}

// Large payloads are built in one reused buffer: a fresh multi-megabyte allocation costs a
// page fault per 4 KiB, more than encoding into it. A build takes it and gives it back, so a
// build nested in another (a metadata getter that writes) gets a buffer of its own.
const SCRATCH_MIN_BYTES = 64 << 10;
const SCRATCH_MAX_BYTES = 16 << 20;
let scratch: Buffer | undefined;

/** A buffer of at least `size` bytes for building a payload; `releasePayloadBuffer` returns it. */
export function takePayloadBuffer(size: number): Buffer {
  if (size < SCRATCH_MIN_BYTES || size > SCRATCH_MAX_BYTES) return Buffer.allocUnsafe(size);
  const kept = scratch;
  scratch = undefined;
  if (kept !== undefined && kept.length >= size) return kept;
  return Buffer.allocUnsafe(Math.min(SCRATCH_MAX_BYTES, Math.max(size, 2 * (kept?.length ?? 0))));
}

/** Keeps `buf` for the next build if it is the size the scratch buffer may be. */
export function releasePayloadBuffer(buf: Buffer): void {
  if (buf.length >= SCRATCH_MIN_BYTES && buf.length <= SCRATCH_MAX_BYTES && buf.length >= (scratch?.length ?? 0)) scratch = buf;
}

/**
 * The returned Buffer is valid only until the next call (a large one shares the scratch
 * buffer): hand it straight to the native commit, which copies it before returning.
 */
export function encodeBatch(ops: readonly EncodedOp[]): Buffer {
  let size = 4;
  for (const op of ops) size += maxOpSize(op);
  const buf = takePayloadBuffer(size);
  let o = buf.writeUInt32LE(ops.length, 0);
  const str16 = (s: string) => {
    const n = writeUtf8(buf, s, o + 2);
    buf[o] = n & 0xff;
    buf[o + 1] = n >>> 8;
    o += 2 + n;
  };
  for (const op of ops) {
    switch (op.kind) {
      case 'create':
        buf[o++] = OP_CREATE_COLLECTION;
        str16(op.name);
        o = buf.writeUInt32LE(op.dim, o);
        buf[o++] = METRIC_CODES[op.metric];
        buf[o++] = 0;
        o = buf.writeUInt16LE(op.m, o);
        o = buf.writeUInt32LE(op.efConstruction, o);
        break;
      case 'drop':
        buf[o++] = OP_DROP_COLLECTION;
        str16(op.name);
        break;
      case 'upsert': {
        buf[o++] = OP_UPSERT;
        str16(op.collection);
        str16(op.id);
        o = buf.writeUInt32LE(op.vector.length, o);
        buf.set(new Uint8Array(op.vector.buffer, op.vector.byteOffset, op.vector.byteLength), o);
        o += op.vector.byteLength;
        const n = writeUtf8(buf, op.metadata, o + 4);
        buf.writeUInt32LE(n, o);
        o += 4 + n;
        break;
      }
      case 'delete':
        buf[o++] = OP_DELETE;
        str16(op.collection);
        str16(op.id);
        break;
    }
  }
  releasePayloadBuffer(buf);
  return buf.subarray(0, o);
}
