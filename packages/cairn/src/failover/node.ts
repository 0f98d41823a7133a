/**
 * `startNode()`: a store whose role (primary, replica) follows a leader key in etcd.
 *
 * - One leader key per cluster, created by a txn only if absent, under a lease the primary
 *   renews each loop. Its create revision is the epoch; it travels in every replication frame.
 * - Each node advertises its address, role, highest durable epoch and durable seq under a
 *   member key (its own lease), refreshed each loop.
 * - The primary acknowledges a write only while `LeaderLease` says, by this process's
 *   monotonic clock, that etcd cannot yet have let another node win.
 * - Election: a voter within `maxLagOnFailover` of the most advanced voter it can see creates
 *   the leader key (`ready: false`). It serves only after a majority of voters (itself
 *   included) have made the new epoch durable, stopped following the old primary and reported
 *   their final durable seq; if any of them is ahead, it gives the key up so that one wins.
 * - A node whose log diverges from the leader's history (an old primary with records past the
 *   fork, never acknowledged at majority) cuts them into `rollback/` (rollback.ts) and follows.
 *   Only when that is impossible (a checkpoint covers them) is it `fenced`: it serves no write
 *   and follows no one; manual recovery is needed.
 */
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

import { CairnError } from '../errors.js';
import { openReplica, type Replica } from '../replication/replica.js';
import type { ReplicationServer } from '../replication/server.js';
import type { PrimaryStatus } from '../replication/types.js';
import { open, type Store } from '../store.js';
import { Etcd } from './etcd.js';
import { type Durable, epochAt, firstDivergence, loadHistory, saveHistory, trimHistory } from './history.js';
import {
  aheadOf,
  decodeInitialize,
  decodeLeader,
  decodeMember,
  encodeInitialize,
  encodeLeader,
  encodeMember,
  initializeKey,
  type LeaderValue,
  leaderHistory,
  leaderKey,
  memberKey,
  memberPrefix,
  switchoverKey,
  switchoverRequestKey,
} from './keys.js';
import { LeaderLease } from './lease.js';
import { type NodeConfig, parseNodeOptions, type StartNodeOptions } from './options.js';
import { cutPastFork, type Rollback } from './rollback.js';

export type NodeRole = 'primary' | 'replica' | 'candidate' | 'fenced';

export interface RoleEvent {
  role: NodeRole;
  epoch: bigint;
  primary: { nodeId: string; address: string } | undefined;
  /** Monotonic ms (`performance.now()`) of the change. */
  at: number;
}

/** Start a node of `cluster`: it follows the leader in etcd, campaigns when there is none. */
export async function startNode(options: StartNodeOptions): Promise<ClusterNode> {
  const config = parseNodeOptions(options);
  const node = new ClusterNode(config);
  await node.start();
  return node;
}

/** What a node cut from its log when it rejoined past a fork (also the 'rollback' event). */
export interface RollbackEvent extends Rollback {
  /** The epoch that wrote the cut records, and the primary (and its epoch) the node rejoined. */
  epoch: bigint;
  primaryEpoch: bigint;
  primary: string;
}

export class ClusterNode extends EventEmitter {
  readonly nodeId: string;
  /** The last cut this node made past a fork, or null. */
  lastRollback: RollbackEvent | null = null;
  readonly #c: NodeConfig;
  readonly #etcd: Etcd;
  #role: NodeRole = 'candidate';
  #epoch = 0n;
  #primary: { nodeId: string; address: string } | undefined;
  #durable: Durable = { history: [], epoch: 0n };
  /** The store when this node neither serves nor follows (opened read-only, as a replica). */
  #idle: Store | null = null;
  /** The replica that stopped following when this node went idle: its store is `#idle`, and
   *  following the next primary resumes it instead of closing and reopening the store. */
  #paused: Replica | null = null;
  #replica: Replica | null = null;
  #server: { db: Store; server: ReplicationServer } | null = null;
  #lease: LeaderLease | null = null;
  #memberLease = 0n;
  #steppingDown = false;
  #closed = false;
  #fencedReason: string | null = null;
  /** The store's last seq when last open (a fenced node's store is closed). */
  #lastSeqSeen = 0n;
  #lastError: string | null = null;
  /** Serializes role changes: the loop, stepDown, a replica's newer epoch. */
  #chain: Promise<unknown> = Promise.resolve();
  #loopDone: Promise<void> = Promise.resolve();
  readonly #wake = new AbortController();

