/**
 * `db.serveReplication()`: the primary's listener, its replica sessions, the write concern of
 * every commit, and the status of each configured replica. Commits go through the hook this
 * returns, so each one wakes the sessions (no polling) and waits for its write concern.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createServer as createTlsServer } from 'node:tls';

import { CairnError, fromNative, invalidArgument } from '../errors.js';
import { checkToken } from './auth.js';
import { Connection } from './connection.js';
import { HealPasses } from './heal.js';
import { type Ack, type Forward, type RecordCopyMessage, type RepairRequest, rangeUnavailable, type WalRangeCopy, type WalRangeRequest } from './messages.js';
import { parseHostPort, parseNodeId, parseTls, type TlsOptions } from './options.js';
import { localCopy, type RecordPeers, repairRecord, unavailable } from './record-repair.js';
import { localWalRange, repairWalSegment, type WalRangePeers } from './segment-repair.js';
import { Session, type SessionHost } from './session.js';
import { Signal } from './signal.js';
import type { PrimaryStatus, RejectedConnection, ReplicaStatus, ReplicationHook, ReplicationHost, WriteConcern } from './types.js';
import { parseWriteConcern, WriteConcernTracker } from './write-concern.js';

export interface ServeReplicationOptions {
  /** 'host:port' to listen on; port 0 lets the OS choose (see `address`). */
  listen: string;
  /** Shared secret of at least 32 bytes; it never travels (challenge-response HMAC-SHA256). */
  token: string | Buffer;
  /** Node ids of the replicas that vote besides this node. Others are refused. */
  replicas: string[];
  /** Default write concern of every write (default `{ w: 'local', timeoutMs: 10000 }`). */
  writeConcern?: WriteConcern;
  /** Serve over TLS; with `ca`, replicas must present a certificate it signed. */
  tls?: TlsOptions;
  /** Heartbeat period; a replica silent for three periods is dropped (default 1000 ms). */
  heartbeatMs?: number;
  /** A replica that connects more than this many records behind gets a snapshot instead of
   *  the WAL (default: only when retention pruned the WAL it needs). */
  snapshotLagRecords?: number;
  /** @internal failover: the epoch sent in every frame; a replica's frame with a higher one fences this primary. */
  epoch?: bigint;
  /** @internal failover: throws (CAIRN_FENCED) when this node may no longer acknowledge a write;
   *  called before each commit and again just before its promise resolves. */
  mayAcknowledge?: () => void;
  /** @internal failover: a replica spoke with a higher epoch. */
  onFenced?: (epoch: bigint) => void;
  /** Repair this store's damaged records from each replica once it has caught up (default
   *  true; tests turn it off to exercise read-repair and scrub alone). */
  healOnConnect?: boolean;
}

export interface ReplicationServer {
  /** The address actually listened on, 'host:port'. */
  readonly address: string;
  /** @internal failover: commits handed to the engine and not yet settled (a planned
   *  switchover waits for none before it compares seqs). */
  readonly inFlightCommits: number;
  close(): Promise<void>;
}

const KEYS = [
  'listen',
  'token',
  'replicas',
  'writeConcern',
  'tls',
  'heartbeatMs',
  'snapshotLagRecords',
  'epoch',
  'mayAcknowledge',
  'onFenced',
  'healOnConnect',
];
/** Commit times kept for `lagMs`. */
const MAX_COMMIT_TIMES = 1 << 16;
/** Refused connections kept for `replicationStatus().rejected`. */
const MAX_REJECTED = 16;

interface ReplicaEntry {
  status: ReplicaStatus;
  session: Session | null;
  lastContactMono: number;
}

/** @internal called by `Store.serveReplication`. */
export async function startReplicationServer(host: ReplicationHost, options: ServeReplicationOptions): Promise<ReplicationServer & { hook: ReplicationHook }> {
  if (options === null || typeof options !== 'object') throw invalidArgument('options must be an object');
  for (const k of Object.keys(options)) if (!KEYS.includes(k)) throw invalidArgument(`options.${k} is not a known option`);
  const listen = parseHostPort('options.listen', options.listen, true);
  const token = checkToken('options.token', options.token);
  if (!Array.isArray(options.replicas)) throw invalidArgument('options.replicas must be an array of node ids');
  const replicas = options.replicas.map((r, i) => parseNodeId(`options.replicas[${i}]`, r));
  if (new Set(replicas).size !== replicas.length) throw invalidArgument('options.replicas must not name a node twice');
  if (replicas.includes(host.nodeId)) throw invalidArgument(`options.replicas must not name this node ('${host.nodeId}')`);
  const concern = parseWriteConcern('options.writeConcern', options.writeConcern);
  const tls = parseTls('options.tls', options.tls);
  const heartbeatMs = options.heartbeatMs ?? 1000;
  if (!Number.isInteger(heartbeatMs) || heartbeatMs < 10 || heartbeatMs > 60_000)
    throw invalidArgument('options.heartbeatMs must be an integer from 10 to 60000');
  const lag = options.snapshotLagRecords;
  if (lag !== undefined && (!Number.isSafeInteger(lag) || lag < 1)) throw invalidArgument('options.snapshotLagRecords must be a positive integer');
  const primary = new Primary(host, token, replicas, concern, heartbeatMs, lag ?? null);
  primary.epoch = options.epoch ?? 0n;
  primary.mayAcknowledge = options.mayAcknowledge ?? (() => {});
  primary.onFenced = options.onFenced ?? (() => {});
  if (options.healOnConnect !== undefined && typeof options.healOnConnect !== 'boolean') throw invalidArgument('options.healOnConnect must be a boolean');
  primary.healOnConnect = options.healOnConnect ?? true;
  await primary.listen(listen.host, listen.port, tls);
  return primary;
}

