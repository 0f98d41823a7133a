/**
 * Backup metadata and the backup manifest (docs/format.md, "Backup manifest"). The manifest is
 * the last object a backup writes; its body is JSON, framed with a magic, a version, the body
 * length and the SHA-256 of the body, so a torn or edited manifest is told apart from a valid one.
 */
import { createHash } from 'node:crypto';

import { CairnError } from '../errors.js';

export type BackupKind = 'full' | 'incremental' | 'differential';
export type BackupStatus = 'pending' | 'in_progress' | 'completed' | 'failed' | 'corrupted';

export interface BackupPoint {
  seq: bigint;
  time: Date;
}

export interface BackupMetadata {
  id: string;
  /** When the backup started (the manager's clock). */
  timestamp: Date;
  /** The store directory backed up. */
  source: string;
  /** The target URL this metadata was read from or written to. */
  target: string;
  kind: BackupKind;
  /** incremental: the previous backup; differential: the last full; full: null. */
  base: string | null;
  /** Number of files in the backup. */
  files: number;
  bytes: {
    /** Logical size of every file. */
    raw: number;
    /** Stored size of every distinct chunk the backup references. */
    stored: number;
    /** Chunk bytes this run uploaded (the rest were already in the target). */
    written: number;
    /** Raw bytes this run took from the source (files unchanged since the base are not read; a live WAL segment counts up to its last record). */
    read: number;
  };
  chunks: { total: number; written: number };
  /** SHA-256 of the manifest body (hex). */
  sha256: string;
  compression: { algorithm: 'zstd'; level: number; shuffle: true };
  encryption: { algorithm: 'aes-256-gcm'; keyId: string } | null;
  /** The newest snapshot in the backup, and what a restore can reach. */
  snapshot: string | null;
  range: { from: BackupPoint; to: BackupPoint } | null;
  status: BackupStatus;
  /** Milliseconds the backup took. */
  duration: number;
  error: string | null;
}

/** One file in the backup, in the layout `restore()` reads. */
export interface ManifestFile {
  path: string;
  bytes: number;
  /** xxh3 of the whole file (hex), as the snapshot manifests record it. */
  xxh3: string;
  /** Source modification time (ms): with the size, tells an unchanged archived WAL segment. */
  mtimeMs: number;
  chunks: string[];
}

/** The manifest body: the metadata plus the file list and the stored size of each chunk. */
export interface ManifestBody {
  format: 'cairn-backup';
  version: 1;
  id: string;
  timestampMs: number;
  source: string;
  kind: BackupKind;
  base: string | null;
  compression: BackupMetadata['compression'];
  encryption: BackupMetadata['encryption'];
  snapshot: string | null;
  range: { from: { seq: string; timeMs: number }; to: { seq: string; timeMs: number } } | null;
  bytes: BackupMetadata['bytes'];
  durationMs: number;
  files: ManifestFile[];
  /** name -> [raw bytes, stored bytes] */
  chunks: Record<string, [number, number]>;
  /** Chunks this run uploaded. */
  chunksWritten: number;
}

export const MANIFEST_MAGIC = Buffer.from('CAIRNBAK');
export const MANIFEST_VERSION = 1;
export const MANIFEST_HEADER_BYTES = 24;
export const MANIFEST_TRAILER_BYTES = 32;

export function encodeManifest(body: ManifestBody): { bytes: Buffer; sha256: string } {
  const json = Buffer.from(JSON.stringify(body));
  const header = Buffer.alloc(MANIFEST_HEADER_BYTES);
  MANIFEST_MAGIC.copy(header, 0);
  header.writeUInt32LE(MANIFEST_VERSION, 8);
  header.writeBigUInt64LE(BigInt(json.length), 16);
  const digest = createHash('sha256').update(json).digest();
  return { bytes: Buffer.concat([header, json, digest]), sha256: digest.toString('hex') };
}

