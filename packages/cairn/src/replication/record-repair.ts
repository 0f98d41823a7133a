/**
 * Repair of one record from the other nodes (read-repair on `get`, scrub and open-time repair
 * from replicas). The asking node names the version it holds damaged (its label); each peer
 * answers with its own copy, checked against the row's checksum by its engine before it leaves
 * (`rowCopy`), as a record copy (docs/format.md, "Record copy") with its xxh3. Here each copy
 * is verified again (digest over the bytes received, same version), the verified copies vote
 * (`vote.ts`), and the winner is installed by the engine as a durable local repair
 * (`installRowRepair`: no new seq; the collection's checkpoint files are rewritten). A damaged
 * copy is never served to a peer, so damage does not spread.
 */
import { CairnError, fromNative } from '../errors.js';
import { type NativeStore, nativeBytes } from '../native.js';
import { PayloadReader, PayloadWriter } from './frame.js';
import type { RecordCopyMessage } from './messages.js';
import { describeBallots, majorityVote, tally } from './vote.js';

/** How long one peer gets to answer a repair request. */
export const REPAIR_TIMEOUT_MS = 2000;

/** The other nodes' copies of a record, as one node can reach them. */
export interface RecordPeers {
  fetch(collection: string, id: string, label: bigint): Promise<RecordCopyMessage[]>;
}

export interface RecordRepair {
  collection: string;
  id: string;
  /** 'repaired': installed here; 'moot': written, deleted or repaired meanwhile; 'intact': not damaged here. */
  outcome: 'repaired' | 'moot' | 'intact';
  /** The nodes whose copies formed the majority. */
  from: string[];
  digest?: string;
}

export function encodeRecordCopy(label: bigint, vector: Float32Array, metadata: string): Buffer {
  const v = Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength);
  return new PayloadWriter().u64(label).u32(vector.length).bytes(Buffer.from(v)).str32(metadata).done();
}

export function decodeRecordCopy(b: Buffer): { label: bigint; vector: Float32Array; metadata: string } {
  const r = new PayloadReader(b, 'record copy');
  const label = r.u64();
  const dim = r.u32();
  const raw = Buffer.from(r.fixed(dim * 4));
  const vector = new Float32Array(raw.buffer, raw.byteOffset, dim);
  const metadata = r.str32();
  r.end();
  return { label, vector, metadata };
}

export function digestOf(record: Buffer): bigint {
  return BigInt(`0x${nativeBytes.xxh3Hex(record)}`);
}

const hex = (d: bigint) => d.toString(16).padStart(16, '0');

/** This node's answer to a repair request: its verified copy, or why it has none. */
export function localCopy(native: NativeStore, nodeId: string, collection: string, id: string): RecordCopyMessage {
  const none = { label: 0n, digest: 0n, record: Buffer.alloc(0) };
  try {
    const c = native.rowCopy(collection, id);
    if (c.state === 'found' && c.vector && c.metadata !== undefined && c.metadata !== null) {
      const record = encodeRecordCopy(c.label, c.vector, c.metadata);
      return { nodeId, state: 'found', label: c.label, digest: digestOf(record), record, detail: '' };
    }
    return { nodeId, state: c.state, ...none, label: c.label, detail: c.state === 'damaged' ? 'damaged here too' : '' };
  } catch (e) {
    return { nodeId, state: 'unavailable', ...none, detail: fromNative(e).message.slice(0, 1000) };
  }
}

export function unavailable(nodeId: string, detail: string): RecordCopyMessage {
  return { nodeId, state: 'unavailable', label: 0n, digest: 0n, record: Buffer.alloc(0), detail };
}

/**
 * Repair `collection`/`id` here from `peers`. Resolves 'intact' when this node's copy is not
 * damaged; rejects CAIRN_CORRUPTION when no verified majority exists (naming every node and
 * digest it heard), never installing a guess.
 */
export async function repairRecord(native: NativeStore, selfId: string, peers: RecordPeers, collection: string, id: string): Promise<RecordRepair> {
  let local: ReturnType<NativeStore['rowCopy']>;
  try {
    local = native.rowCopy(collection, id);
  } catch (e) {
    throw fromNative(e);
  }
  if (local.state !== 'damaged') return { collection, id, outcome: 'intact', from: [] };
  const copies = await peers.fetch(collection, id, local.label);
  const {
    ballots,
    byDigest,
    others: heard,
  } = tally(copies, selfId, (c) => {
    const digest = digestOf(c.record);
    let label: bigint;
    try {
      label = decodeRecordCopy(c.record).label;
    } catch {
      return { reason: 'copy does not decode' };
    }
    if (digest !== c.digest) return { reason: `copy failed its checksum in transit (sent ${hex(c.digest)}, bytes give ${hex(digest)})` };
    if (label !== local.label) return { reason: `holds another version (label ${label}, wanted ${local.label})` };
    return { digest: hex(digest) };
  });
  const where = `record '${id}' of collection '${collection}' (label ${local.label}) on node '${selfId}'`;
  if (ballots.length === 0) throw new CairnError('CAIRN_CORRUPTION', `${where} is damaged and no other node has a verified copy of it${heard}`);
  const vote = majorityVote(ballots);
  if (vote.outcome === 'none') {
    throw new CairnError(
      'CAIRN_CORRUPTION',
      `${where} is damaged and the verified copies disagree with no majority (${describeBallots(vote.ballots)}); nothing was installed${heard}`,
    );
  }
  const winner = decodeRecordCopy((byDigest.get(vote.digest) as RecordCopyMessage).record);
  let r: Awaited<ReturnType<NativeStore['installRowRepair']>>;
  try {
    r = await native.installRowRepair(collection, id, winner.label, winner.vector, winner.metadata);
  } catch (e) {
    throw fromNative(e);
  }
  return { collection, id, outcome: r.outcome === 'installed' ? 'repaired' : 'moot', from: vote.holders, digest: vote.digest };
}

/** What one pass over this node's damaged records did. */
export interface HealReport {
  repaired: RecordRepair[];
  failed: Array<{ collection: string; id: string; error: string }>;
}

/** Records looked at in one pass; the rest wait for the next one. */
const MAX_HEAL_PER_PASS = 10_000;

/** Repair every record this node cannot serve (unreadable on disk, or failing its in-memory
 *  checksum) from `peers`, one at a time; a record without a verified majority stays damaged. */
export async function healDamaged(native: NativeStore, selfId: string, peers: RecordPeers): Promise<HealReport> {
  let damaged: Awaited<ReturnType<NativeStore['damagedRows']>>;
  try {
    damaged = await native.damagedRows(MAX_HEAL_PER_PASS);
  } catch (e) {
    throw fromNative(e);
  }
  const report: HealReport = { repaired: [], failed: [] };
  for (const d of damaged) {
    try {
      const r = await repairRecord(native, selfId, peers, d.collection, d.id);
      if (r.outcome === 'repaired') report.repaired.push(r);
    } catch (e) {
      const err = e instanceof CairnError ? e : fromNative(e);
      if (err.code === 'CAIRN_CLOSED') throw err;
      report.failed.push({ collection: d.collection, id: d.id, error: `${err.code}: ${err.message}` });
    }
  }
  return report;
}
