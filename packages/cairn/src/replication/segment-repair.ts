/**
 * Repair of a damaged sealed WAL segment (`wal-archive/` or a sealed one in `wal/`) from the
 * other nodes. Every node writes the primary's records byte for byte, only its segment
 * boundaries are its own; so the asker fetches the records of the segment's range in pieces
 * (WAL_RANGE_REQUEST), each peer reading and verifying them with its engine (`readWal`) and
 * withholding a range it holds damaged. Each piece is verified again here (xxh3 of the bytes
 * received), the verified copies vote (`vote.ts`), and the winning pieces go to the engine,
 * which checks every record (checksum, consecutive, exactly the segment's range), builds the
 * segment, verifies it as a file (and against the size and xxh3 a snapshot recorded, if any)
 * and installs it like a copy: damaged bytes to quarantine, rename, directory fsync.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

import { fromNative } from '../errors.js';
import { LAYOUT } from '../layout.js';
import type { NativeQuarantineNote, NativeStore } from '../native.js';
import type { WalRangeCopy } from './messages.js';
import { digestOf } from './record-repair.js';
import { describeBallots, majorityVote, tally } from './vote.js';

/** Records asked for per request: with the copies a primary relays, far below a frame's limit. */
export const PIECE_BYTES = 4 << 20;
/** How long one peer gets to answer one piece. */
export const PIECE_TIMEOUT_MS = 10_000;

/** The other nodes' copies of a WAL range, as one node can reach them. */
export interface WalRangePeers {
  fetch(firstSeq: bigint, throughSeq: bigint, maxBytes: number): Promise<WalRangeCopy[]>;
}

export type SegmentRepair = { outcome: 'repaired'; from: string[]; quarantined: string | null } | { outcome: 'moot' } | { outcome: 'failed'; reason: string };

const none = { lastSeq: 0n, digest: 0n, records: Buffer.alloc(0) };

/** This node's answer to a WAL range request: records `firstSeq..` verified by its engine, or
 *  why it has none. A range that stops at a damaged record is withheld ('damaged'), never sent. */
export async function localWalRange(native: NativeStore, nodeId: string, firstSeq: bigint, throughSeq: bigint, maxBytes: number): Promise<WalRangeCopy> {
  if (native.lastSeq < throughSeq) return { nodeId, state: 'absent', ...none, detail: `holds records up to ${native.lastSeq} only` };
  try {
    const c = await native.readWal(firstSeq, maxBytes, throughSeq);
    if (c.count === 0n) return { nodeId, state: 'absent', ...none, detail: 'no records in that range' };
    // Short of the range: the budget ended it, or a damaged record did (then that read fails).
    if (c.lastSeq < throughSeq) await native.readWal(c.lastSeq + 1n, 1, c.lastSeq + 1n);
    return { nodeId, state: 'found', lastSeq: c.lastSeq, digest: digestOf(c.bytes), records: c.bytes, detail: '' };
  } catch (e) {
    const err = fromNative(e);
    const state = err.code === 'CAIRN_WAL_PRUNED' ? 'absent' : err.code === 'CAIRN_CORRUPTION' ? 'damaged' : 'unavailable';
    return { nodeId, state, ...none, detail: err.message.slice(0, 1000) };
  }
}

/** The seqs a sealed segment holds: from its name to the one before the next segment's
 *  (`null`: it is the newest, being written). The engine checks this again under its lock. */
export function segmentRange(dir: string, rel: string): { first: bigint; last: bigint } | null {
  const seqOf = (name: string) => {
    const stem = name.slice(0, -LAYOUT.walExt.length);
    return name.endsWith(LAYOUT.walExt) && /^\d{20}$/.test(stem) ? BigInt(stem) : null;
  };
  const first = seqOf(rel.slice(rel.lastIndexOf('/') + 1));
  if (first === null) return null;
  let next: bigint | null = null;
  for (const sub of [LAYOUT.archive, LAYOUT.wal]) {
    let names: string[];
    try {
      names = readdirSync(join(dir, sub));
    } catch {
      continue;
    }
    for (const n of names) {
      const s = seqOf(n);
      if (s !== null && s > first && (next === null || s < next)) next = s;
    }
  }
  return next === null ? null : { first, last: next - 1n };
}

/** A piece counts when its bytes give the digest sent and it continues from `next` within the segment. */
function verifyPiece(c: WalRangeCopy, next: bigint, last: bigint): { digest: string } | { reason: string } {
  const digest = digestOf(c.records);
  if (digest !== c.digest) return { reason: `records ${next}..${c.lastSeq} failed their checksum in transit` };
  if (c.lastSeq < next || c.lastSeq > last || c.records.length === 0) return { reason: `answered with records ..${c.lastSeq}, outside ${next}..${last}` };
  return { digest: digest.toString(16).padStart(16, '0') };
}

/** Rebuild `rel` of the open store from `peers` and install it. Never installs unless a verified
 *  majority supplied every piece and the engine verified the whole. */
export async function repairWalSegment(
  native: NativeStore,
  selfId: string,
  peers: WalRangePeers,
  dir: string,
  rel: string,
  expected: { bytes: number; xxh3: string } | undefined,
  note: NativeQuarantineNote,
): Promise<SegmentRepair> {
  const range = segmentRange(dir, rel);
  if (!range) return { outcome: 'failed', reason: `${rel} is not a sealed WAL segment (the newest one is being written)` };
  const pieces: Buffer[] = [];
  const from = new Set<string>();
  for (let next = range.first; next <= range.last; ) {
    const copies = await peers.fetch(next, range.last, PIECE_BYTES);
    const { ballots, byDigest, others: heard } = tally(copies, selfId, (c) => verifyPiece(c, next, range.last));
    if (ballots.length === 0) return { outcome: 'failed', reason: `no other node has verified records ${next}..${range.last} of ${rel}${heard}` };
    const vote = majorityVote(ballots);
    if (vote.outcome === 'none') {
      return {
        outcome: 'failed',
        reason: `the verified copies of records ${next}.. of ${rel} disagree with no majority (${describeBallots(vote.ballots)})${heard}`,
      };
    }
    const winner = byDigest.get(vote.digest) as WalRangeCopy;
    pieces.push(winner.records);
    for (const h of vote.holders) from.add(h);
    next = winner.lastSeq + 1n;
  }
  try {
    const r = await native.rebuildWalSegment(rel, Buffer.concat(pieces), expected?.bytes ?? null, expected?.xxh3 ?? null, note);
    if (r.outcome === 'moot') return { outcome: 'moot' };
    if (r.outcome === 'rejected') return { outcome: 'failed', reason: r.detail ?? 'the rebuilt segment was rejected' };
    return { outcome: 'repaired', from: [...from].sort(), quarantined: r.quarantined ?? null };
  } catch (e) {
    return { outcome: 'failed', reason: `installing ${rel} rebuilt from the other nodes failed: ${fromNative(e).message}` };
  }
}
