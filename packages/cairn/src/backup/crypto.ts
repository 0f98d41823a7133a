/**
 * Backup encryption: AES-256-GCM per chunk. The user's 32-byte key is never used directly; HKDF
 * derives three subkeys from it: one encrypts chunks, one names them (so that a chunk's name does
 * not reveal the SHA-256 of its plaintext), one yields the key id stored in the manifest, which
 * tells a wrong key apart from damage before anything is decrypted or written.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, randomBytes } from 'node:crypto';

import { invalidArgument } from '../errors.js';

export const KEY_BYTES = 32;
export const IV_BYTES = 12;
export const TAG_BYTES = 16;

export interface ChunkKeys {
  /** AES-256-GCM key for chunk payloads. */
  readonly aes: Buffer;
  /** HMAC-SHA256 key that names chunks. */
  readonly naming: Buffer;
  /** Public fingerprint of the key (16 hex digits), recorded in every manifest. */
  readonly keyId: string;
}

function derive(key: Buffer, info: string): Buffer {
  return Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), `cairn-backup/${info}`, KEY_BYTES));
}

/** Accepts 32 raw bytes or 64 hex digits; the message names `field`. */
export function parseKey(field: string, key: unknown): Buffer {
  let buf: Buffer;
  if (typeof key === 'string') {
    if (!/^[0-9a-fA-F]{64}$/.test(key)) throw invalidArgument(`${field} must be 32 bytes (a Buffer/Uint8Array, or 64 hex digits)`);
    buf = Buffer.from(key, 'hex');
  } else if (key instanceof Uint8Array) {
    buf = Buffer.from(key);
  } else throw invalidArgument(`${field} must be 32 bytes (a Buffer/Uint8Array, or 64 hex digits)`);
  if (buf.length !== KEY_BYTES) throw invalidArgument(`${field} must be exactly 32 bytes for AES-256-GCM (got ${buf.length})`);
  return buf;
}

export function chunkKeys(key: Buffer): ChunkKeys {
  return {
    aes: derive(key, 'aes-256-gcm'),
    naming: derive(key, 'chunk-name'),
    keyId: derive(key, 'key-id').toString('hex').slice(0, 16),
  };
}

/** A chunk's name: SHA-256 of its raw bytes, or HMAC-SHA256 under the naming key when encrypted. */
export function chunkName(raw: Buffer, keys: ChunkKeys | null): string {
  return keys ? createHmac('sha256', keys.naming).update(raw).digest('hex') : createHash('sha256').update(raw).digest('hex');
}

export function encrypt(keys: ChunkKeys, plain: Buffer, aad: Buffer): { iv: Buffer; tag: Buffer; data: Buffer } {
  const iv = randomBytes(IV_BYTES);
  const c = createCipheriv('aes-256-gcm', keys.aes, iv);
  c.setAAD(aad);
  const data = Buffer.concat([c.update(plain), c.final()]);
  return { iv, tag: c.getAuthTag(), data };
}

/** Throws when the tag does not authenticate (wrong key or damaged bytes). */
export function decrypt(keys: ChunkKeys, iv: Buffer, tag: Buffer, data: Buffer, aad: Buffer): Buffer {
  const d = createDecipheriv('aes-256-gcm', keys.aes, iv);
  d.setAAD(aad);
  d.setAuthTag(tag);
  return Buffer.concat([d.update(data), d.final()]);
}
