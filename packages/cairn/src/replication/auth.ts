/**
 * Mutual challenge-response authentication (docs/format.md, "Replication protocol"). Each side
 * sends a fresh 32-byte nonce; each proves it holds the shared token with an HMAC-SHA256 over a
 * role label, both nonces and both node ids. The token never travels, a proof is bound to this
 * connection's nonces and to the prover's role, and proofs are compared in constant time.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

import { CairnError } from '../errors.js';

export const NONCE_LEN = 32;
export const PROOF_LEN = 32;
export const MIN_TOKEN_BYTES = 32;

export type Prover = 'primary' | 'replica';

export function newNonce(): Buffer {
  return randomBytes(NONCE_LEN);
}

/** The token as bytes, refusing one shorter than 32 bytes (field named for the message). */
export function checkToken(field: string, token: unknown): Buffer {
  if (typeof token !== 'string' && !Buffer.isBuffer(token)) throw new CairnError('CAIRN_INVALID_ARGUMENT', `${field} must be a string or Buffer`);
  const bytes = Buffer.from(token);
  if (bytes.length < MIN_TOKEN_BYTES)
    throw new CairnError('CAIRN_INVALID_ARGUMENT', `${field} must be at least ${MIN_TOKEN_BYTES} bytes (got ${bytes.length})`);
  return bytes;
}

export interface Handshake {
  replicaNonce: Buffer;
  primaryNonce: Buffer;
  replicaId: string;
  primaryId: string;
}

export function proof(token: Buffer, prover: Prover, h: Handshake): Buffer {
  const mac = createHmac('sha256', token);
  mac.update(`cairn-replication-v1 ${prover}\0`);
  mac.update(h.replicaNonce);
  mac.update(h.primaryNonce);
  for (const id of [h.replicaId, h.primaryId]) {
    const b = Buffer.from(id, 'utf8');
    const len = Buffer.allocUnsafe(2);
    len.writeUInt16LE(b.length);
    mac.update(len);
    mac.update(b);
  }
  return mac.digest();
}

/** Whether `got` is `prover`'s proof for this handshake, in constant time. */
export function verifyProof(token: Buffer, prover: Prover, h: Handshake, got: Buffer): boolean {
  const want = proof(token, prover, h);
  return got.length === want.length && timingSafeEqual(got, want);
}
