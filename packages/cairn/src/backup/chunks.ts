/**
 * Chunk objects (docs/format.md, "Backup chunk"): a file is cut into 4 MiB pieces; each piece is
 * stored once under `chunks/<name>`, where the name is the SHA-256 of the raw piece (HMAC-SHA256
 * when encrypted, see crypto.ts). Float-heavy pieces are byte-shuffled, then zstd-compressed,
 * then optionally sealed with AES-256-GCM.
 */

import { LAYOUT } from '../layout.js';
import { nativeBytes } from '../native.js';
import { zstd } from '../zstd.js';
import { type ChunkKeys, chunkName, decrypt, encrypt, IV_BYTES, TAG_BYTES } from './crypto.js';

export const CHUNK_BYTES = 4 << 20;
/** Files up to this size are read and checked whole; larger ones stream in chunks. */
export const WHOLE_FILE_BYTES = 256 << 20;
export const CHUNK_MAGIC = Buffer.from('CAIRNCHK');
export const CHUNK_VERSION = 1;
export const CHUNK_HEADER_BYTES = 48;
const OFF_VERSION = 8;
export const OFF_FLAGS = 9;
const OFF_RAW_LEN = 12;
const OFF_PAYLOAD_LEN = 16;
const OFF_IV = 20;
const OFF_TAG = 32;
/** Bytes the GCM tag authenticates besides the payload: the header up to the IV. */
const AAD_HEADER_BYTES = OFF_IV;
export const FLAG_SHUFFLED = 1;
export const FLAG_ENCRYPTED = 2;

export const CHUNK_NAME = /^[0-9a-f]{64}$/;

/** Data, graph and WAL files are mostly little-endian floats and integers. */
const SHUFFLED_EXTS: readonly string[] = [LAYOUT.dataExt, LAYOUT.graphExt, LAYOUT.walExt];
export const shufflable = (path: string) => SHUFFLED_EXTS.some((ext) => path.endsWith(ext));

export interface EncodedChunk {
  name: string;
  object: Buffer;
}

function aad(header: Buffer, name: string): Buffer {
  return Buffer.concat([header.subarray(0, AAD_HEADER_BYTES), Buffer.from(name, 'ascii')]);
}

export function encodeChunk(raw: Buffer, options: { level: number; shuffle: boolean; keys: ChunkKeys | null }): EncodedChunk {
  const name = chunkName(raw, options.keys);
  const shuffle = options.shuffle && raw.length >= 4;
  const packed = zstd().compress(shuffle ? nativeBytes.shuffle4(raw) : raw, { compressionLevel: options.level });
  const header = Buffer.alloc(CHUNK_HEADER_BYTES);
  CHUNK_MAGIC.copy(header, 0);
  header.writeUInt8(CHUNK_VERSION, OFF_VERSION);
  header.writeUInt8((shuffle ? FLAG_SHUFFLED : 0) | (options.keys ? FLAG_ENCRYPTED : 0), OFF_FLAGS);
  header.writeUInt32LE(raw.length, OFF_RAW_LEN);
  header.writeUInt32LE(packed.length, OFF_PAYLOAD_LEN);
  if (!options.keys) return { name, object: Buffer.concat([header, packed]) };
  const sealed = encrypt(options.keys, packed, aad(header, name));
  sealed.iv.copy(header, OFF_IV);
  sealed.tag.copy(header, OFF_TAG);
  return { name, object: Buffer.concat([header, sealed.data]) };
}

/** Why a chunk object is bad; each kind has its own message (verify reports them). */
export type ChunkProblem = 'missing' | 'longer' | 'truncated' | 'content' | 'key';

export class ChunkError extends Error {
  constructor(
    readonly problem: ChunkProblem,
    message: string,
  ) {
    super(message);
  }
}

/** The content size a zstd frame declares (null if it declares none) and the offset where the
 *  frame ends, from its header and block headers (RFC 8878, 3.1.1); null if malformed. */
