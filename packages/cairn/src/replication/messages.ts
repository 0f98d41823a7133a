/** Payloads of each frame type (docs/format.md, "Replication protocol"), encoded and decoded. */
import { type CairnErrorCode, isCairnErrorCode } from '../errors.js';
import { NONCE_LEN, PROOF_LEN } from './auth.js';
import { PayloadReader, PayloadWriter, protocolError } from './frame.js';

export interface Hello {
  nodeId: string;
  nonce: Buffer;
}
export const encodeHello = (m: Hello) => new PayloadWriter().str16(m.nodeId).bytes(m.nonce).done();
export function decodeHello(b: Buffer): Hello {
  const r = new PayloadReader(b, 'HELLO');
  const m = { nodeId: r.str16(), nonce: r.fixed(NONCE_LEN) };
  r.end();
  return m;
}

export interface Challenge {
  nodeId: string;
  nonce: Buffer;
  proof: Buffer;
}
export const encodeChallenge = (m: Challenge) => new PayloadWriter().str16(m.nodeId).bytes(m.nonce).bytes(m.proof).done();
export function decodeChallenge(b: Buffer): Challenge {
  const r = new PayloadReader(b, 'CHALLENGE');
  const m = { nodeId: r.str16(), nonce: r.fixed(NONCE_LEN), proof: r.fixed(PROOF_LEN) };
  r.end();
  return m;
}

export interface Auth {
  proof: Buffer;
  /** The replica's last durable sequence number: streaming resumes after it. */
  lastSeq: bigint;
}
export const encodeAuth = (m: Auth) => new PayloadWriter().bytes(m.proof).u64(m.lastSeq).done();
export function decodeAuth(b: Buffer): Auth {
  const r = new PayloadReader(b, 'AUTH');
  const m = { proof: r.fixed(PROOF_LEN), lastSeq: r.u64() };
  r.end();
  return m;
}

export interface Ready {
  /** The primary's last sequence number when streaming began. */
  primaryLastSeq: bigint;
}
export const encodeReady = (m: Ready) => new PayloadWriter().u64(m.primaryLastSeq).done();
export function decodeReady(b: Buffer): Ready {
  const r = new PayloadReader(b, 'READY');
  const m = { primaryLastSeq: r.u64() };
  r.end();
  return m;
}

export interface WalMessage {
  firstSeq: bigint;
  lastSeq: bigint;
  /** Whole framed WAL records, as `readWal` returned them; only the engine reads them. */
  records: Buffer;
}
export const encodeWal = (m: WalMessage) => new PayloadWriter().u64(m.firstSeq).u64(m.lastSeq).bytes(m.records).done();
export function decodeWal(b: Buffer): WalMessage {
  const r = new PayloadReader(b, 'WAL');
  const m = { firstSeq: r.u64(), lastSeq: r.u64(), records: r.rest() };
  if (m.lastSeq < m.firstSeq || m.records.length === 0) throw protocolError(`WAL frame with an empty or inverted range ${m.firstSeq}..${m.lastSeq}`);
  return m;
}

export interface Ack {
  receivedSeq: bigint;
  durableSeq: bigint;
  appliedSeq: bigint;
}
export const encodeAck = (m: Ack) => new PayloadWriter().u64(m.receivedSeq).u64(m.durableSeq).u64(m.appliedSeq).done();
export function decodeAck(b: Buffer): Ack {
  const r = new PayloadReader(b, 'ACK');
  const m = { receivedSeq: r.u64(), durableSeq: r.u64(), appliedSeq: r.u64() };
  r.end();
  return m;
}

export interface Heartbeat {
  lastSeq: bigint;
  /** Sender's wall clock, ms since the Unix epoch: data only, never used for timing. */
  wallMs: bigint;
}
export const encodeHeartbeat = (m: Heartbeat) => new PayloadWriter().u64(m.lastSeq).u64(m.wallMs).done();
export function decodeHeartbeat(b: Buffer): Heartbeat {
  const r = new PayloadReader(b, 'HEARTBEAT');
  const m = { lastSeq: r.u64(), wallMs: r.u64() };
  r.end();
  return m;
}

export type WireConcern = 'default' | 'local' | 'majority' | 'all';
const CONCERNS: readonly WireConcern[] = ['default', 'local', 'majority', 'all'];

export interface Forward {
  requestId: number;
  w: WireConcern;
  /** 0: the primary's default. */
  timeoutMs: number;
  /** An encoded batch payload (docs/format.md, "Batch payload"). */
  batch: Buffer;
}
export const encodeForward = (m: Forward) => new PayloadWriter().u32(m.requestId).u8(CONCERNS.indexOf(m.w)).u32(m.timeoutMs).bytes(m.batch).done();
export function decodeForward(b: Buffer): Forward {
  const r = new PayloadReader(b, 'FORWARD');
  const requestId = r.u32();
  const w = CONCERNS[r.u8()];
  if (w === undefined) throw protocolError('FORWARD frame with an unknown write concern');
  return { requestId, w, timeoutMs: r.u32(), batch: r.rest() };
}

