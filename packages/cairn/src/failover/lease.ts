/**
 * The primary's lease, judged by this process's monotonic clock (`performance.now()`), never
 * by etcd's answer time or the wall clock. A renewal SENT at t lets etcd expire the lease no
 * earlier than t + TTL (etcd starts its TTL when it receives the request, which is later), so
 * until t + TTL − margin no other node can have won the leader key. A paused process (SIGSTOP)
 * resumes with its monotonic clock past that deadline, so it refuses to acknowledge.
 */
import { performance } from 'node:perf_hooks';

import { CairnError } from '../errors.js';
import type { Etcd } from './etcd.js';

export class LeaderLease {
  readonly id: bigint;
  readonly #etcd: Etcd;
  readonly #ttlMs: number;
  readonly #marginMs: number;
  /** Monotonic ms until which this node may acknowledge writes. */
  #validUntil: number;
  #lost = false;

  private constructor(etcd: Etcd, id: bigint, sentAt: number, ttlMs: number, marginMs: number) {
    this.#etcd = etcd;
    this.id = id;
    this.#ttlMs = ttlMs;
    this.#marginMs = marginMs;
    this.#validUntil = sentAt + ttlMs - marginMs;
  }

  /** `ttlMs` is whole seconds in etcd; the grant request's send time starts the local deadline. */
  static async grant(etcd: Etcd, ttlMs: number, marginMs: number): Promise<LeaderLease> {
    const sentAt = performance.now();
    const id = await etcd.grant(Math.ceil(ttlMs / 1000));
    return new LeaderLease(etcd, id, sentAt, ttlMs, marginMs);
  }

  /** Renew once; false when etcd says the lease is gone (it then never comes back). */
  async renew(): Promise<boolean> {
    if (this.#lost) return false;
    const sentAt = performance.now();
    const ttl = await this.#etcd.keepAlive(this.id);
    if (ttl <= 0) {
      this.#lost = true;
      return false;
    }
    this.#validUntil = Math.max(this.#validUntil, sentAt + this.#ttlMs - this.#marginMs);
    return true;
  }

  get valid(): boolean {
    return !this.#lost && performance.now() < this.#validUntil;
  }

  /** Throws CAIRN_FENCED unless the lease is certainly still held. */
  check(nodeId: string): void {
    if (this.#lost) throw new CairnError('CAIRN_FENCED', `node '${nodeId}' lost its leader lease: it is no longer primary and acknowledges nothing`);
    const now = performance.now();
    if (now >= this.#validUntil) {
      throw new CairnError(
        'CAIRN_FENCED',
        `node '${nodeId}' cannot prove it still holds the leader lease (last renewal sent ${Math.round(now - this.#validUntil + this.#ttlMs - this.#marginMs)} ms ago, TTL ${this.#ttlMs} ms): it acknowledges nothing`,
      );
    }
  }

  /** Give the lease up (the leader key goes with it). */
  async revoke(): Promise<void> {
    this.#lost = true;
    await this.#etcd.revoke(this.id).catch(() => {});
  }
}