function zstdFrame(buf: Buffer): { contentSize: number | null; end: number } | null {
  if (buf.length < 6 || buf.readUInt32LE(0) !== 0xfd2fb528) return null;
  const descriptor = buf[4]!;
  const singleSegment = (descriptor >> 5) & 1;
  const sizeBytes = [singleSegment, 2, 4, 8][descriptor >> 6]!;
  let at = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][descriptor & 3]!;
  if (buf.length < at + sizeBytes) return null;
  let contentSize: number | null = null;
  if (sizeBytes === 1) contentSize = buf[at]!;
  else if (sizeBytes === 2) contentSize = buf.readUInt16LE(at) + 256;
  else if (sizeBytes === 4) contentSize = buf.readUInt32LE(at);
  else if (sizeBytes === 8) contentSize = Number(buf.readBigUInt64LE(at));
  at += sizeBytes;
  for (let last = false; !last; ) {
    if (buf.length < at + 3) return null;
    const block = buf.readUIntLE(at, 3);
    const type = (block >> 1) & 3;
    if (type === 3) return null;
    last = (block & 1) === 1;
    at += 3 + (type === 1 ? 1 : block >> 3);
  }
  return { contentSize, end: at + ((descriptor >> 2) & 1) * 4 };
}

/** Decode and check a chunk object against its name; returns the raw bytes. */
export function decodeChunk(name: string, object: Buffer, keys: ChunkKeys | null, expectRawBytes?: number): Buffer {
  const where = `chunk ${name}`;
  if (object.length < CHUNK_HEADER_BYTES || !object.subarray(0, 8).equals(CHUNK_MAGIC)) {
    if (object.length < CHUNK_HEADER_BYTES)
      throw new ChunkError('truncated', `${where} is truncated: ${object.length} bytes, shorter than its ${CHUNK_HEADER_BYTES}-byte header`);
    throw new ChunkError('content', `${where} content does not match its SHA-256 (bad magic: not a Cairn chunk)`);
  }
  const version = object.readUInt8(OFF_VERSION);
  if (version !== CHUNK_VERSION) throw new ChunkError('content', `${where} content does not match its SHA-256 (unknown chunk version ${version})`);
  const flags = object.readUInt8(OFF_FLAGS);
  const rawLen = object.readUInt32LE(OFF_RAW_LEN);
  const payloadLen = object.readUInt32LE(OFF_PAYLOAD_LEN);
  const want = CHUNK_HEADER_BYTES + payloadLen;
  if (object.length > want)
    throw new ChunkError('longer', `${where} is ${object.length - want} byte(s) longer than its header says (${object.length} bytes, expected ${want})`);
  if (object.length < want) throw new ChunkError('truncated', `${where} is truncated: ${object.length} of ${want} bytes`);
  if (expectRawBytes !== undefined && rawLen !== expectRawBytes) {
    throw new ChunkError('content', `${where} content does not match its SHA-256 (header says ${rawLen} raw bytes, the manifest ${expectRawBytes})`);
  }
  let payload = object.subarray(CHUNK_HEADER_BYTES);
  if (flags & FLAG_ENCRYPTED) {
    if (!keys) throw new ChunkError('key', `${where} is encrypted and no key was given (options.encryption.key)`);
    try {
      payload = decrypt(keys, object.subarray(OFF_IV, OFF_IV + IV_BYTES), object.subarray(OFF_TAG, OFF_TAG + TAG_BYTES), payload, aad(object, name));
    } catch {
      throw new ChunkError('content', `${where} content does not match its SHA-256 (AES-256-GCM authentication failed)`);
    }
  } else if (keys) {
    throw new ChunkError('content', `${where} content does not match its SHA-256 (stored unencrypted in an encrypted backup)`);
  }
  // zstd allocates what a frame header declares before decoding it: a damaged size field must
  // not make it ask for gigabytes. A chunk is one frame that declares exactly its raw length.
  const frame = zstdFrame(payload);
  if (rawLen > CHUNK_BYTES || frame === null || frame.end !== payload.length || frame.contentSize !== rawLen) {
    throw new ChunkError('content', `${where} content does not match its SHA-256 (not one zstd frame of ${rawLen} bytes)`);
  }
  // Loaded before the try: a missing binding is not damage.
  const { decompress } = zstd();
  let raw: Buffer;
  try {
    raw = decompress(payload);
  } catch (e) {
    throw new ChunkError('content', `${where} content does not match its SHA-256 (zstd: ${e instanceof Error ? e.message : String(e)})`);
  }
  if (flags & FLAG_SHUFFLED) raw = nativeBytes.unshuffle4(raw);
  if (raw.length !== rawLen) throw new ChunkError('content', `${where} content does not match its SHA-256 (${raw.length} raw bytes, header says ${rawLen})`);
  if (chunkName(raw, keys) !== name) throw new ChunkError('content', `${where} content does not match its SHA-256`);
  return raw;
}
