/**
 * Where backups live. A target is a flat key space (`chunks/<name>`, `backups/<id>/MANIFEST`,
 * `backups/<id>/IN_PROGRESS`); the file and S3 targets implement it. `put` is atomic: a reader
 * sees the whole object or nothing.
 */
import { invalidArgument } from '../errors.js';

export interface TargetEntry {
  key: string;
  size: number;
}

export interface BackupTarget {
  readonly url: string;
  /** Every key under `prefix` (which ends with '/'), with its size. */
  list(prefix: string): Promise<TargetEntry[]>;
  /** undefined when the key does not exist. */
  get(key: string): Promise<Buffer | undefined>;
  put(key: string, data: Buffer): Promise<void>;
  delete(key: string): Promise<void>;
  /** Remove leftovers of interrupted writes (temp files); a no-op where puts are atomic. */
  cleanDebris(): Promise<void>;
  close(): Promise<void>;
}

export const CHUNKS_PREFIX = 'chunks/';
export const BACKUPS_PREFIX = 'backups/';
export const MANIFEST_NAME = 'MANIFEST';
export const MARKER_NAME = 'IN_PROGRESS';
export const manifestKey = (id: string) => `${BACKUPS_PREFIX}${id}/${MANIFEST_NAME}`;
export const markerKey = (id: string) => `${BACKUPS_PREFIX}${id}/${MARKER_NAME}`;
export const chunkKey = (name: string) => `${CHUNKS_PREFIX}${name}`;

export type ParsedTarget = { kind: 'file'; url: string; path: string } | { kind: 's3'; url: string; bucket: string; prefix: string };

export function parseTargetUrl(field: string, url: unknown): ParsedTarget {
  if (typeof url !== 'string' || url === '') throw invalidArgument(`${field} must be a 'file:///path' or 's3://bucket/prefix' URL`);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw invalidArgument(`${field} must be a 'file:///path' or 's3://bucket/prefix' URL (got '${url}')`);
  }
  if (u.protocol === 'file:') {
    if (u.host !== '' && u.host !== 'localhost') throw invalidArgument(`${field} must be a local file URL (file:///path), not a host '${u.host}'`);
    const path = decodeURIComponent(u.pathname);
    if (path === '/' || path === '') throw invalidArgument(`${field} must name a directory, not the root`);
    return { kind: 'file', url, path };
  }
  if (u.protocol === 's3:') {
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(u.hostname)) throw invalidArgument(`${field} must name a valid S3 bucket (got '${u.hostname}')`);
    const prefix = decodeURIComponent(u.pathname).replace(/^\/+/, '').replace(/\/+$/, '');
    return { kind: 's3', url, bucket: u.hostname, prefix: prefix === '' ? '' : `${prefix}/` };
  }
  throw invalidArgument(`${field} has an unsupported scheme '${u.protocol}' (expected file: or s3:)`);
}
