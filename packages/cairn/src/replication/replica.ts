/**
 * `openReplica()`: a read-only store that follows a primary. It connects, authenticates (and
 * checks the primary's proof), sends its last durable seq, then applies WAL frames strictly in
 * order through the engine's `submitReplicated` (which verifies every record again, writes it to
 * this node's WAL with the primary's seq and time, fsyncs per the sync mode and applies it),
 * acknowledging received / durable / applied seqs. After a cut it reconnects with a capped
 * exponential backoff, so at most one attempt per `MAX_BACKOFF_MS` once the primary stays away.
 */
import { createHash, type Hash } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdtempSync, openSync, writeSync } from 'node:fs';
import { readdir, rename, rm } from 'node:fs/promises';
import { connect as netConnect, type Socket } from 'node:net';
import { basename, dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { connect as tlsConnect } from 'node:tls';

import { importSnapshot } from '../archive.js';
import { CairnError, fromNative, invalidArgument } from '../errors.js';
import type { NativeStore } from '../native.js';
import { restore } from '../restore.js';
import { type Collection, type CollectionInfo, open, type Store, type SyncMode } from '../store.js';
import { checkToken, newNonce, proof, verifyProof } from './auth.js';
import { Connection } from './connection.js';
import { type Frame, FrameType, frameTypeName, protocolError } from './frame.js';
import { HealPasses } from './heal.js';
import {
  decodeChallenge,
  decodeForwardResult,
  decodeHeartbeat,
  decodeReady,
  decodeRepairRequest,
  decodeRepairResponse,
  decodeSnapshotBegin,
  decodeSnapshotData,
  decodeSnapshotEnd,
  decodeWal,
  decodeWalRangeRequest,
  decodeWalRangeResponse,
  encodeAck,
  encodeAuth,
  encodeForward,
  encodeHeartbeat,
  encodeHello,
  encodeRepairRequest,
  encodeRepairResponse,
  encodeWalRangeRequest,
  encodeWalRangeResponse,
  type ForwardResult,
  type RecordCopyMessage,
  rangeUnavailable,
  type WalRangeCopy,
} from './messages.js';
import { parseHostPort, parseNodeId, parseTls, type TlsOptions } from './options.js';
import { PendingRequests } from './pending.js';
import { localCopy, REPAIR_TIMEOUT_MS, type RecordPeers, repairRecord, unavailable } from './record-repair.js';
import { localWalRange, PIECE_TIMEOUT_MS, repairWalSegment, type WalRangePeers } from './segment-repair.js';
import type { ReplicaNodeStatus, ReplicationHook, WriteConcern } from './types.js';

export interface OpenReplicaOptions {
  nodeId: string;
  /** The primary's replication address, 'host:port'. */
  primary: string;
  token: string | Buffer;
  tls?: TlsOptions;
  /** Send writes to the primary instead of refusing them with CAIRN_NOT_PRIMARY. */
  forwardWrites?: boolean;
  sync?: SyncMode;
  /** The primary's heartbeat period; silence for three of them is a cut (default 1000 ms). */
  heartbeatMs?: number;
  /** @internal failover: the epoch this replica follows (already made durable by the caller);
   *  frames from a lower epoch are refused with CAIRN_FENCED, and ours carry it. */
  epoch?: bigint;
  /** Repair this store's damaged records from the other nodes each time it has caught up with
   *  the primary (default true; tests turn it off to exercise read-repair and scrub alone). */
  healOnConnect?: boolean;
}

const KEYS = ['nodeId', 'primary', 'token', 'tls', 'forwardWrites', 'sync', 'heartbeatMs', 'epoch', 'healOnConnect'];
const MIN_BACKOFF_MS = 50;
export const MAX_BACKOFF_MS = 2000;

/** Open `dir` (creating it if missing or empty) as a replica of `options.primary` and follow it. */
export async function openReplica(dir: string, options: OpenReplicaOptions): Promise<Replica> {
  if (options === null || typeof options !== 'object') throw invalidArgument('options must be an object');
  for (const k of Object.keys(options)) if (!KEYS.includes(k)) throw invalidArgument(`options.${k} is not a known option`);
  const nodeId = parseNodeId('options.nodeId', options.nodeId);
  const primary = parseHostPort('options.primary', options.primary, false);
  const token = checkToken('options.token', options.token);
  const tls = parseTls('options.tls', options.tls);
  if (options.forwardWrites !== undefined && typeof options.forwardWrites !== 'boolean') throw invalidArgument('options.forwardWrites must be a boolean');
  const heartbeatMs = options.heartbeatMs ?? 1000;
  if (!Number.isInteger(heartbeatMs) || heartbeatMs < 10 || heartbeatMs > 60_000)
    throw invalidArgument('options.heartbeatMs must be an integer from 10 to 60000');
  if (options.healOnConnect !== undefined && typeof options.healOnConnect !== 'boolean') throw invalidArgument('options.healOnConnect must be a boolean');
  await finishInterruptedInstall(resolve(dir));
  const store = await open(dir, { nodeId, replica: true, ...(options.sync ? { sync: options.sync } : {}) });
  const r = new Replica(store, {
    nodeId,
    primary: options.primary,
    host: primary.host,
    port: primary.port,
    token,
    tls,
    forward: options.forwardWrites === true,
    heartbeatMs,
    sync: options.sync,
    epoch: options.epoch ?? 0n,
    healOnConnect: options.healOnConnect ?? true,
  });
  r.start();
  return r;
}

interface Config {
  nodeId: string;
  primary: string;
  host: string;
  port: number;
  token: Buffer;
  tls: TlsOptions | undefined;
  forward: boolean;
  heartbeatMs: number;
  sync: SyncMode | undefined;
  epoch: bigint;
  healOnConnect: boolean;
}

/** A snapshot archive being received (SNAPSHOT_BEGIN .. SNAPSHOT_END). */
interface IncomingSnapshot {
  seq: bigint;
  bytes: bigint;
  written: bigint;
  tmp: string;
  file: string;
  fd: number;
  hash: Hash;
}

type Phase = 'challenge' | 'ready' | 'streaming';

export class Replica {
  #store: Store;
  /** The store is being replaced by a snapshot: its close is not the replica's. */
  #swapping = false;
  #incoming: IncomingSnapshot | null = null;
  #snapshotsInstalled = 0;
  readonly #hook: ReplicationHook;
  #config: Config;
  #native!: NativeStore;
  #conn: Connection | null = null;
  #phase: Phase = 'challenge';
  #state: ReplicaNodeStatus['state'] = 'connecting';
  #closed = false;
  /** Between `pause()` and `follow()`: no connection and no reconnect; the store stays open. */
  #paused = false;
  #received = 0n;
  #primaryLastSeq = 0n;
  /** When this replica first fell behind what it had heard of (monotonic); null: caught up. */
  #behindSince: number | null = null;
  #lastContact: Date | null = null;
  #lastContactMono = 0;
  #lastError: string | null = null;
  /** Records are submitted in order; a reconnect waits for this to settle first. */
  #applying: Promise<void> = Promise.resolve();
  /** The connection an ACK is scheduled on (`#ackSoon`). */
  #ackDue: Connection | null = null;
  #waiters: Array<{ seq: bigint; resolve: () => void; reject: (e: CairnError) => void }> = [];
  #forwards = new Map<number, { resolve: (r: ForwardResult) => void; reject: (e: CairnError) => void }>();
  #nextRequest = 1;
  #timer: NodeJS.Timeout | null = null;
  #retry: NodeJS.Timeout | null = null;
  #backoff = MIN_BACKOFF_MS;
  #connected: Promise<void>;
  #markConnected: () => void = () => {};
  readonly #repairs = new PendingRequests<RecordCopyMessage[]>();
  readonly #ranges = new PendingRequests<WalRangeCopy[]>();
  /** The primary answers a relayed request after asking the other replicas, each bounded. */
  readonly #peers: RecordPeers = { fetch: (collection, id, label) => this.#fetchCopies(collection, id, label) };
  readonly #rangePeers: WalRangePeers = { fetch: (first, through, maxBytes) => this.#fetchWalRange(first, through, maxBytes) };
  readonly #heal: HealPasses;
  /** A heal pass is due once this connection has caught up. */
  #healDue = false;

  /** @internal use `openReplica()`. */
  constructor(store: Store, config: Config) {
    this.#store = store;
    this.#config = config;
    this.#connected = new Promise((resolve) => (this.#markConnected = resolve));
    this.#heal = new HealPasses(() => this.#native, config.nodeId, this.#peers);
    this.#hook = {
      commit: (payload, concern) => this.#write(payload, concern),
      // Not forwarded: the rows of a deleteWhere, and a transaction's conflicts, must be
      // resolved where the writes are ordered, on the primary.
      commitBy: () =>
        Promise.reject(
          new CairnError(
            'CAIRN_NOT_PRIMARY',
            `node '${this.#config.nodeId}' is a replica; run deleteWhere and transactions on the primary at ${this.#config.primary}`,
          ),
        ),
      commitsLocally: false,
      status: () => this.replicationStatus(),
      close: () => (this.#swapping ? Promise.resolve() : this.#shutdown()),
      repairRecord: (collection, id) => repairRecord(this.#native, this.#config.nodeId, this.#peers, collection, id),
      healDamaged: () => this.#heal.run(),
      repairWalSegment: (rel, expected, note) => repairWalSegment(this.#native, config.nodeId, this.#rangePeers, this.#store.dir, rel, expected, note),
    };
    this.#attach(store);
    this.#received = store.lastSeq;
  }

  #attach(store: Store): void {
    this.#store = store;
    store.attachReplication((native) => {
      this.#native = native;
      return this.#hook;
    });
  }

  /** The store, read-only: writes reject with CAIRN_NOT_PRIMARY (or are forwarded). A
   *  snapshot catch-up replaces it (collections taken from the old one are closed then). */
  get db(): Store {
    return this.#store;
  }

  collection(name: string): Collection {
    return this.#store.collection(name);
  }

  collections(): CollectionInfo[] {
    return this.#store.collections();
  }

  get nodeId(): string {
    return this.#config.nodeId;
  }

  get lastSeq(): bigint {
    return this.#store.lastSeq;
  }

  /** Resolves once the first connection is authenticated and streaming (for tests and tools). */
  connected(): Promise<void> {
    return this.#connected;
  }

  /** Resolves when this replica has applied `seq` (read-your-writes after a write on the primary). */
  waitFor(seq: bigint, options: { timeoutMs?: number } = {}): Promise<void> {
    if (typeof seq !== 'bigint' || seq < 0n) return Promise.reject(invalidArgument('seq must be a non-negative bigint'));
    if (this.#store.lastSeq >= seq) return Promise.resolve();
    if (this.#closed) return Promise.reject(new CairnError('CAIRN_CLOSED', 'replica is closed'));
    return new Promise((resolve, reject) => {
      const entry = { seq, resolve, reject };
      this.#waiters.push(entry);
      if (options.timeoutMs !== undefined) {
        setTimeout(() => {
          if (!this.#waiters.includes(entry)) return;
          this.#waiters = this.#waiters.filter((w) => w !== entry);
          reject(
            new CairnError(
              'CAIRN_REPLICATION_TIMEOUT',
              `replica '${this.#config.nodeId}' had not applied seq ${seq} after ${options.timeoutMs} ms (applied: ${this.#store.lastSeq})`,
            ),
          );
        }, options.timeoutMs).unref();
      }
    });
  }

  replicationStatus(): ReplicaNodeStatus {
    const applied = this.#store.lastSeq;
    const lagRecords = this.#primaryLastSeq > applied ? this.#primaryLastSeq - applied : 0n;
    return {
      role: 'replica',
      nodeId: this.#config.nodeId,
      primary: this.#config.primary,
      state: this.#state,
      receivedSeq: this.#received,
      durableSeq: applied,
      appliedSeq: applied,
      lagRecords,
      lagMs: lagRecords === 0n || this.#behindSince === null ? 0 : Math.round(performance.now() - this.#behindSince),
      lastContact: this.#lastContact,
      lastError: this.#lastError,
      snapshotsInstalled: this.#snapshotsInstalled,
      lastHeal: this.#heal.last,
    };
  }

  /** The primary's copy of a record and, relayed by it, the other replicas'. */
  #fetchCopies(collection: string, id: string, label: bigint): Promise<RecordCopyMessage[]> {
    return this.#askPrimary(this.#repairs, REPAIR_TIMEOUT_MS, unavailable, (requestId) => [
      FrameType.REPAIR_REQUEST,
      encodeRepairRequest({ requestId, relay: true, label, collection, id }),
    ]);
  }

  /** The primary's copy of a WAL range and, relayed by it, the other replicas'. */
  #fetchWalRange(firstSeq: bigint, throughSeq: bigint, maxBytes: number): Promise<WalRangeCopy[]> {
    return this.#askPrimary(this.#ranges, PIECE_TIMEOUT_MS, rangeUnavailable, (requestId) => [
      FrameType.WAL_RANGE_REQUEST,
      encodeWalRangeRequest({ requestId, relay: true, firstSeq, throughSeq, maxBytes }),
    ]);
  }

  /** Send a relayed request to the primary; it asks each other replica for at most `peerMs`. */
  #askPrimary<C>(
    pending: PendingRequests<C[]>,
    peerMs: number,
    missing: (nodeId: string, detail: string) => C,
    request: (requestId: number) => [FrameType, Buffer],
  ): Promise<C[]> {
    const conn = this.#conn;
    if (!conn || this.#phase !== 'streaming') return Promise.resolve([missing(this.#config.primary, 'this replica is not connected to its primary')]);
    const wait = 2 * peerMs + 500;
    const { requestId, answer } = pending.open(wait, () => [missing(this.#config.primary, `primary did not answer within ${wait} ms`)]);
    conn.send(...request(requestId));
    return answer;
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#applying;
    await this.#store.close();
  }

  /**
   * Stop following, keeping the store open (read-only): the connection closes and every record
   * already received is applied before this resolves, so `lastSeq` is final until `follow()`.
   * Failover uses it to stop taking an old primary's records without closing and reopening.
   */
  async pause(): Promise<void> {
    if (this.#closed) throw new CairnError('CAIRN_CLOSED', `replica '${this.#config.nodeId}' is closed`);
    this.#paused = true;
    if (this.#timer) clearInterval(this.#timer);
    if (this.#retry) clearTimeout(this.#retry);
    this.#timer = null;
    this.#retry = null;
    this.#conn?.close();
    await this.#applying;
    this.#state = 'disconnected';
  }

  /** After `pause()`: follow `primary` (host:port) in `epoch`. */
  follow(primary: string, epoch: bigint): void {
    if (this.#closed || !this.#paused) throw new CairnError('CAIRN_INTERNAL', `replica '${this.#config.nodeId}' is not paused`);
    const { host, port } = parseHostPort('primary', primary, false);
    this.#config = { ...this.#config, primary, host, port, epoch };
    this.#paused = false;
    this.#primaryLastSeq = 0n;
    this.#behindSince = null;
    this.#backoff = MIN_BACKOFF_MS;
    this.start();
  }

  /** @internal */
  start(): void {
    this.#connect();
    this.#timer = setInterval(() => this.#tick(), this.#config.heartbeatMs);
    this.#timer.unref();
  }

  #connect(): void {
    if (this.#closed || this.#paused) return;
    this.#state = this.#state === 'connecting' ? 'connecting' : 'disconnected';
    const { host, port, tls } = this.#config;
    const socket: Socket = tls ? tlsConnect({ host, port, ...tls, ...(tls.ca ? {} : { rejectUnauthorized: false }) }) : netConnect({ host, port });
    const conn = new Connection(socket, this.#config.epoch);
    this.#conn = conn;
    this.#phase = 'challenge';
    this.#lastContactMono = performance.now();
    const nonce = newNonce();
    conn.onFrame((f) => this.#frame(conn, f, nonce));
    conn.onClose((e) => this.#disconnected(conn, e));
    socket.once(tls ? 'secureConnect' : 'connect', () => conn.send(FrameType.HELLO, encodeHello({ nodeId: this.#config.nodeId, nonce })));
  }

  #frame(conn: Connection, f: Frame, nonce: Buffer): void {
    if (f.epoch < this.#config.epoch) {
      throw new CairnError(
        'CAIRN_FENCED',
        `primary ${this.#config.primary} sent a frame of epoch ${f.epoch}, older than epoch ${this.#config.epoch} this replica follows; refused`,
      );
    }
    this.#lastContact = new Date();
    this.#lastContactMono = performance.now();
    switch (this.#phase) {
      case 'challenge': {
        if (f.type !== FrameType.CHALLENGE) throw protocolError(`expected CHALLENGE, got ${frameTypeName(f.type)}`);
        const c = decodeChallenge(f.payload);
        const h = { replicaNonce: nonce, primaryNonce: c.nonce, replicaId: this.#config.nodeId, primaryId: c.nodeId };
        if (!verifyProof(this.#config.token, 'primary', h, c.proof)) {
          throw protocolError(`primary ${this.#config.primary} ('${c.nodeId}') failed authentication: its proof does not match the shared token`);
        }
        conn.send(FrameType.AUTH, encodeAuth({ proof: proof(this.#config.token, 'replica', h), lastSeq: this.#store.lastSeq }));
        this.#phase = 'ready';
        return;
      }
      case 'ready': {
        if (f.type !== FrameType.READY) throw protocolError(`expected READY, got ${frameTypeName(f.type)}`);
        this.#heard(decodeReady(f.payload).primaryLastSeq);
        this.#phase = 'streaming';
        this.#state = this.#primaryLastSeq > this.#store.lastSeq ? 'catching-up' : 'streaming';
        this.#backoff = MIN_BACKOFF_MS;
        this.#lastError = null;
        this.#received = this.#store.lastSeq;
        this.#markConnected();
        this.#healDue = this.#config.healOnConnect;
        if (this.#primaryLastSeq <= this.#store.lastSeq) this.#appliedNow();
        return;
      }
      case 'streaming':
        switch (f.type) {
          case FrameType.WAL: {
            const m = decodeWal(f.payload);
            if (m.firstSeq !== this.#received + 1n) {
              throw new CairnError(
                'CAIRN_SEQUENCE_GAP',
                `WAL frame from the primary starts at seq ${m.firstSeq}, expected ${this.#received + 1n}; nothing of it was applied`,
              );
            }
            this.#received = m.lastSeq;
            this.#heard(m.lastSeq);
            this.#ackSoon(conn);
            // Handed to the commit thread at once, not after the previous chunk settled: chunks
            // that arrive during one fsync share the next (the engine groups them as it groups
            // local commits), and it applies them in arrival order. A refused chunk fails the
            // ones queued behind it with a sequence gap; the first error closes the connection.
            const applied = this.#native.submitReplicated(Buffer.from(m.records)).then(
              () => {
                this.#appliedNow();
                this.#ackSoon(conn);
              },
              (e: unknown) => {
                const err = fromNative(e);
                conn.fail(new CairnError(err.code, `replica '${this.#config.nodeId}' refused records ${m.firstSeq}..${m.lastSeq}: ${err.message}`));
              },
            );
            this.#applying = Promise.all([this.#applying, applied]).then(() => {});
            return;
          }
          case FrameType.SNAPSHOT_BEGIN: {
            const b = decodeSnapshotBegin(f.payload);
            this.#dropIncoming();
            const tmp = mkdtempSync(join(dirname(this.#store.dir), `.${basename(this.#store.dir)}.snapshot-`));
            const file = join(tmp, 'snapshot.cairnarc');
            this.#incoming = { seq: b.seq, bytes: b.bytes, written: 0n, tmp, file, fd: openSync(file, 'w'), hash: createHash('sha256') };
            this.#state = 'snapshotting';
            this.#heard(b.seq);
            return;
          }
          case FrameType.SNAPSHOT_DATA: {
            const d = decodeSnapshotData(f.payload);
            const inc = this.#incoming;
            if (!inc) throw protocolError('SNAPSHOT_DATA without SNAPSHOT_BEGIN');
            if (d.offset !== inc.written || inc.written + BigInt(d.bytes.length) > inc.bytes) {
              throw protocolError(
                `SNAPSHOT_DATA at offset ${d.offset} of ${d.bytes.length} bytes does not continue the ${inc.bytes}-byte archive at ${inc.written}`,
              );
            }
            writeSync(inc.fd, d.bytes);
            inc.hash.update(d.bytes);
            inc.written += BigInt(d.bytes.length);
            return;
          }
          case FrameType.SNAPSHOT_END: {
            const e = decodeSnapshotEnd(f.payload);
            const inc = this.#incoming;
            if (!inc) throw protocolError('SNAPSHOT_END without SNAPSHOT_BEGIN');
            if (inc.written !== inc.bytes) throw protocolError(`snapshot archive ended at ${inc.written} of ${inc.bytes} bytes`);
            if (!inc.hash.digest().equals(e.sha256))
              throw new CairnError('CAIRN_CORRUPTION', 'snapshot archive from the primary failed its SHA-256; nothing was installed');
            fsyncSync(inc.fd);
            closeSync(inc.fd);
            this.#incoming = null;
            // Installed between connections: this one ends, the next announces the snapshot's seq.
            this.#applying = this.#applying.then(() => this.#install(inc));
            conn.close();
            return;
          }
          case FrameType.HEARTBEAT:
            this.#heard(decodeHeartbeat(f.payload).lastSeq);
            this.#ackSoon(conn);
            return;
          case FrameType.REPAIR_REQUEST: {
            const req = decodeRepairRequest(f.payload);
            // A replica answers for itself only; relaying is the primary's job.
            conn.send(
              FrameType.REPAIR_RESPONSE,
              encodeRepairResponse({ requestId: req.requestId, copies: [localCopy(this.#native, this.#config.nodeId, req.collection, req.id)] }),
            );
            return;
          }
          case FrameType.REPAIR_RESPONSE:
            this.#repairs.settleWith(decodeRepairResponse(f.payload));
            return;
          case FrameType.WAL_RANGE_REQUEST: {
            const req = decodeWalRangeRequest(f.payload);
            // A replica answers for itself only; relaying is the primary's job.
            void localWalRange(this.#native, this.#config.nodeId, req.firstSeq, req.throughSeq, req.maxBytes).then((copy) => {
              conn.send(FrameType.WAL_RANGE_RESPONSE, encodeWalRangeResponse({ requestId: req.requestId, copies: [copy] }));
            });
            return;
          }
          case FrameType.WAL_RANGE_RESPONSE:
            this.#ranges.settleWith(decodeWalRangeResponse(f.payload));
            return;
          case FrameType.FORWARD_RESULT: {
            const r = decodeForwardResult(f.payload);
            const pending = this.#forwards.get(r.requestId);
            if (!pending) throw protocolError(`FORWARD_RESULT for unknown request ${r.requestId}`);
            this.#forwards.delete(r.requestId);
            pending.resolve(r);
            return;
          }
          default:
            throw protocolError(`unexpected ${frameTypeName(f.type)} frame from the primary`);
        }
    }
  }

  #heard(primarySeq: bigint): void {
    if (primarySeq > this.#primaryLastSeq) this.#primaryLastSeq = primarySeq;
    if (this.#primaryLastSeq > this.#store.lastSeq && this.#behindSince === null) this.#behindSince = performance.now();
  }

  #appliedNow(): void {
    const applied = this.#store.lastSeq;
    if (applied >= this.#primaryLastSeq) {
      this.#behindSince = null;
      this.#state = 'streaming';
      if (this.#healDue && this.#phase === 'streaming') {
        this.#healDue = false;
        if (!this.#closed) this.#heal.start();
      }
    }
    const ready = this.#waiters.filter((w) => w.seq <= applied);
    if (ready.length > 0) {
      this.#waiters = this.#waiters.filter((w) => w.seq > applied);
      for (const w of ready) w.resolve();
    }
  }

  /** One ACK per turn of the event loop, however many frames arrived or chunks completed in
   *  it (the completions of one replica fsync come together): it reports the seqs as they are
   *  when it is sent. */
  #ackSoon(conn: Connection): void {
    if (this.#ackDue === conn) return;
    this.#ackDue = conn;
    setImmediate(() => {
      if (this.#ackDue === conn) this.#ackDue = null;
      const applied = this.#store.lastSeq;
      conn.send(FrameType.ACK, encodeAck({ receivedSeq: this.#received, durableSeq: applied, appliedSeq: applied }));
    });
  }

  #dropIncoming(): void {
    const inc = this.#incoming;
    if (!inc) return;
    this.#incoming = null;
    try {
      closeSync(inc.fd);
    } catch {
      // already closed
    }
    void rm(inc.tmp, { recursive: true, force: true });
  }

  /**
   * Replace this replica's store with a verified snapshot: import checks the archive's SHA-256
   * and every file's xxh3, restore builds a store from it beside ours, and then a rename
   * swaps it in. A crash before the rename leaves the old store; after, the new one.
   */
  async #install(inc: IncomingSnapshot): Promise<void> {
    const dir = this.#store.dir;
    const old = join(inc.tmp, 'old');
    this.#state = 'snapshotting';
    this.#swapping = true;
    try {
      await this.#store.close();
      const imported = join(inc.tmp, 'import');
      const target = join(inc.tmp, 'store');
      await importSnapshot({ file: inc.file, dir: imported });
      await restore({ source: imported, target });
      await rename(dir, old);
      await rename(target, dir);
      fsyncDir(dirname(dir));
      this.#snapshotsInstalled++;
    } catch (e) {
      const err = e instanceof CairnError ? e : new CairnError('CAIRN_IO', String(e));
      this.#lastError = `${err.code}: installing the snapshot at seq ${inc.seq} failed: ${err.message}`;
      // Put the old store back if the swap stopped halfway.
      if (!existsSync(dir) && existsSync(old)) await rename(old, dir);
    } finally {
      this.#swapping = false;
      this.#attach(await open(dir, { nodeId: this.#config.nodeId, replica: true, ...(this.#config.sync ? { sync: this.#config.sync } : {}) }));
      await rm(inc.tmp, { recursive: true, force: true });
    }
    this.#received = this.#store.lastSeq;
    this.#appliedNow();
  }

  #disconnected(conn: Connection, e: CairnError | null): void {
    if (this.#conn !== conn) return;
    this.#conn = null;
    this.#dropIncoming();
    if (e) this.#lastError = `${e.code}: ${e.message}`;
    for (const [, p] of this.#forwards) {
      p.reject(
        new CairnError(
          'CAIRN_DISCONNECTED',
          `connection to primary ${this.#config.primary} was lost before it answered a forwarded write; the write may still commit`,
        ),
      );
    }
    this.#forwards.clear();
    this.#repairs.abandon(() => [unavailable(this.#config.primary, 'connection to the primary was lost before it answered')]);
    this.#ranges.abandon(() => [rangeUnavailable(this.#config.primary, 'connection to the primary was lost before it answered')]);
    if (this.#closed || this.#paused) return;
    this.#state = 'disconnected';
    const delay = this.#backoff;
    this.#backoff = Math.min(this.#backoff * 2, MAX_BACKOFF_MS);
    // Reconnect only after every submitted record settled, so the seq sent in AUTH is final.
    void this.#applying.then(() => {
      if (this.#closed || this.#paused) return;
      this.#retry = setTimeout(() => this.#connect(), delay);
    });
  }

  #tick(): void {
    const conn = this.#conn;
    if (!conn || this.#phase !== 'streaming') {
      if (conn && performance.now() - this.#lastContactMono > 3 * this.#config.heartbeatMs) {
        conn.fail(new CairnError('CAIRN_DISCONNECTED', `primary ${this.#config.primary} did not complete the handshake in time`));
      }
      return;
    }
    if (performance.now() - this.#lastContactMono > 3 * this.#config.heartbeatMs) {
      conn.fail(
        new CairnError('CAIRN_DISCONNECTED', `primary ${this.#config.primary} sent nothing for ${Math.round(performance.now() - this.#lastContactMono)} ms`),
      );
      return;
    }
    conn.send(FrameType.HEARTBEAT, encodeHeartbeat({ lastSeq: this.#store.lastSeq, wallMs: BigInt(Date.now()) }));
  }

  async #write(payload: Buffer, concern: WriteConcern): Promise<bigint> {
    if (!this.#config.forward) {
      throw new CairnError('CAIRN_NOT_PRIMARY', `node '${this.#config.nodeId}' is a replica; write to the primary at ${this.#config.primary}`);
    }
    const conn = this.#conn;
    if (!conn || this.#phase !== 'streaming') {
      throw new CairnError(
        'CAIRN_NOT_PRIMARY',
        `node '${this.#config.nodeId}' is a replica and is not connected to its primary at ${this.#config.primary}, so it cannot forward this write`,
      );
    }
    const requestId = this.#nextRequest;
    this.#nextRequest = (this.#nextRequest % 0xffff_ffff) + 1;
    const result = await new Promise<ForwardResult>((resolve, reject) => {
      this.#forwards.set(requestId, { resolve, reject });
      conn.send(FrameType.FORWARD, encodeForward({ requestId, w: concern.w ?? 'default', timeoutMs: concern.timeoutMs ?? 0, batch: payload }));
    });
    if (!result.ok) {
      const e = new CairnError(result.code, `primary ${this.#config.primary} refused the forwarded write: ${result.message}`);
      if (result.seq > 0n) Object.assign(e, { seq: result.seq });
      throw e;
    }
    await this.waitFor(result.seq);
    return result.seq;
  }

  async #shutdown(): Promise<void> {
    this.#closed = true;
    this.#state = 'closed';
    if (this.#timer) clearInterval(this.#timer);
    if (this.#retry) clearTimeout(this.#retry);
    this.#conn?.close();
    await this.#applying;
    await this.#heal.stop();
    for (const w of this.#waiters.splice(0)) w.reject(new CairnError('CAIRN_CLOSED', `replica '${this.#config.nodeId}' closed before it applied seq ${w.seq}`));
  }
}

/** durability: a rename is durable once its directory is fsynced. */
function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * A snapshot install killed midway leaves `.<name>.snapshot-*` beside the store. If it died
 * between its two renames (the store directory is missing), the old store goes back in place;
 * the primary sends a snapshot again if one is still needed. Then the leftovers are removed.
 */
async function finishInterruptedInstall(dir: string): Promise<void> {
  const parent = dirname(dir);
  const prefix = `.${basename(dir)}.snapshot-`;
  let names: string[];
  try {
    names = (await readdir(parent)).filter((n) => n.startsWith(prefix));
  } catch {
    return;
  }
  for (const n of names) {
    const old = join(parent, n, 'old');
    if (!existsSync(dir) && existsSync(old)) {
      await rename(old, dir);
      fsyncDir(parent);
    }
    await rm(join(parent, n), { recursive: true, force: true });
  }
}
