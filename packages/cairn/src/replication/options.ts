/** Validation of the replication options shared by the primary and the replica. */
import { invalidArgument } from '../errors.js';

export interface TlsOptions {
  key?: string | Buffer;
  cert?: string | Buffer;
  ca?: string | Buffer | Array<string | Buffer>;
}

export interface HostPort {
  host: string;
  port: number;
}

/** 'host:port' (IPv6 in brackets); port 0 lets the OS choose (a listen address only). */
export function parseHostPort(field: string, v: unknown, allowZero: boolean): HostPort {
  if (typeof v !== 'string') throw invalidArgument(`${field} must be a 'host:port' string`);
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535 || (!allowZero && port === 0))
    throw invalidArgument(`${field} must be 'host:port' with a port from ${allowZero ? 0 : 1} to 65535 (got '${v}')`);
  return { host: (m[1] ?? m[2]) as string, port };
}

export function parseNodeId(field: string, v: unknown): string {
  if (typeof v !== 'string' || v.length === 0 || Buffer.byteLength(v) > 256 || /[\0/\\]/.test(v)) {
    throw invalidArgument(`${field} must be a non-empty string of at most 256 bytes without '/', '\\' or NUL`);
  }
  return v;
}

export function parseTls(field: string, v: unknown): TlsOptions | undefined {
  if (v === undefined) return undefined;
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw invalidArgument(`${field} must be an object { key, cert, ca }`);
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!['key', 'cert', 'ca'].includes(k)) throw invalidArgument(`${field}.${k} is not a known option`);
  return o as TlsOptions;
}
