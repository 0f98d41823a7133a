/**
 * The primary's side of one replica connection: the handshake (HELLO, CHALLENGE, AUTH, READY),
 * then a loop that streams `readWal` chunks from the replica's last durable seq on (the WAL
 * archive and the live tail are one log to `readWal`, so there is no gap at the switch), while
 * ACK frames report what the replica received, made durable and applied.
 *
 * Back-pressure: at most `MAX_IN_FLIGHT_BYTES` of WAL beyond the replica's acknowledged
 * received seq, and never more while the socket refuses writes; so a slow replica costs the
 * primary a bounded amount of memory.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, open as openFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { exportSnapshot } from '../archive.js';
import { CairnError, native as call, nativeSync } from '../errors.js';
import type { NativeStore } from '../native.js';
import { listSnapshots } from '../restore.js';
import { newNonce, proof, verifyProof } from './auth.js';
import type { Connection } from './connection.js';
import { type Frame, FrameType, frameTypeName, protocolError } from './frame.js';
import {
  type Ack,
  decodeAck,
  decodeAuth,
  decodeForward,
  decodeHeartbeat,
  decodeHello,
  decodeRepairRequest,
  decodeRepairResponse,
  decodeWalRangeRequest,
  decodeWalRangeResponse,
  encodeChallenge,
  encodeForwardResult,
  encodeHeartbeat,
  encodeReady,
  encodeRepairRequest,
  encodeRepairResponse,
  encodeSnapshotBegin,
  encodeSnapshotData,
  encodeSnapshotEnd,
  encodeWal,
  encodeWalRangeRequest,
  encodeWalRangeResponse,
  type Forward,
  type RecordCopyMessage,
  type RepairRequest,
  rangeUnavailable,
  type WalRangeCopy,
  type WalRangeRequest,
} from './messages.js';
import { PendingRequests } from './pending.js';
import { REPAIR_TIMEOUT_MS, unavailable } from './record-repair.js';
import { PIECE_TIMEOUT_MS } from './segment-repair.js';
import { Signal } from './signal.js';

/** WAL read per frame (a record larger than this travels alone). */
export const CHUNK_BYTES = 1 << 20;
/** A replica at most this many records behind reads on the event loop (`readWalSync`). */
const TAIL_RECORDS = 4096n;
/** WAL sent and not yet acknowledged as received, per replica. */
export const MAX_IN_FLIGHT_BYTES = 16 << 20;

/** What a session needs from its server. */
export interface SessionHost {
  readonly nodeId: string;
  readonly token: Buffer;
  readonly native: NativeStore;
  readonly dir: string;
  readonly heartbeatMs: number;
  /** A replica further behind than this many records catches up through a snapshot (null: only when the WAL it needs was pruned). */
  readonly snapshotLagRecords: number | null;
  /** Throws a CairnError if `nodeId` may not replicate from here. */
  admit(nodeId: string): void;
  started(s: Session): void;
  acked(s: Session, ack: Ack): void;
  contact(s: Session): void;
  ended(s: Session, e: CairnError | null): void;
  forward(f: Forward): Promise<bigint>;
  /** The copies a replica's repair request gets: this node's, and with `relay` the other replicas'. */
  repairRequest(s: Session, r: RepairRequest): Promise<RecordCopyMessage[]>;
  /** The copies of a WAL range a replica's request gets: this node's, and with `relay` the other replicas'. */
  walRangeRequest(s: Session, r: WalRangeRequest): Promise<WalRangeCopy[]>;
  /** Throws when a frame's epoch is newer than this primary's (failover fences it). */
  peerEpoch(s: Session, epoch: bigint): void;
  /** Woken at each commit. */
  readonly commits: Signal;
}

type Phase = 'hello' | 'auth' | 'streaming' | 'snapshotting';

export class Session {
  readonly conn: Connection;
  readonly #host: SessionHost;
  #phase: Phase = 'hello';
  nodeId = '';
  #handshake: { replicaNonce: Buffer; primaryNonce: Buffer; replicaId: string; primaryId: string } | null = null;
  #acked: bigint = 0n;
  /** Sent chunks not yet acknowledged as received: [lastSeq, bytes]. */
  #inFlight: Array<[bigint, number]> = [];
  #inFlightBytes = 0;
  readonly #acks = new Signal();
  readonly #repairs = new PendingRequests<RecordCopyMessage[]>();
  readonly #ranges = new PendingRequests<WalRangeCopy[]>();
  nextSeq = 1n;
  /** When the stream last sent a WAL or HEARTBEAT frame (monotonic). */
  #lastSentMono = performance.now();