export function damagedManifest(where: string, why: string): CairnError {
  return new CairnError('CAIRN_CORRUPTION', `manifest ${where} is damaged: ${why}`, { file: where, offset: 0 });
}

export function decodeManifest(where: string, buf: Buffer): { body: ManifestBody; sha256: string } {
  if (buf.length < MANIFEST_HEADER_BYTES + MANIFEST_TRAILER_BYTES || !buf.subarray(0, 8).equals(MANIFEST_MAGIC)) {
    throw damagedManifest(where, 'not a Cairn backup manifest (bad magic or too short)');
  }
  const version = buf.readUInt32LE(8);
  if (version !== MANIFEST_VERSION) throw damagedManifest(where, `unsupported version ${version}`);
  const len = Number(buf.readBigUInt64LE(16));
  if (buf.length !== MANIFEST_HEADER_BYTES + len + MANIFEST_TRAILER_BYTES) {
    throw damagedManifest(where, `length ${buf.length} does not match its header (${MANIFEST_HEADER_BYTES + len + MANIFEST_TRAILER_BYTES})`);
  }
  const json = buf.subarray(MANIFEST_HEADER_BYTES, MANIFEST_HEADER_BYTES + len);
  const digest = createHash('sha256').update(json).digest();
  if (!digest.equals(buf.subarray(MANIFEST_HEADER_BYTES + len))) throw damagedManifest(where, 'body fails its SHA-256 checksum');
  let body: ManifestBody;
  try {
    body = JSON.parse(json.toString('utf8')) as ManifestBody;
  } catch (e) {
    throw damagedManifest(where, `body is not JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  if (typeof body !== 'object' || body === null || body.format !== 'cairn-backup' || body.version !== 1 || !Array.isArray(body.files))
    throw damagedManifest(where, 'body is not a Cairn backup manifest');
  return { body, sha256: digest.toString('hex') };
}

export function toMetadata(body: ManifestBody, sha256: string, target: string): BackupMetadata {
  const point = (p: { seq: string; timeMs: number }) => ({ seq: BigInt(p.seq), time: new Date(p.timeMs) });
  return {
    id: body.id,
    timestamp: new Date(body.timestampMs),
    source: body.source,
    target,
    kind: body.kind,
    base: body.base,
    files: body.files.length,
    bytes: body.bytes,
    chunks: { total: Object.keys(body.chunks).length, written: body.chunksWritten },
    sha256,
    compression: body.compression,
    encryption: body.encryption,
    snapshot: body.snapshot,
    range: body.range ? { from: point(body.range.from), to: point(body.range.to) } : null,
    status: 'completed',
    duration: body.durationMs,
    error: null,
  };
}

/** The metadata of a backup that has no readable manifest (yet): zero sizes, status 'pending'. */
export function emptyMetadata(id: string, kind: BackupKind, source: string, target: string, timestamp: number): BackupMetadata {
  return {
    id,
    timestamp: new Date(timestamp),
    source,
    target,
    kind,
    base: null,
    files: 0,
    bytes: { raw: 0, stored: 0, written: 0, read: 0 },
    chunks: { total: 0, written: 0 },
    sha256: '',
    compression: { algorithm: 'zstd', level: 0, shuffle: true },
    encryption: null,
    snapshot: null,
    range: null,
    status: 'pending',
    duration: 0,
    error: null,
  };
}

export function failedMetadata(
  id: string,
  kind: BackupKind,
  source: string,
  target: string,
  started: number,
  duration: number,
  error: CairnError,
): BackupMetadata {
  return { ...emptyMetadata(id, kind, source, target, started), status: 'failed', duration: Math.round(duration), error: `${error.code}: ${error.message}` };
}

export function corruptedMetadata(id: string, target: string, error: CairnError): BackupMetadata {
  return { ...emptyMetadata(id, 'full', '', target, 0), status: 'corrupted', error: error.message };
}
