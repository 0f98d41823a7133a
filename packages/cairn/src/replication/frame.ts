/**
 * Replication frames (docs/format.md, "Replication protocol"): a 24-byte little-endian header
 * (magic, version, type, flags, sender's epoch, payload length, CRC32C) and a payload. The
 * decoder refuses a bad magic, version, type, CRC or an oversized length before it allocates
 * or hands anything on; a refused frame is never delivered.
 */
import type * as Crc32 from '@node-rs/crc32';

import { CairnError } from '../errors.js';
import { lazyRequire } from '../lazy-require.js';

const crc32 = lazyRequire<typeof Crc32>('@node-rs/crc32');

export const FRAME_MAGIC = 0x4c50_5243; // "CRPL" little-endian
export const FRAME_VERSION = 1;
export const OFF_MAGIC = 0;
export const OFF_VERSION = 4;
export const OFF_TYPE = 5;
export const OFF_FLAGS = 6;
export const OFF_EPOCH = 8;
export const OFF_LENGTH = 16;
export const OFF_CRC = 20;
export const FRAME_HEADER_LEN = 24;
/** Largest payload accepted; a larger length is refused before anything is allocated. */
export const MAX_FRAME_PAYLOAD = 64 * 1024 * 1024;

export const FrameType = {
  HELLO: 1,
  CHALLENGE: 2,
  AUTH: 3,
  READY: 4,
  WAL: 5,
  ACK: 6,
  HEARTBEAT: 7,
  FORWARD: 8,
  FORWARD_RESULT: 9,
  ERROR: 10,
  SNAPSHOT_BEGIN: 11,
  SNAPSHOT_DATA: 12,
  SNAPSHOT_END: 13,
  REPAIR_REQUEST: 14,
  REPAIR_RESPONSE: 15,
  WAL_RANGE_REQUEST: 16,
  WAL_RANGE_RESPONSE: 17,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];
const TYPE_NAMES = new Map<number, string>(Object.entries(FrameType).map(([k, v]) => [v, k]));

export function frameTypeName(t: number): string {
  return TYPE_NAMES.get(t) ?? `unknown(${t})`;
}

export interface Frame {
  type: FrameType;
  epoch: bigint;
  payload: Buffer;
}

export function protocolError(message: string): CairnError {
  return new CairnError('CAIRN_REPLICATION_PROTOCOL', message);
}

export function encodeFrame(type: FrameType, payload: Buffer, epoch = 0n): Buffer {
  if (payload.length > MAX_FRAME_PAYLOAD) throw protocolError(`frame payload of ${payload.length} bytes exceeds ${MAX_FRAME_PAYLOAD}`);
  const out = Buffer.allocUnsafe(FRAME_HEADER_LEN + payload.length);
  out.writeUInt32LE(FRAME_MAGIC, OFF_MAGIC);
  out.writeUInt8(FRAME_VERSION, OFF_VERSION);
  out.writeUInt8(type, OFF_TYPE);
  out.writeUInt16LE(0, OFF_FLAGS);
  out.writeBigUInt64LE(epoch, OFF_EPOCH);
  out.writeUInt32LE(payload.length, OFF_LENGTH);
  payload.copy(out, FRAME_HEADER_LEN);
  out.writeUInt32LE(frameCrc(out.subarray(0, OFF_CRC), payload), OFF_CRC);
  return out;
}

/** CRC32C over header bytes 0..20 then the payload. */
function frameCrc(head: Buffer, payload: Buffer): number {
  const { crc32c } = crc32();
  return crc32c(payload, crc32c(head)) >>> 0;
}

/**
 * Splits a byte stream into verified frames. `push` returns the complete frames so far and
 * throws a CAIRN_REPLICATION_PROTOCOL error on the first bad one (the caller closes the
 * connection; nothing of that frame or after it is delivered). `finish` at end of stream throws
 * if a frame was cut short.
 */
export class FrameDecoder {
  #chunks: Buffer[] = [];
  #buffered = 0;
  #failed = false;