  /** @internal use `startNode()`. */
  constructor(config: NodeConfig) {
    super();
    this.#c = config;
    this.nodeId = config.nodeId;
    this.#etcd = new Etcd(config.etcd, config.requestTimeoutMs);
  }

  get role(): NodeRole {
    return this.#role;
  }

  /** The epoch of the term this node serves or follows (the leader key's create revision). */
  get epoch(): bigint {
    return this.#epoch;
  }

  get primary(): { nodeId: string; address: string } | undefined {
    return this.#primary;
  }

  /** Why this node is fenced (manual recovery needed), or null. */
  get fencedReason(): string | null {
    return this.#fencedReason;
  }

  get lastError(): string | null {
    return this.#lastError;
  }

  /** The store: writable on the primary; on a replica, writes forward or fail with CAIRN_NOT_PRIMARY.
   *  A role change replaces it (take it again after a 'role' event). A candidate (between roles)
   *  throws CAIRN_UNAVAILABLE: its log may hold records past a fork until it follows a primary. */
  get db(): Store {
    if (this.#role === 'fenced') throw new CairnError('CAIRN_FENCED', this.#fencedReason ?? `node '${this.nodeId}' is fenced`);
    if (this.#server) return this.#server.db;
    if (this.#replica) return this.#replica.db;
    // Between roles (just started, or a primary just gone) nothing has yet checked this log
    // against the leader's history: records past a fork must never be read.
    if (this.#idle) {
      throw new CairnError(
        'CAIRN_UNAVAILABLE',
        `node '${this.nodeId}' is ${this.#role}: its log is not yet checked against the primary's, so it serves no reads until it follows one or is elected`,
      );
    }
    throw new CairnError('CAIRN_CLOSED', `node '${this.nodeId}' is closed`);
  }

  /** @internal */
  async start(): Promise<void> {
    this.#durable = loadHistory(this.#c.dir);
    this.#epoch = this.#durable.epoch;
    this.#idle = await open(this.#c.dir, { nodeId: this.nodeId, replica: true });
    this.#lastSeqSeen = this.#idle.lastSeq;
    if (this.#durable.fenced !== undefined) await this.#fence(this.#durable.fenced);
    // etcd may be slow or away: the loop (re)grants the member lease.
    await this.#serial(() => this.#tick());
    this.#loopDone = this.#loop();
  }

  async #loop(): Promise<void> {
    while (!this.#closed) {
      try {
        await sleep(this.#c.loopMs, undefined, { signal: this.#wake.signal });
      } catch {
        return;
      }
      await this.#serial(() => this.#tick());
    }
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(fn);
    this.#chain = run.catch(() => {});
    return run;
  }

  #setRole(role: NodeRole, epoch: bigint, primary: { nodeId: string; address: string } | undefined): void {
    const changed = role !== this.#role || epoch !== this.#epoch || primary?.nodeId !== this.#primary?.nodeId;
    this.#role = role;
    this.#epoch = epoch;
    this.#primary = primary;
    if (changed) this.emit('role', { role, epoch, primary, at: performance.now() } satisfies RoleEvent);
  }

  async #tick(): Promise<void> {
    if (this.#closed) return;
    try {
      if (this.#memberLease === 0n || (await this.#etcd.keepAlive(this.#memberLease)) <= 0) {
        this.#memberLease = 0n;
        this.#memberLease = await this.#etcd.grant(Math.ceil(this.#c.leaseTtlMs / 1000));
      }
      if (this.#role === 'primary') await this.#renew();
      else if (this.#role !== 'fenced') await this.#watchLeader();
      await this.#publish();
      this.#lastError = null;
    } catch (e) {
      this.#lastError = e instanceof Error ? e.message : String(e);
    }
    // Whatever etcd said or failed to say: a primary that cannot prove its lease steps down.
    if (this.#role === 'primary' && !this.#lease?.valid) await this.#demote();
  }

  async #renew(): Promise<void> {
    const lease = this.#lease as LeaderLease;
    if (!(await lease.renew())) return;
    const req = await this.#etcd.get(switchoverRequestKey(this.#c.cluster));
    if (req) {
      await this.#etcd.delete(switchoverRequestKey(this.#c.cluster));
      const to = (JSON.parse(req.value) as { to?: string }).to;
      await this.#stepDown(to).catch((e: unknown) => {
        this.#lastError = `switchover to ${to ?? 'any'} failed: ${e instanceof Error ? e.message : String(e)}`;
      });
    }
  }

  async #publish(): Promise<void> {
    if (this.#closed || this.#memberLease === 0n) return;
    const value = encodeMember({
      nodeId: this.nodeId,
      address: this.#c.advertise,
      role: this.#role,
      epoch: this.#durable.epoch,
      durableSeq: this.#lastSeq(),
      lastEpoch: epochAt(this.#durable.history, this.#lastSeq()),
      at: Date.now(),
    });
    await this.#etcd.put(memberKey(this.#c.cluster, this.nodeId), value, this.#memberLease);
  }

  #lastSeq(): bigint {
    const store = this.#server?.db ?? this.#replica?.db ?? this.#idle;
    if (store) {
      try {
        this.#lastSeqSeen = store.lastSeq;
      } catch {
        // closed under us: the last value seen stands
      }
    }
    return this.#lastSeqSeen;
  }

  /** Make `epoch` durable as the highest seen, with `history` (fsynced) before anything of it. */
  #persist(epoch: bigint, history = this.#durable.history): void {
    this.#persistWith({ ...this.#durable, history, epoch: epoch > this.#durable.epoch ? epoch : this.#durable.epoch });
  }

  async #watchLeader(): Promise<void> {
    const kv = await this.#etcd.get(leaderKey(this.#c.cluster));
    if (!kv) {
      await this.#campaign();
      return;
    }
    const epoch = kv.createRevision;
    const leader = decodeLeader(kv.value);
    if (epoch < this.#durable.epoch) return; // older than what we made durable: never follow it
    if (leader.nodeId === this.nodeId) return; // our own key from before a restart: it expires
    if (this.#role === 'replica' && epoch === this.#epoch) return;
    await this.#follow(epoch, leader);
  }

  async #toIdle(): Promise<void> {
    if (this.#idle) return;
    const server = this.#server;
    const replica = this.#replica;
    this.#server = null;
    this.#replica = null;
    if (server) {
      await server.server.close().catch(() => {});
      await server.db.close().catch(() => {});
    }
    if (replica) {
      try {
        await replica.pause();
        this.#idle = replica.db;
        this.#paused = replica;
        return;
      } catch {
        await replica.close().catch(() => {});
      }
    }
    this.#idle = await open(this.#c.dir, { nodeId: this.nodeId, replica: true });
  }

  /** Hand the idle store over (to close it or serve from it): a paused replica goes with it. */
  #takeIdle(): Store {
    const idle = this.#idle as Store;
    this.#idle = null;
    this.#paused = null;
    return idle;
  }

  /** Serve nothing (the store is closed: its records past the fork must not be read either),
   *  follow no one, never campaign, across restarts too. */
  async #fence(reason: string): Promise<void> {
    this.#lastSeq();
    this.#fencedReason = reason;
    this.#lastError = reason;
    if (this.#durable.fenced !== reason) this.#persistWith({ ...this.#durable, fenced: reason });
    this.#setRole('fenced', this.#epoch, undefined);
    const idle = this.#idle ? this.#takeIdle() : null;
    await idle?.close();
  }

  /**
   * Cut records `fork..last` (past the fork with `leader`'s log) into `rollback/`, with the store
   * closed meanwhile; true when done, else why not (the store is reopened either way).
   */
  async #rollback(fork: bigint, last: bigint, epoch: bigint, leader: LeaderValue): Promise<true | string> {
    await this.#takeIdle().close();
    const ourEpoch = epochAt(this.#durable.history, last);
    const reason =
      `node '${this.nodeId}' rejoined primary '${leader.nodeId}' (epoch ${epoch}); its records ${fork}..${last}, written in epoch ${ourEpoch}, ` +
      "are not in the primary's log, so were never acknowledged at majority";
    let outcome: true | string = true;
    try {
      const r = await cutPastFork(this.#c.dir, fork, reason);
      if (r) {
        this.lastRollback = { ...r, epoch: ourEpoch, primaryEpoch: epoch, primary: leader.nodeId };
        this.emit('rollback', this.lastRollback);
      }
    } catch (e) {
      outcome = e instanceof Error ? e.message : String(e);
    }
    this.#idle = await open(this.#c.dir, { nodeId: this.nodeId, replica: true });
    this.#lastSeqSeen = this.#idle.lastSeq;
    if (outcome === true && this.#lastSeqSeen >= fork) outcome = `the store still ends at seq ${this.#lastSeqSeen}`;
    if (outcome === true) this.#persistWith({ ...this.#durable, history: trimHistory(this.#durable.history, fork - 1n) });
    return outcome;
  }

  #persistWith(d: Durable): void {
    saveHistory(this.#c.dir, d);
    this.#durable = d;
  }

  async #follow(epoch: bigint, leader: LeaderValue): Promise<void> {
    const theirs = leaderHistory(leader, epoch);
    const last = this.#lastSeq();
    const fork = firstDivergence(this.#durable.history, theirs, last);
    // Stop applying anything of an older epoch before saying what we have.
    await this.#toIdle();
    this.#persist(epoch);
    if (fork !== undefined) {
      if (!leader.ready) {
        // A candidate still gathering: report (last epoch, seq); if ours is more up to date it
        // gives the key up, otherwise it serves and the next look at the key cuts our tail.
        this.#setRole('candidate', epoch, undefined);
        await this.#publish();
        return;
      }
      // Records fork..last were never acknowledged at majority (the leader's log, which holds
      // every acknowledged write, lacks them): save them under rollback/ and cut them.
      const cut = await this.#rollback(fork, last, epoch, leader);
      if (cut !== true) {
        await this.#fence(
          `node '${this.nodeId}' holds records ${fork}..${last} that are not in the log of primary '${leader.nodeId}' (epoch ${epoch}) and could not cut them (${cut}); ` +
            'it serves none of them and follows no one: manual recovery is needed (reseed this node from the primary, after saving what it holds)',
        );
        await this.#publish();
        return;
      }
    }
    // Our log is a prefix of the leader's: its history describes ours from now on.
    this.#persist(epoch, theirs);
    this.#setRole('candidate', epoch, undefined);
    await this.#publish();
    const paused = this.#paused;
    const idle = this.#takeIdle();
    if (paused) {
      paused.follow(leader.address, epoch);
      this.#replica = paused;
    } else {
      await idle.close();
      this.#replica = await openReplica(this.#c.dir, {
        nodeId: this.nodeId,
        primary: leader.address,
        token: this.#c.token,
        forwardWrites: this.#c.forwardWrites,
        heartbeatMs: this.#c.heartbeatMs,
        epoch,
      });
    }
    this.#setRole('replica', epoch, { nodeId: leader.nodeId, address: leader.address });
  }

  #majority(): number {
    return Math.floor(this.#c.voters.length / 2) + 1;
  }

  async #campaign(): Promise<void> {
    const sw = await this.#etcd.get(switchoverKey(this.#c.cluster));
    if (sw && (JSON.parse(sw.value) as { to: string }).to !== this.nodeId) return;
    const mine = this.#lastSeq();
    if (!(await this.#mayCampaign(mine))) return;
    const members = (await this.#etcd.getPrefix(memberPrefix(this.#c.cluster))).map((kv) => decodeMember(kv.value));
    const myEpoch = epochAt(this.#durable.history, mine);
    for (const m of members) {
      if (m.nodeId === this.nodeId || !this.#c.voters.includes(m.nodeId) || m.role === 'fenced') continue;
      // Raft's election restriction: a later last epoch, or the same one further on, wins.
      if (m.lastEpoch > myEpoch) return;
      if (m.lastEpoch === myEpoch && m.durableSeq > mine + this.#c.maxLagOnFailover) return;
    }
    await this.#toIdle();
    const lease = await LeaderLease.grant(this.#etcd, this.#c.leaseTtlMs, this.#c.marginMs);
    const history = trimHistory(this.#durable.history, mine);
    const value: LeaderValue = { nodeId: this.nodeId, address: this.#c.advertise, history, start: mine + 1n, ready: false };
    const epoch = await this.#etcd.createIfAbsent(leaderKey(this.#c.cluster), encodeLeader(value), lease.id).catch(async (e: unknown) => {
      await lease.revoke();
      throw e;
    });
    if (epoch === undefined) {
      await lease.revoke();
      return;
    }
    this.#lease = lease;
    this.#persist(epoch, [...history, [epoch, mine + 1n] as const]);
    this.#setRole('candidate', epoch, undefined);
    await this.#publish();
    if (!(await this.#gather(epoch, myEpoch, mine))) {
      this.#lease = null;
      await lease.revoke();
      return;
    }
    // Serve: the store opened writable, epoch in every frame, acknowledgements under the lease.
    await this.#takeIdle().close();
    const db = await open(this.#c.dir, { nodeId: this.nodeId });
    let server: ReplicationServer;
    try {
      server = await db.serveReplication({
        listen: this.#c.listen,
        token: this.#c.token,
        replicas: this.#c.voters.filter((v) => v !== this.nodeId),
        writeConcern: this.#c.writeConcern,
        heartbeatMs: this.#c.heartbeatMs,
        epoch,
        mayAcknowledge: () => this.#mayAcknowledge(lease),
        onFenced: () => void this.#serial(() => this.#demote()),
      });
    } catch (e) {
      await db.close();
      this.#idle = await open(this.#c.dir, { nodeId: this.nodeId, replica: true });
      this.#lease = null;
      await lease.revoke();
      throw e;
    }
    this.#server = { db, server };
    // The gather and the open took time: renew before the first write is taken, so that the new
    // primary does not start with a lease about to run out (its writers would be refused).
    if (!(await lease.renew().catch(() => false))) {
      await this.#demote();
      return;
    }
    if (!(await this.#etcd.putIfCreated(leaderKey(this.#c.cluster), epoch, encodeLeader({ ...value, ready: true }), lease.id))) {
      await this.#demote();
      return;
    }
    this.#setRole('primary', epoch, { nodeId: this.nodeId, address: this.#c.advertise });
  }

  /** False when this node holds fewer records than the cluster was initialized with; the first
   *  campaign of a cluster initializes it with this node's last seq. */
  async #mayCampaign(mine: bigint): Promise<boolean> {
    const key = initializeKey(this.#c.cluster);
    const init = await this.#etcd.get(key);
    if (init) {
      return mine >= decodeInitialize(init.value).seq;
    }
    // Another node may initialize at the same moment: only the one whose create succeeded goes on.
    return (await this.#etcd.createIfAbsent(key, encodeInitialize({ nodeId: this.nodeId, seq: mine }), 0n)) !== undefined;
  }

  /**
   * Wait (at most one lease TTL, a bounded number of rounds) until a majority of voters,
   * this node included, have made `epoch` durable and reported their final durable seq.
   * False if one of them is ahead of `mine` (it must win instead), or time runs out.
   */
  async #gather(epoch: bigint, myEpoch: bigint, mine: bigint): Promise<boolean> {
    const deadline = performance.now() + this.#c.leaseTtlMs;
    const others = this.#c.voters.filter((v) => v !== this.nodeId);
    let renewed = performance.now();
    for (let round = 0; round < 1000 && performance.now() < deadline && !this.#closed; round++) {
      // The loop waits for this: keep the leader key's lease alive while the voters report.
      if (performance.now() - renewed >= this.#c.loopMs) {
        renewed = performance.now();
        if (!(await this.#lease?.renew().catch(() => false))) return false;
        // The gather may outlast the member lease: voters deciding whether to campaign read it.
        if (this.#memberLease !== 0n) await this.#etcd.keepAlive(this.#memberLease).catch(() => 0);
      }
      const members = (await this.#etcd.getPrefix(memberPrefix(this.#c.cluster))).map((kv) => decodeMember(kv.value));
      const reports = members.filter((m) => others.includes(m.nodeId) && m.epoch === epoch && m.role !== 'fenced');
      if (reports.some((m) => aheadOf(m.lastEpoch, m.durableSeq, myEpoch, mine))) return false;
      if (reports.length + 1 >= this.#majority()) return this.#lease?.valid === true;
      await sleep(Math.min(50, this.#c.loopMs));
    }
    return false;
  }

  #mayAcknowledge(lease: LeaderLease): void {
    if (this.#steppingDown) throw new CairnError('CAIRN_NOT_PRIMARY', `node '${this.nodeId}' is stepping down; write to the next primary`);
    lease.check(this.nodeId);
  }

  async #demote(): Promise<void> {
    if (this.#role !== 'primary' && !this.#server) return;
    const lease = this.#lease;
    this.#lease = null;
    this.#setRole('candidate', this.#epoch, undefined);
    // Revoking marks the lease lost first (nothing more is acknowledged), then frees the key
    // at once rather than a TTL later.
    if (lease) await lease.revoke();
    await this.#toIdle();
  }

  /** Planned switchover: stop acknowledging, let `to` (default: the most up-to-date replica)
   *  catch up completely, then give the leader key up to it. */
  stepDown(to?: string): Promise<void> {
    return this.#serial(() => this.#stepDown(to));
  }

  async #stepDown(to?: string): Promise<void> {
    if (this.#role !== 'primary' || !this.#server) throw new CairnError('CAIRN_NOT_PRIMARY', `node '${this.nodeId}' is not the primary`);
    const db = this.#server.db;
    const status = db.replicationStatus() as PrimaryStatus;
    const candidates = status.replicas.filter((r) => r.state !== 'disconnected' && (to === undefined || r.nodeId === to));
    const target = candidates.sort((a, b) => (a.durableSeq > b.durableSeq ? -1 : a.durableSeq < b.durableSeq ? 1 : 0))[0];
    if (!target) throw new CairnError('CAIRN_NOT_FOUND', `no connected replica ${to === undefined ? '' : `'${to}' `}to hand over to`);
    // Long enough for the target to see the key free, campaign and gather, even on a slow host.
    const swLease = await this.#etcd.grant(Math.ceil((5 * this.#c.leaseTtlMs) / 1000));
    await this.#etcd.put(switchoverKey(this.#c.cluster), JSON.stringify({ to: target.nodeId }), swLease);
    this.#steppingDown = true;
    try {
      const deadline = performance.now() + this.#c.leaseTtlMs;
      let renewed = performance.now();
      for (let i = 0; i < 10_000 && performance.now() < deadline; i++) {
        const r = (db.replicationStatus() as PrimaryStatus).replicas.find((x) => x.nodeId === target.nodeId);
        // No commit may still land after the comparison: the target would then be behind us,
        // give way to us by the election restriction, and only it may campaign (a stalemate
        // until the switchover key expires).
        if (r && this.#server.server.inFlightCommits === 0 && r.durableSeq >= db.lastSeq) {
          await this.#demote();
          return;
        }
        // The loop waits for this: keep the lease while the target catches up.
        if (performance.now() - renewed >= this.#c.loopMs) {
          renewed = performance.now();
          await this.#lease?.renew().catch(() => false);
        }
        await sleep(10);
      }
      await this.#etcd.revoke(swLease).catch(() => {});
      throw new CairnError('CAIRN_REPLICATION_TIMEOUT', `replica '${target.nodeId}' did not catch up within ${this.#c.leaseTtlMs} ms; still primary`);
    } finally {
      this.#steppingDown = false;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#wake.abort();
    await this.#loopDone;
    await this.#serial(async () => {
      const lease = this.#lease;
      this.#lease = null;
      await this.#toIdle();
      if (lease) await lease.revoke();
      if (this.#idle) await this.#takeIdle().close();
      if (this.#memberLease !== 0n) await this.#etcd.revoke(this.#memberLease).catch(() => {});
    });
  }
}