class Primary implements SessionHost, ReplicationServer {
  readonly nodeId: string;
  readonly token: Buffer;
  readonly native: ReplicationHost['native'];
  readonly dir: string;
  readonly heartbeatMs: number;
  readonly snapshotLagRecords: number | null;
  readonly commits = new Signal();
  readonly #tracker: WriteConcernTracker;
  readonly #replicas = new Map<string, ReplicaEntry>();
  readonly #sessions = new Set<Session>();
  readonly #rejected: RejectedConnection[] = [];
  /** [seq, performance.now()] of recent commits, oldest first. */
  #commitTimes: Array<[bigint, number]> = [];
  readonly #startedMono = performance.now();
  readonly #seqAtStart: bigint;
  #server: Server | null = null;
  #timer: NodeJS.Timeout | null = null;
  #closed = false;
  /** Passes repairing damaged records from the replicas, started as each one catches up. */
  readonly #heal: HealPasses;
  /** Sessions that start a heal pass once caught up (a lagging replica holds older versions). */
  readonly #healOnCatchUp = new Set<Session>();
  readonly #peers: RecordPeers = { fetch: (collection, id, label) => this.#fetchCopies(collection, id, label, null) };
  readonly #rangePeers: WalRangePeers = { fetch: (first, through, maxBytes) => this.#fetchWalRange(first, through, maxBytes, null) };
  address = '';
  epoch = 0n;
  mayAcknowledge: () => void = () => {};
  onFenced: (epoch: bigint) => void = () => {};
  healOnConnect = true;
  inFlightCommits = 0;
  readonly hook: ReplicationHook;

