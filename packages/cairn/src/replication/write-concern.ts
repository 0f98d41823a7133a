/**
 * Write concern on the primary: which voters have a seq durable, and the waits for a majority
 * or all of them. Voters are the primary (durable once its own commit resolved) and the
 * configured replicas (durable once they acknowledged it). A wait that times out rejects with
 * `ReplicationTimeoutError`; the write itself stays committed.
 */
import { CairnError, invalidArgument } from '../errors.js';
import type { WriteConcern, WriteConcernLevel } from './types.js';

export const DEFAULT_TIMEOUT_MS = 10_000;

/** Rejects a write whose write concern was not met in time. The write is not undone. */
export class ReplicationTimeoutError extends CairnError {
  readonly seq: bigint;
  /** Voters that had the record durable when the wait gave up. */
  readonly durableOn: string[];
  constructor(seq: bigint, w: WriteConcernLevel, need: number, durableOn: string[], timeoutMs: number) {
    super(
      'CAIRN_REPLICATION_TIMEOUT',
      `write concern w='${w}' not met within ${timeoutMs} ms: seq ${seq} is durable on ${durableOn.length} of the ${need} voters needed ` +
        `(${durableOn.join(', ')}); the write is committed on the primary and may still replicate`,
    );
    this.seq = seq;
    this.durableOn = durableOn;
  }
}

export function parseWriteConcern(field: string, v: unknown): WriteConcern {
  if (v === undefined) return {};
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw invalidArgument(`${field} must be an object`);
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k !== 'w' && k !== 'timeoutMs') throw invalidArgument(`${field}.${k} is not a known option`);
  const out: WriteConcern = {};
  if (o.w !== undefined) {
    if (o.w !== 'local' && o.w !== 'majority' && o.w !== 'all') throw invalidArgument(`${field}.w must be 'local', 'majority' or 'all'`);
    out.w = o.w;
  }
  if (o.timeoutMs !== undefined) {
    if (typeof o.timeoutMs !== 'number' || !Number.isInteger(o.timeoutMs) || o.timeoutMs <= 0 || o.timeoutMs > 2 ** 31 - 1) {
      throw invalidArgument(`${field}.timeoutMs must be a positive integer`);
    }
    out.timeoutMs = o.timeoutMs;
  }
  return out;
}

interface Wait {
  seq: bigint;
  need: number;
  resolve: () => void;
  /** Rejects with what is known now. */
  expire: () => void;
  timer: NodeJS.Timeout;
}

export class WriteConcernTracker {
  readonly #self: string;
  readonly #voters: readonly string[];
  readonly #durable = new Map<string, bigint>();
  #waits: Wait[] = [];
  readonly #default: Required<WriteConcern>;

  constructor(self: string, replicas: readonly string[], defaults: WriteConcern) {
    this.#self = self;
    this.#voters = [self, ...replicas];
    for (const r of replicas) this.#durable.set(r, 0n);
    this.#default = { w: defaults.w ?? 'local', timeoutMs: defaults.timeoutMs ?? DEFAULT_TIMEOUT_MS };
  }

  need(w: WriteConcernLevel): number {
    if (w === 'local') return 1;
    return w === 'all' ? this.#voters.length : Math.floor(this.#voters.length / 2) + 1;
  }

  /** Voters that have `seq` durable; the primary is passed its own last seq. */
  durableOn(seq: bigint, primarySeq: bigint): string[] {
    const out = primarySeq >= seq ? [this.#self] : [];
    for (const [id, d] of this.#durable) if (d >= seq) out.push(id);
    return out;
  }

  /** Highest seq durable on a majority of voters. */
  commitSeq(primarySeq: bigint): bigint {
    const seqs = [primarySeq, ...this.#durable.values()].sort((a, b) => (a > b ? -1 : a < b ? 1 : 0));
    return seqs[this.need('majority') - 1] ?? 0n;
  }

  /** A replica's durable seq moved (it never moves back within a run). */
  durable(nodeId: string, seq: bigint, primarySeq: bigint): void {
    if ((this.#durable.get(nodeId) ?? -1n) >= seq) return;
    this.#durable.set(nodeId, seq);
    this.#waits = this.#waits.filter((w) => {
      if (this.durableOn(w.seq, primarySeq).length < w.need) return true;
      clearTimeout(w.timer);
      w.resolve();
      return false;
    });
  }

  /** Resolves once `seq` (already durable here) meets the write concern. */
  wait(seq: bigint, concern: WriteConcern, primarySeq: bigint): Promise<void> {
    const w = concern.w ?? this.#default.w;
    const timeoutMs = concern.timeoutMs ?? this.#default.timeoutMs;
    const need = this.need(w);
    if (this.durableOn(seq, primarySeq).length >= need) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const expire = () => reject(new ReplicationTimeoutError(seq, w, need, this.durableOn(seq, primarySeq), timeoutMs));
      const entry: Wait = {
        seq,
        need,
        resolve,
        expire,
        timer: setTimeout(() => {
          this.#waits = this.#waits.filter((x) => x !== entry);
          expire();
        }, timeoutMs),
      };
      this.#waits.push(entry);
    });
  }

  /** The server closed: pending waits reject now, as their timeout would, rather than later. */
  abandon(): void {
    for (const w of this.#waits.splice(0)) {
      clearTimeout(w.timer);
      w.expire();
    }
  }
}