  push(data: Buffer): Frame[] {
    if (this.#failed) return [];
    this.#chunks.push(data);
    this.#buffered += data.length;
    const frames: Frame[] = [];
    try {
      for (;;) {
        if (this.#buffered < FRAME_HEADER_LEN) break;
        const head = this.#peek(FRAME_HEADER_LEN);
        const length = checkHeader(head);
        if (this.#buffered < FRAME_HEADER_LEN + length) break;
        const whole = this.#take(FRAME_HEADER_LEN + length);
        const payload = whole.subarray(FRAME_HEADER_LEN);
        const want = whole.readUInt32LE(OFF_CRC);
        const got = frameCrc(whole.subarray(0, OFF_CRC), payload);
        if (want !== got) {
          throw protocolError(`${frameTypeName(whole.readUInt8(OFF_TYPE))} frame failed its CRC32C (header says ${hex(want)}, bytes give ${hex(got)})`);
        }
        frames.push({ type: whole.readUInt8(OFF_TYPE) as FrameType, epoch: whole.readBigUInt64LE(OFF_EPOCH), payload });
      }
    } catch (e) {
      this.#failed = true;
      this.#chunks = [];
      this.#buffered = 0;
      throw e;
    }
    return frames;
  }

  /** Bytes of an incomplete frame still held (0 at a clean end of stream). */
  get pending(): number {
    return this.#buffered;
  }

  finish(): void {
    if (!this.#failed && this.#buffered > 0) {
      throw protocolError(`connection closed inside a frame (${this.#buffered} bytes of an unfinished frame)`);
    }
  }

  #peek(n: number): Buffer {
    const first = this.#chunks[0] as Buffer;
    if (first.length >= n) return first.subarray(0, n);
    const all = Buffer.concat(this.#chunks);
    this.#chunks = [all];
    return all.subarray(0, n);
  }

  #take(n: number): Buffer {
    const whole = this.#peek(n);
    const first = this.#chunks[0] as Buffer;
    // Copied: the frame outlives the socket's buffer, and the rest of the chunk stays queued.
    const out = Buffer.from(whole);
    if (first.length === n) this.#chunks.shift();
    else this.#chunks[0] = first.subarray(n);
    this.#buffered -= n;
    return out;
  }
}

function checkHeader(head: Buffer): number {
  const magic = head.readUInt32LE(OFF_MAGIC);
  if (magic !== FRAME_MAGIC) throw protocolError(`not a Cairn replication frame (magic ${hex(magic)}, expected ${hex(FRAME_MAGIC)})`);
  const version = head.readUInt8(OFF_VERSION);
  if (version !== FRAME_VERSION) throw protocolError(`replication protocol version ${version} is not supported (this node speaks ${FRAME_VERSION})`);
  const type = head.readUInt8(OFF_TYPE);
  if (!TYPE_NAMES.has(type)) throw protocolError(`unknown replication frame type ${type}`);
  const length = head.readUInt32LE(OFF_LENGTH);
  if (length > MAX_FRAME_PAYLOAD) throw protocolError(`${frameTypeName(type)} frame length ${length} exceeds the maximum of ${MAX_FRAME_PAYLOAD} bytes`);
  return length;
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`;
}

/** Little-endian payload writer for the fixed layouts of docs/format.md. */
export class PayloadWriter {
  #parts: Buffer[] = [];
  u8(v: number): this {
    const b = Buffer.allocUnsafe(1);
    b.writeUInt8(v);
    this.#parts.push(b);
    return this;
  }
  u32(v: number): this {
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32LE(v);
    this.#parts.push(b);
    return this;
  }
  u64(v: bigint): this {
    const b = Buffer.allocUnsafe(8);
    b.writeBigUInt64LE(v);
    this.#parts.push(b);
    return this;
  }
  str16(s: string): this {
    const b = Buffer.from(s, 'utf8');
    if (b.length > 0xffff) throw protocolError('string field longer than 65535 bytes');
    const l = Buffer.allocUnsafe(2);
    l.writeUInt16LE(b.length);
    this.#parts.push(l, b);
    return this;
  }
  str32(s: string): this {
    const b = Buffer.from(s, 'utf8');
    this.u32(b.length);
    this.#parts.push(b);
    return this;
  }
  bytes(b: Buffer): this {
    this.#parts.push(b);
    return this;
  }
  done(): Buffer {
    return Buffer.concat(this.#parts);
  }
}

/** Reader twin of `PayloadWriter`; a short payload is a protocol error naming the frame. */
export class PayloadReader {
  #off = 0;
  constructor(
    readonly buf: Buffer,
    readonly what: string,
  ) {}
  #need(n: number): void {
    if (this.#off + n > this.buf.length) throw protocolError(`${this.what} frame payload is too short`);
  }
  u8(): number {
    this.#need(1);
    const v = this.buf.readUInt8(this.#off);
    this.#off += 1;
    return v;
  }
  u32(): number {
    this.#need(4);
    const v = this.buf.readUInt32LE(this.#off);
    this.#off += 4;
    return v;
  }
  u64(): bigint {
    this.#need(8);
    const v = this.buf.readBigUInt64LE(this.#off);
    this.#off += 8;
    return v;
  }
  str16(): string {
    this.#need(2);
    const n = this.buf.readUInt16LE(this.#off);
    this.#off += 2;
    return this.fixed(n).toString('utf8');
  }
  str32(): string {
    return this.fixed(this.u32()).toString('utf8');
  }
  fixed(n: number): Buffer {
    this.#need(n);
    const b = this.buf.subarray(this.#off, this.#off + n);
    this.#off += n;
    return b;
  }
  rest(): Buffer {
    const b = this.buf.subarray(this.#off);
    this.#off = this.buf.length;
    return b;
  }
  end(): void {
    if (this.#off !== this.buf.length) throw protocolError(`${this.what} frame payload has ${this.buf.length - this.#off} unexpected trailing bytes`);
  }
}