  constructor(host: ReplicationHost, token: Buffer, replicas: string[], concern: WriteConcern, heartbeatMs: number, snapshotLagRecords: number | null) {
    this.snapshotLagRecords = snapshotLagRecords;
    this.#seqAtStart = host.native.lastSeq;
    this.nodeId = host.nodeId;
    this.native = host.native;
    this.dir = host.dir;
    this.token = token;
    this.heartbeatMs = heartbeatMs;
    this.#tracker = new WriteConcernTracker(host.nodeId, replicas, concern);
    this.#heal = new HealPasses(() => this.native, this.nodeId, this.#peers);
    for (const id of replicas) {
      this.#replicas.set(id, {
        session: null,
        lastContactMono: 0,
        status: {
          nodeId: id,
          address: null,
          state: 'disconnected',
          receivedSeq: 0n,
          durableSeq: 0n,
          appliedSeq: 0n,
          lagRecords: 0n,
          lagMs: 0,
          lastContact: null,
          lastError: null,
          inFlightBytes: 0,
        },
      });
    }
    this.hook = {
      commit: (payload, c) => this.#commit(payload, c),
      commitBy: (submit, c) => this.#commitBy(submit, c),
      commitsLocally: true,
      status: () => this.status(),
      close: () => this.close(),
      repairRecord: (collection, id) => repairRecord(this.native, this.nodeId, this.#peers, collection, id),
      healDamaged: () => this.#heal.run(),
      repairWalSegment: (rel, expected, note) => repairWalSegment(this.native, this.nodeId, this.#rangePeers, this.dir, rel, expected, note),
    };
  }

  /** Every configured replica's copy of a record (except `except`'s); an unreachable one says so. */
  #fetchCopies(collection: string, id: string, label: bigint, except: Session | null): Promise<RecordCopyMessage[]> {
    return this.#askReplicas(except, unavailable, (s) => s.askCopy(collection, id, label));
  }

  /** Every configured replica's copy of a WAL range (except `except`'s). */
  #fetchWalRange(firstSeq: bigint, throughSeq: bigint, maxBytes: number, except: Session | null): Promise<WalRangeCopy[]> {
    return this.#askReplicas(except, rangeUnavailable, (s) => s.askWalRange(firstSeq, throughSeq, maxBytes));
  }

  #askReplicas<C extends { nodeId: string }>(
    except: Session | null,
    missing: (nodeId: string, detail: string) => C,
    ask: (s: Session) => Promise<C[]>,
  ): Promise<C[]> {
    const asks: Array<Promise<C[]>> = [];
    for (const [nodeId, entry] of this.#replicas) {
      if (except && nodeId === except.nodeId) continue;
      const s = entry.session;
      asks.push(s?.streaming ? ask(s) : Promise.resolve([missing(nodeId, 'not connected to this primary')]));
    }
    return Promise.all(asks).then((all) => all.flat().filter((c) => !except || c.nodeId !== except.nodeId));
  }

  async walRangeRequest(s: Session, r: WalRangeRequest): Promise<WalRangeCopy[]> {
    const own = await localWalRange(this.native, this.nodeId, r.firstSeq, r.throughSeq, r.maxBytes);
    if (!r.relay) return [own];
    return [own, ...(await this.#fetchWalRange(r.firstSeq, r.throughSeq, r.maxBytes, s))];
  }

  async repairRequest(s: Session, r: RepairRequest): Promise<RecordCopyMessage[]> {
    const own = localCopy(this.native, this.nodeId, r.collection, r.id);
    if (!r.relay) return [own];
    return [own, ...(await this.#fetchCopies(r.collection, r.id, r.label, s))];
  }

  async listen(hostname: string, port: number, tls: TlsOptions | undefined): Promise<void> {
    const onSocket = (socket: Socket) => {
      if (this.#closed) {
        socket.destroy();
        return;
      }
      const s = new Session(new Connection(socket, this.epoch), this);
      this.#sessions.add(s);
    };
    const server = tls
      ? createTlsServer({ ...tls, requestCert: tls.ca !== undefined, rejectUnauthorized: tls.ca !== undefined }, onSocket)
      : createServer(onSocket);
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(new CairnError('CAIRN_IO', `replication cannot listen on ${hostname}:${port}: ${e.message}`, { cause: e })));
      server.listen(port, hostname, () => resolve());
    });
    const a = server.address();
    this.address = a && typeof a === 'object' ? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : `${hostname}:${port}`;
    this.#timer = setInterval(() => this.#checkLiveness(), this.heartbeatMs);
    this.#timer.unref();
  }

  #commit(payload: Buffer, concern: WriteConcern): Promise<bigint> {
    return this.#commitBy(() => this.native.commit(payload), concern);
  }

  /** Run one local commit (`submit` resolves with its seq), then wait for the write concern. */
  async #commitBy(submit: () => Promise<bigint>, concern: WriteConcern): Promise<bigint> {
    let seq: bigint;
    this.mayAcknowledge();
    this.inFlightCommits++;
    try {
      seq = await submit();
    } catch (e) {
      throw fromNative(e);
    } finally {
      this.inFlightCommits--;
    }
    this.#commitTimes.push([seq, performance.now()]);
    if (this.#commitTimes.length > MAX_COMMIT_TIMES) this.#commitTimes.splice(0, this.#commitTimes.length - MAX_COMMIT_TIMES);
    // Woken at once: the first commit of a group ships the whole group (it is all durable).
    this.commits.notify();
    await this.#tracker.wait(seq, concern, this.native.lastSeq);
    try {
      this.mayAcknowledge();
    } catch (e) {
      // Committed here, perhaps elsewhere too, but never acknowledged: say which seq.
      if (e instanceof CairnError) Object.assign(e, { seq });
      throw e;
    }
    return seq;
  }

  peerEpoch(s: Session, epoch: bigint): void {
    if (epoch <= this.epoch) return;
    this.onFenced(epoch);
    throw new CairnError(
      'CAIRN_FENCED',
      `replica '${s.nodeId}' follows epoch ${epoch}, newer than this primary's ${this.epoch}: this node is no longer primary`,
    );
  }

  admit(nodeId: string): void {
    if (!this.#replicas.has(nodeId)) {
      throw new CairnError(
        'CAIRN_REPLICATION_PROTOCOL',
        `node '${nodeId}' is not one of this primary's configured replicas (${[...this.#replicas.keys()].join(', ')})`,
      );
    }
  }

  started(s: Session): void {
    const entry = this.#replicas.get(s.nodeId) as ReplicaEntry;
    // One connection per replica: a newer one (it reconnected) replaces the older.
    if (entry.session && entry.session !== s)
      entry.session.conn.fail(new CairnError('CAIRN_DISCONNECTED', `replica '${s.nodeId}' connected again from ${s.conn.remote}`));
    entry.session = s;
    entry.status.address = s.conn.remote;
    entry.status.lastError = null;
    if (this.healOnConnect) this.#healOnCatchUp.add(s);
  }

  contact(s: Session): void {
    const entry = this.#replicas.get(s.nodeId);
    if (!entry || (entry.session !== s && entry.session !== null)) return;
    entry.lastContactMono = performance.now();
    entry.status.lastContact = new Date();
  }

  acked(s: Session, ack: Ack): void {
    const entry = this.#replicas.get(s.nodeId);
    if (!entry || entry.session !== s) return;
    entry.status.receivedSeq = ack.receivedSeq;
    entry.status.durableSeq = ack.durableSeq;
    entry.status.appliedSeq = ack.appliedSeq;
    this.#tracker.durable(s.nodeId, ack.durableSeq, this.native.lastSeq);
    if (ack.appliedSeq >= this.native.lastSeq && this.#healOnCatchUp.delete(s)) this.#heal.start();
    this.#pruneCommitTimes();
  }

  ended(s: Session, e: CairnError | null): void {
    this.#sessions.delete(s);
    this.#healOnCatchUp.delete(s);
    if (e && e.code !== 'CAIRN_DISCONNECTED' && !s.streaming) {
      this.#rejected.push({ address: s.conn.remote, nodeId: s.nodeId || null, error: `${e.code}: ${e.message}`, at: new Date() });
      if (this.#rejected.length > MAX_REJECTED) this.#rejected.shift();
    }
    const entry = this.#replicas.get(s.nodeId);
    if (!entry || (entry.session !== s && entry.session !== null)) return;
    if (entry.session === s) entry.session = null;
    if (e) entry.status.lastError = `${e.code}: ${e.message}`;
  }

  forward(f: Forward): Promise<bigint> {
    return this.#commit(
      f.batch,
      f.w === 'default' ? (f.timeoutMs > 0 ? { timeoutMs: f.timeoutMs } : {}) : { w: f.w, ...(f.timeoutMs > 0 ? { timeoutMs: f.timeoutMs } : {}) },
    );
  }

  #checkLiveness(): void {
    const now = performance.now();
    for (const entry of this.#replicas.values()) {
      if (entry.session && now - entry.lastContactMono > 3 * this.heartbeatMs) {
        entry.session.conn.fail(
          new CairnError('CAIRN_DISCONNECTED', `replica '${entry.status.nodeId}' sent nothing for ${Math.round(now - entry.lastContactMono)} ms`),
        );
      }
    }
    this.commits.notify();
  }

  #pruneCommitTimes(): void {
    let min = this.native.lastSeq;
    for (const e of this.#replicas.values()) if (e.status.appliedSeq < min) min = e.status.appliedSeq;
    let drop = 0;
    while (drop < this.#commitTimes.length && (this.#commitTimes[drop] as [bigint, number])[0] <= min) drop++;
    if (drop > 0) this.#commitTimes.splice(0, drop);
  }

  status(): PrimaryStatus {
    const lastSeq = this.native.lastSeq;
    const now = performance.now();
    const replicas = [...this.#replicas.values()].map((e) => {
      const s = { ...e.status };
      s.inFlightBytes = e.session?.inFlightBytes ?? 0;
      s.state = e.session === null ? 'disconnected' : e.session.snapshotting ? 'snapshotting' : e.session.nextSeq - 1n < lastSeq ? 'catching-up' : 'streaming';
      s.lagRecords = lastSeq > s.appliedSeq ? lastSeq - s.appliedSeq : 0n;
      if (s.lagRecords === 0n) s.lagMs = 0;
      else {
        // The oldest commit the replica lacks: recorded here, or from before this server started,
        // or committed so recently that its promise has not resolved yet (lag ~0).
        const first = this.#commitTimes.find(([seq]) => seq > s.appliedSeq);
        s.lagMs = first ? Math.round(now - first[1]) : s.appliedSeq < this.#seqAtStart ? Math.round(now - this.#startedMono) : 0;
      }
      return s;
    });
    return {
      role: 'primary',
      nodeId: this.nodeId,
      lastSeq,
      commitSeq: this.#tracker.commitSeq(lastSeq),
      replicas,
      rejected: [...this.#rejected],
      lastHeal: this.#heal.last,
    };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#tracker.abandon();
    const healing = this.#heal.stop();
    for (const s of this.#sessions) s.conn.fail(new CairnError('CAIRN_DISCONNECTED', `primary '${this.nodeId}' is shutting down its replication server`));
    const server = this.#server;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    // Its requests were answered 'unavailable' as the sessions closed; an install may still run.
    await healing;
  }
}