export type ForwardResult = { requestId: number; ok: true; seq: bigint } | { requestId: number; ok: false; seq: bigint; code: CairnErrorCode; message: string };
export function encodeForwardResult(m: ForwardResult): Buffer {
  const w = new PayloadWriter()
    .u32(m.requestId)
    .u8(m.ok ? 0 : 1)
    .u64(m.seq);
  if (!m.ok) w.str16(m.code).str32(m.message);
  return w.done();
}
export function decodeForwardResult(b: Buffer): ForwardResult {
  const r = new PayloadReader(b, 'FORWARD_RESULT');
  const requestId = r.u32();
  const failed = r.u8();
  const seq = r.u64();
  if (failed === 0) {
    r.end();
    return { requestId, ok: true, seq };
  }
  const code = r.str16();
  const message = r.str32();
  r.end();
  return { requestId, ok: false, seq, code: isCairnErrorCode(code) ? code : 'CAIRN_INTERNAL', message };
}

export interface ErrorMessage {
  code: CairnErrorCode;
  message: string;
}
export const encodeError = (m: ErrorMessage) => new PayloadWriter().str16(m.code).str32(m.message).done();
export function decodeError(b: Buffer): ErrorMessage {
  const r = new PayloadReader(b, 'ERROR');
  const code = r.str16();
  const message = r.str32();
  return { code: isCairnErrorCode(code) ? code : 'CAIRN_REPLICATION_PROTOCOL', message };
}

export interface SnapshotBegin {
  /** The snapshot's seq: streaming resumes after it once it is installed. */
  seq: bigint;
  /** Length of the snapshot archive (docs/format.md, "Snapshot archive") that follows. */
  bytes: bigint;
  id: string;
}
export const encodeSnapshotBegin = (m: SnapshotBegin) => new PayloadWriter().u64(m.seq).u64(m.bytes).str16(m.id).done();
export function decodeSnapshotBegin(b: Buffer): SnapshotBegin {
  const r = new PayloadReader(b, 'SNAPSHOT_BEGIN');
  const m = { seq: r.u64(), bytes: r.u64(), id: r.str16() };
  r.end();
  return m;
}

export interface SnapshotData {
  offset: bigint;
  bytes: Buffer;
}
export const encodeSnapshotData = (m: SnapshotData) => new PayloadWriter().u64(m.offset).bytes(m.bytes).done();
export function decodeSnapshotData(b: Buffer): SnapshotData {
  const r = new PayloadReader(b, 'SNAPSHOT_DATA');
  return { offset: r.u64(), bytes: r.rest() };
}

export interface SnapshotEnd {
  /** SHA-256 of the whole archive. */
  sha256: Buffer;
}
export const encodeSnapshotEnd = (m: SnapshotEnd) => new PayloadWriter().bytes(m.sha256).done();
export function decodeSnapshotEnd(b: Buffer): SnapshotEnd {
  const r = new PayloadReader(b, 'SNAPSHOT_END');
  const m = { sha256: r.fixed(32) };
  r.end();
  return m;
}

/** Ask for the peers' copies of one record (either direction; docs/format.md, "REPAIR_REQUEST"). */
/** What every request to the other nodes starts with. */
export interface PeerRequest {
  requestId: number;
  /** 1: the primary also asks its other replicas and answers with every copy. */
  relay: boolean;
}

export interface RepairRequest extends PeerRequest {
  /** The version the asker holds damaged (`seq << 24 | op index`); 0 when it holds none. */
  label: bigint;
  collection: string;
  id: string;
}
export const encodeRepairRequest = (m: RepairRequest) => requestHead(m).u64(m.label).str16(m.collection).str16(m.id).done();
export function decodeRepairRequest(b: Buffer): RepairRequest {
  const r = new PayloadReader(b, 'REPAIR_REQUEST');
  const m = { ...readRequestHead(r), label: r.u64(), collection: r.str16(), id: r.str16() };
  r.end();
  return m;
}

/** The request frames' common start: u32 request id, u8 relay (0 or 1). */
const requestHead = (m: PeerRequest) => new PayloadWriter().u32(m.requestId).u8(m.relay ? 1 : 0);
function readRequestHead(r: PayloadReader): PeerRequest {
  const requestId = r.u32();
  const relay = r.u8();
  if (relay > 1) throw protocolError(`${r.what} relay flag ${relay} is not 0 or 1`);
  return { requestId, relay: relay === 1 };
}

export type CopyState = 'found' | 'absent' | 'damaged' | 'unavailable';
const COPY_STATES: readonly CopyState[] = ['found', 'absent', 'damaged', 'unavailable'];