  constructor(conn: Connection, host: SessionHost) {
    this.conn = conn;
    this.#host = host;
    conn.onFrame((f) => this.#frame(f));
    // An unauthenticated peer gets three heartbeat periods to finish the handshake.
    const handshakeTimer = setTimeout(() => {
      if (this.#phase !== 'streaming') conn.fail(protocolError(`handshake not completed within ${3 * host.heartbeatMs} ms`));
    }, 3 * host.heartbeatMs);
    handshakeTimer.unref();
    conn.onClose((e) => {
      clearTimeout(handshakeTimer);
      this.#acks.notify();
      const why = `connection closed: ${e?.message ?? 'closed by this node'}`;
      this.#repairs.abandon(() => [unavailable(this.nodeId, why)]);
      this.#ranges.abandon(() => [rangeUnavailable(this.nodeId, why)]);
      host.ended(this, e);
    });
  }

  #frame(f: Frame): void {
    this.#host.peerEpoch(this, f.epoch);
    this.#host.contact(this);
    switch (this.#phase) {
      case 'hello': {
        if (f.type !== FrameType.HELLO) throw protocolError(`expected HELLO, got ${frameTypeName(f.type)}`);
        const hello = decodeHello(f.payload);
        this.#host.admit(hello.nodeId);
        this.nodeId = hello.nodeId;
        this.#handshake = { replicaNonce: hello.nonce, primaryNonce: newNonce(), replicaId: hello.nodeId, primaryId: this.#host.nodeId };
        const h = this.#handshake;
        this.conn.send(
          FrameType.CHALLENGE,
          encodeChallenge({ nodeId: this.#host.nodeId, nonce: h.primaryNonce, proof: proof(this.#host.token, 'primary', h) }),
        );
        this.#phase = 'auth';
        return;
      }
      case 'auth': {
        if (f.type !== FrameType.AUTH) throw protocolError(`expected AUTH, got ${frameTypeName(f.type)}`);
        const auth = decodeAuth(f.payload);
        if (!this.#handshake || !verifyProof(this.#host.token, 'replica', this.#handshake, auth.proof)) {
          throw protocolError(`replica '${this.nodeId}' failed authentication: its proof does not match the shared token`);
        }
        const last = this.#host.native.lastSeq;
        if (auth.lastSeq > last) {
          throw new CairnError(
            'CAIRN_SEQUENCE_GAP',
            `replica '${this.nodeId}' claims seq ${auth.lastSeq} but this primary's last seq is ${last}: a replica ahead of its primary has diverged and must be reseeded`,
          );
        }
        this.#phase = 'streaming';
        this.#acked = auth.lastSeq;
        this.nextSeq = auth.lastSeq + 1n;
        this.#host.acked(this, { receivedSeq: auth.lastSeq, durableSeq: auth.lastSeq, appliedSeq: auth.lastSeq });
        this.conn.send(FrameType.READY, encodeReady({ primaryLastSeq: last }));
        this.#host.started(this);
        const lag = this.#host.snapshotLagRecords;
        if (lag !== null && last - auth.lastSeq > BigInt(lag)) void this.#snapshotThenWait();
        else void this.#stream();
        return;
      }
      case 'snapshotting':
      case 'streaming':
        switch (f.type) {
          case FrameType.ACK: {
            const ack = decodeAck(f.payload);
            if (ack.receivedSeq > this.nextSeq - 1n || ack.durableSeq > ack.receivedSeq || ack.appliedSeq > ack.receivedSeq) {
              throw protocolError(`replica '${this.nodeId}' acknowledged seq ${ack.receivedSeq} that was never sent (sent up to ${this.nextSeq - 1n})`);
            }
            if (ack.receivedSeq > this.#acked) this.#acked = ack.receivedSeq;
            while (this.#inFlight.length > 0 && (this.#inFlight[0] as [bigint, number])[0] <= this.#acked) {
              this.#inFlightBytes -= (this.#inFlight.shift() as [bigint, number])[1];
            }
            this.#acks.notify();
            this.#host.acked(this, ack);
            return;
          }
          case FrameType.HEARTBEAT:
            decodeHeartbeat(f.payload);
            return;
          case FrameType.FORWARD: {
            const fw = decodeForward(f.payload);
            this.#host.forward(fw).then(
              (seq) => this.conn.send(FrameType.FORWARD_RESULT, encodeForwardResult({ requestId: fw.requestId, ok: true, seq })),
              (e: unknown) => {
                const err = e instanceof CairnError ? e : new CairnError('CAIRN_INTERNAL', String(e));
                const seq = (err as { seq?: unknown }).seq;
                this.conn.send(
                  FrameType.FORWARD_RESULT,
                  encodeForwardResult({ requestId: fw.requestId, ok: false, seq: typeof seq === 'bigint' ? seq : 0n, code: err.code, message: err.message }),
                );
              },
            );
            return;
          }
          case FrameType.REPAIR_REQUEST:
            this.#answer(decodeRepairRequest(f.payload), (r) => this.#host.repairRequest(this, r), FrameType.REPAIR_RESPONSE, encodeRepairResponse);
            return;
          case FrameType.WAL_RANGE_REQUEST:
            this.#answer(decodeWalRangeRequest(f.payload), (r) => this.#host.walRangeRequest(this, r), FrameType.WAL_RANGE_RESPONSE, encodeWalRangeResponse);
            return;
          case FrameType.REPAIR_RESPONSE:
            this.#repairs.settleWith(decodeRepairResponse(f.payload));
            return;
          case FrameType.WAL_RANGE_RESPONSE:
            this.#ranges.settleWith(decodeWalRangeResponse(f.payload));
            return;
          default:
            throw protocolError(`unexpected ${frameTypeName(f.type)} frame from replica '${this.nodeId}'`);
        }
    }
  }

  /** Answer a request once its copies resolve (never rejected: an unreachable node is a copy that says so). */
  #answer<R extends { requestId: number }, C>(
    req: R,
    copies: (req: R) => Promise<C>,
    type: FrameType,
    encode: (m: { requestId: number; copies: C }) => Buffer,
  ): void {
    void copies(req).then((c) => this.conn.send(type, encode({ requestId: req.requestId, copies: c })));
  }

  async #stream(): Promise<void> {
    const native = this.#host.native;
    try {
      while (!this.conn.closed) {
        if (this.#inFlightBytes >= MAX_IN_FLIGHT_BYTES) {
          await this.#acks.wait(this.#host.heartbeatMs);
          continue;
        }
        // Nothing new: wait for a commit without a read. A HEARTBEAT goes out only when half a
        // period passed without a frame (WAL frames are contact enough), so a busy stream costs
        // one frame and one ACK per shipment, not three. (The server's liveness timer also
        // wakes this wait once a period, so the decision is by time, not by why it woke.)
        if (native.lastSeq < this.nextSeq) {
          await this.#host.commits.wait(this.#host.heartbeatMs);
          if (!this.conn.closed && performance.now() - this.#lastSentMono >= this.#host.heartbeatMs / 2) this.#heartbeat();
          continue;
        }
        // Tailing: the records were just written and are in the page cache, so they are read
        // here rather than through the thread pool (one hand-off less per shipment).
        const tailing = native.lastSeq - this.nextSeq < TAIL_RECORDS;
        const chunk =
          (tailing && nativeSync(() => native.readWalSync(this.nextSeq, CHUNK_BYTES))) || (await call(() => native.readWal(this.nextSeq, CHUNK_BYTES)));
        if (this.conn.closed) return;
        if (chunk.count === 0n) {
          await this.#host.commits.wait(this.#host.heartbeatMs);
          continue;
        }
        const sent = this.conn.send(FrameType.WAL, encodeWal({ firstSeq: chunk.firstSeq, lastSeq: chunk.lastSeq, records: chunk.bytes }));
        this.#lastSentMono = performance.now();
        this.nextSeq = chunk.lastSeq + 1n;
        this.#inFlight.push([chunk.lastSeq, chunk.bytes.length]);
        this.#inFlightBytes += chunk.bytes.length;
        if (!sent) await this.conn.drained();
      }
    } catch (e) {
      const err = e instanceof CairnError ? e : new CairnError('CAIRN_INTERNAL', String(e));
      if (err.code === 'CAIRN_WAL_PRUNED') {
        try {
          await this.#sendSnapshot();
          return;
        } catch (e2) {
          const why = e2 instanceof Error ? e2.message : String(e2);
          this.conn.fail(
            new CairnError(
              'CAIRN_WAL_PRUNED',
              `replica '${this.nodeId}' needs seq ${this.nextSeq}, which WAL archive retention removed (oldest retained: ${safeOldest(native)}), and sending a snapshot failed: ${why}`,
            ),
          );
          return;
        }
      }
      this.conn.fail(new CairnError(err.code, `streaming to replica '${this.nodeId}' stopped at seq ${this.nextSeq}: ${err.message}`));
    }
  }

  async #snapshotThenWait(): Promise<void> {
    try {
      await this.#sendSnapshot();
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      this.conn.fail(new CairnError(e instanceof CairnError ? e.code : 'CAIRN_INTERNAL', `sending a snapshot to replica '${this.nodeId}' failed: ${why}`));
    }
  }

  /**
   * Catch-up through a snapshot: take one (or use the newest when nothing was written since),
   * export it as a snapshot archive (every file with its xxh3, the whole with a SHA-256), send
   * it in SNAPSHOT_DATA frames under the same back-pressure as WAL, then wait: the replica
   * verifies and installs it, and reconnects announcing the snapshot's seq.
   */
  async #sendSnapshot(): Promise<void> {
    this.#phase = 'snapshotting';
    let info: { id: string; seq: bigint };
    try {
      info = await call(() => this.#host.native.snapshot(false));
    } catch (e) {
      if (!(e instanceof CairnError && e.code === 'CAIRN_ALREADY_EXISTS')) throw e;
      const newest = (await listSnapshots(this.#host.dir)).at(-1);
      if (!newest) throw e;
      info = newest;
    }
    const tmp = await mkdtemp(join(tmpdir(), 'cairn-ship-'));
    try {
      const file = join(tmp, 'snapshot.cairnarc');
      await exportSnapshot({ dir: this.#host.dir, id: info.id, file, level: 1 });
      const fh = await openFile(file, 'r');
      try {
        const { size } = await fh.stat();
        this.conn.send(FrameType.SNAPSHOT_BEGIN, encodeSnapshotBegin({ seq: info.seq, bytes: BigInt(size), id: info.id }));
        const hash = createHash('sha256');
        const buf = Buffer.allocUnsafe(CHUNK_BYTES);
        for (let offset = 0; offset < size && !this.conn.closed; ) {
          const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK_BYTES, size - offset), offset);
          if (bytesRead === 0) throw new CairnError('CAIRN_IO', `snapshot archive ${file} ended early at ${offset} of ${size} bytes`);
          const piece = Buffer.from(buf.subarray(0, bytesRead));
          hash.update(piece);
          if (!this.conn.send(FrameType.SNAPSHOT_DATA, encodeSnapshotData({ offset: BigInt(offset), bytes: piece }))) await this.conn.drained();
          offset += bytesRead;
        }
        this.conn.send(FrameType.SNAPSHOT_END, encodeSnapshotEnd({ sha256: hash.digest() }));
      } finally {
        await fh.close();
      }
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }

  /** This replica's copy of a record (REPAIR_REQUEST without relay). */
  askCopy(collection: string, id: string, label: bigint): Promise<RecordCopyMessage[]> {
    if (this.conn.closed) return Promise.resolve([unavailable(this.nodeId, 'not connected')]);
    const { requestId, answer } = this.#repairs.open(REPAIR_TIMEOUT_MS, () => [unavailable(this.nodeId, `no answer within ${REPAIR_TIMEOUT_MS} ms`)]);
    this.conn.send(FrameType.REPAIR_REQUEST, encodeRepairRequest({ requestId, relay: false, label, collection, id }));
    return answer;
  }

  /** This replica's copy of WAL records `firstSeq..` (WAL_RANGE_REQUEST without relay). */
  askWalRange(firstSeq: bigint, throughSeq: bigint, maxBytes: number): Promise<WalRangeCopy[]> {
    if (this.conn.closed) return Promise.resolve([rangeUnavailable(this.nodeId, 'not connected')]);
    const { requestId, answer } = this.#ranges.open(PIECE_TIMEOUT_MS, () => [rangeUnavailable(this.nodeId, `no answer within ${PIECE_TIMEOUT_MS} ms`)]);
    this.conn.send(FrameType.WAL_RANGE_REQUEST, encodeWalRangeRequest({ requestId, relay: false, firstSeq, throughSeq, maxBytes }));
    return answer;
  }

  #heartbeat(): void {
    this.#lastSentMono = performance.now();
    this.conn.send(FrameType.HEARTBEAT, encodeHeartbeat({ lastSeq: this.#host.native.lastSeq, wallMs: BigInt(Date.now()) }));
  }

  /** Authenticated and streaming (or sending a snapshot). */
  get streaming(): boolean {
    return this.#phase === 'streaming' || this.#phase === 'snapshotting';
  }

  get snapshotting(): boolean {
    return this.#phase === 'snapshotting';
  }

  get inFlightBytes(): number {
    return this.#inFlightBytes;
  }
}

function safeOldest(native: NativeStore): string {
  try {
    return String(native.oldestRetainedSeq());
  } catch {
    return 'unknown';
  }
}
