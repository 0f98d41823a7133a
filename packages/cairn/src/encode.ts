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

export type EncodedOp =
  | { kind: 'create'; name: string; dim: number; metric: Metric; m: number; efConstruction: number }
  | { kind: 'drop'; name: string }
  | { kind: 'upsert'; collection: string; id: string; vector: Float32Array; metadata: string }
  | { kind: 'delete'; collection: string; id: string };

function opSize(op: EncodedOp): number {
  switch (op.kind) {
    case 'create':
      return 1 + 2 + Buffer.byteLength(op.name) + 4 + 1 + 1 + 2 + 4;
    case 'drop':
      return 1 + 2 + Buffer.byteLength(op.name);
    case 'upsert':
      return 1 + 2 + Buffer.byteLength(op.collection) + 2 + Buffer.byteLength(op.id) + 4 + op.vector.byteLength + 4 + Buffer.byteLength(op.metadata);
    case 'delete':
      return 1 + 2 + Buffer.byteLength(op.collection) + 2 + Buffer.byteLength(op.id);
  }
}

export function encodeBatch(ops: readonly EncodedOp[]): Buffer {
  let size = 4;
  for (const op of ops) size += opSize(op);
  const buf = Buffer.allocUnsafe(size);
  let o = buf.writeUInt32LE(ops.length, 0);
  const str16 = (s: string) => {
    const n = buf.write(s, o + 2, 'utf8');
    buf.writeUInt16LE(n, o);
    o += 2 + n;
  };
  for (const op of ops) {
    switch (op.kind) {
      case 'create':
        o = buf.writeUInt8(OP_CREATE_COLLECTION, o);
        str16(op.name);
        o = buf.writeUInt32LE(op.dim, o);
        o = buf.writeUInt8(METRIC_CODES[op.metric], o);
        o = buf.writeUInt8(0, o);
        o = buf.writeUInt16LE(op.m, o);
        o = buf.writeUInt32LE(op.efConstruction, o);
        break;
      case 'drop':
        o = buf.writeUInt8(OP_DROP_COLLECTION, o);
        str16(op.name);
        break;
      case 'upsert': {
        o = buf.writeUInt8(OP_UPSERT, o);
        str16(op.collection);
        str16(op.id);
        o = buf.writeUInt32LE(op.vector.length, o);
        buf.set(new Uint8Array(op.vector.buffer, op.vector.byteOffset, op.vector.byteLength), o);
        o += op.vector.byteLength;
        const n = buf.write(op.metadata, o + 4, 'utf8');
        buf.writeUInt32LE(n, o);
        o += 4 + n;
        break;
      }
      case 'delete':
        o = buf.writeUInt8(OP_DELETE, o);
        str16(op.collection);
        str16(op.id);
        break;
    }
  }
  return buf;
}