/** One node's answer for one record. `record` is the record copy (docs/format.md, "Record copy"),
 *  present only when `state` is 'found'; `digest` is its xxh3-64 (0 otherwise). */
export interface RecordCopyMessage {
  nodeId: string;
  state: CopyState;
  label: bigint;
  digest: bigint;
  record: Buffer;
  detail: string;
}

export interface RepairResponse {
  requestId: number;
  copies: RecordCopyMessage[];
}
export const encodeRepairResponse = (m: RepairResponse): Buffer =>
  encodeAnswer(
    m.requestId,
    m.copies.map(({ label, record, ...c }) => ({ ...c, tag: label, bytes: record })),
  );
export function decodeRepairResponse(b: Buffer): RepairResponse {
  const a = decodeAnswer(b, 'REPAIR_RESPONSE');
  return { requestId: a.requestId, copies: a.copies.map(({ tag, bytes, ...c }) => ({ ...c, label: tag, record: bytes })) };
}

/** One copy in an answer frame: the record copy's label or the WAL range's last seq is its `tag`. */
interface WireCopy {
  nodeId: string;
  state: CopyState;
  tag: bigint;
  digest: bigint;
  bytes: Buffer;
  detail: string;
}

/** The answer frames' layout: u32 request id, u32 copy count (at most 255), then each copy:
 *  str16 node id, u8 state, u64 tag, u64 xxh3-64, u32 length then the bytes, str16 detail. */
function encodeAnswer(requestId: number, copies: readonly WireCopy[]): Buffer {
  const w = new PayloadWriter().u32(requestId).u32(copies.length);
  for (const c of copies) w.str16(c.nodeId).u8(COPY_STATES.indexOf(c.state)).u64(c.tag).u64(c.digest).u32(c.bytes.length).bytes(c.bytes).str16(c.detail);
  return w.done();
}
function decodeAnswer(b: Buffer, what: string): { requestId: number; copies: WireCopy[] } {
  const r = new PayloadReader(b, what);
  const requestId = r.u32();
  const n = r.u32();
  if (n > 255) throw protocolError(`${what} with ${n} copies (at most 255 nodes answer)`);
  const copies: WireCopy[] = [];
  for (let i = 0; i < n; i++) {
    const nodeId = r.str16();
    const state = COPY_STATES[r.u8()];
    if (state === undefined) throw protocolError(`${what} with an unknown copy state`);
    const tag = r.u64();
    const digest = r.u64();
    copies.push({ nodeId, state, tag, digest, bytes: Buffer.from(r.fixed(r.u32())), detail: r.str16() });
  }
  r.end();
  return { requestId, copies };
}

/** Ask for the peers' WAL records `firstSeq..=throughSeq` (at most `maxBytes` of them, at least
 *  one), to rebuild a damaged sealed segment (docs/format.md, "WAL_RANGE_REQUEST"). */
export interface WalRangeRequest extends PeerRequest {
  firstSeq: bigint;
  throughSeq: bigint;
  maxBytes: number;
}
export const encodeWalRangeRequest = (m: WalRangeRequest) => requestHead(m).u64(m.firstSeq).u64(m.throughSeq).u32(m.maxBytes).done();
export function decodeWalRangeRequest(b: Buffer): WalRangeRequest {
  const r = new PayloadReader(b, 'WAL_RANGE_REQUEST');
  const m = { ...readRequestHead(r), firstSeq: r.u64(), throughSeq: r.u64(), maxBytes: r.u32() };
  r.end();
  if (m.firstSeq < 1n || m.throughSeq < m.firstSeq) throw protocolError(`WAL_RANGE_REQUEST with an empty or inverted range ${m.firstSeq}..${m.throughSeq}`);
  return m;
}

/** One node's answer for a WAL range: `records` (whole framed records `firstSeq..=lastSeq`,
 *  as its engine read and verified them) and their xxh3-64, present only when 'found'. */
export interface WalRangeCopy {
  nodeId: string;
  state: CopyState;
  lastSeq: bigint;
  digest: bigint;
  records: Buffer;
  detail: string;
}

export function rangeUnavailable(nodeId: string, detail: string): WalRangeCopy {
  return { nodeId, state: 'unavailable', lastSeq: 0n, digest: 0n, records: Buffer.alloc(0), detail };
}

export interface WalRangeResponse {
  requestId: number;
  copies: WalRangeCopy[];
}
export const encodeWalRangeResponse = (m: WalRangeResponse): Buffer =>
  encodeAnswer(
    m.requestId,
    m.copies.map(({ lastSeq, records, ...c }) => ({ ...c, tag: lastSeq, bytes: records })),
  );
export function decodeWalRangeResponse(b: Buffer): WalRangeResponse {
  const a = decodeAnswer(b, 'WAL_RANGE_RESPONSE');
  return { requestId: a.requestId, copies: a.copies.map(({ tag, bytes, ...c }) => ({ ...c, lastSeq: tag, records: bytes })) };
}
