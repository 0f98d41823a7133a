/**
 * A small etcd v3 client over etcd's JSON gateway (`/v3/...`, etcd 3.4) and `fetch`: leases,
 * range, put, delete and txn with create-revision compares. Every call is one bounded HTTP
 * request (`AbortSignal.timeout`); endpoints are tried in order. No streams: a lease is kept
 * alive by one unary `lease/keepalive` call per period, so the caller knows exactly when each
 * renewal was sent (docs/architecture.md, "Failover").
 */
import { CairnError } from '../errors.js';

export interface KeyValue {
  key: string;
  value: string;
  createRevision: bigint;
  modRevision: bigint;
  lease: bigint;
}

interface RawKv {
  key?: string;
  value?: string;
  create_revision?: string;
  mod_revision?: string;
  lease?: string;
}

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
const unb64 = (s: string | undefined) => Buffer.from(s ?? '', 'base64').toString('utf8');

function kv(r: RawKv): KeyValue {
  return {
    key: unb64(r.key),
    value: unb64(r.value),
    createRevision: BigInt(r.create_revision ?? '0'),
    modRevision: BigInt(r.mod_revision ?? '0'),
    lease: BigInt(r.lease ?? '0'),
  };
}

/** The end of the range of every key starting with `prefix`. */
function prefixEnd(prefix: string): string {
  const b = Buffer.from(prefix, 'utf8');
  for (let i = b.length - 1; i >= 0; i--) {
    if ((b[i] as number) < 0xff) {
      b[i] = (b[i] as number) + 1;
      return b.subarray(0, i + 1).toString('base64');
    }
  }
  return Buffer.from([0]).toString('base64');
}

export class Etcd {
  readonly #endpoints: string[];
  readonly #timeoutMs: number;

  constructor(endpoints: string[], timeoutMs: number) {
    this.#endpoints = endpoints.map((e) => e.replace(/\/+$/, ''));
    this.#timeoutMs = timeoutMs;
  }

  async #call(path: string, body: unknown): Promise<Record<string, unknown>> {
    let last: unknown;
    for (const ep of this.#endpoints) {
      try {
        const res = await fetch(`${ep}/v3/${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(this.#timeoutMs),
        });
        const text = await res.text();
        if (!res.ok) throw new Error(`HTTP ${res.status}: ${text.slice(0, 200)}`);
        return JSON.parse(text) as Record<string, unknown>;
      } catch (e) {
        last = e;
      }
    }
    const why = last instanceof Error ? last.message : String(last);
    throw new CairnError('CAIRN_DISCONNECTED', `etcd (${this.#endpoints.join(', ')}) did not answer ${path}: ${why}`, { cause: last });
  }

  /** A lease of `ttlSeconds`; its id. */
  async grant(ttlSeconds: number): Promise<bigint> {
    const r = await this.#call('lease/grant', { TTL: String(ttlSeconds) });
    if (typeof r.error === 'string' && r.error !== '') throw new CairnError('CAIRN_IO', `etcd refused a lease: ${r.error}`);
    return BigInt(r.ID as string);
  }

  /** Renew a lease once; the TTL etcd now gives it (0: the lease is gone). */
  async keepAlive(lease: bigint): Promise<number> {
    const r = await this.#call('lease/keepalive', { ID: String(lease) });
    const result = (r.result ?? {}) as { TTL?: string };
    return Number(result.TTL ?? '0');
  }

  async revoke(lease: bigint): Promise<void> {
    await this.#call('lease/revoke', { ID: String(lease) });
  }

  async get(key: string): Promise<KeyValue | undefined> {
    const r = await this.#call('kv/range', { key: b64(key) });
    const kvs = (r.kvs ?? []) as RawKv[];
    return kvs.length > 0 ? kv(kvs[0] as RawKv) : undefined;
  }

  async getPrefix(prefix: string): Promise<KeyValue[]> {
    const r = await this.#call('kv/range', { key: b64(prefix), range_end: prefixEnd(prefix) });
    return ((r.kvs ?? []) as RawKv[]).map(kv);
  }

  async put(key: string, value: string, lease = 0n): Promise<void> {
    await this.#call('kv/put', { key: b64(key), value: b64(value), ...(lease === 0n ? {} : { lease: String(lease) }) });
  }

  async delete(key: string): Promise<void> {
    await this.#call('kv/deleterange', { key: b64(key) });
  }

  /** Put `key` only if it does not exist; its create revision when this call created it. */
  async createIfAbsent(key: string, value: string, lease: bigint): Promise<bigint | undefined> {
    const r = await this.#call('kv/txn', {
      compare: [{ key: b64(key), target: 'CREATE', result: 'EQUAL', create_revision: '0' }],
      success: [{ request_put: { key: b64(key), value: b64(value), lease: String(lease) } }],
      failure: [],
    });
    if (r.succeeded !== true) return undefined;
    return BigInt(((r.header ?? {}) as { revision?: string }).revision ?? '0');
  }

  /** Put `key` only while its create revision is still `createRevision` (the same term). */
  async putIfCreated(key: string, createRevision: bigint, value: string, lease: bigint): Promise<boolean> {
    const r = await this.#call('kv/txn', {
      compare: [{ key: b64(key), target: 'CREATE', result: 'EQUAL', create_revision: String(createRevision) }],
      success: [{ request_put: { key: b64(key), value: b64(value), lease: String(lease) } }],
      failure: [],
    });
    return r.succeeded === true;
  }
}
