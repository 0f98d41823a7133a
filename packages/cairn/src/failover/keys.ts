/** Where a cluster lives in etcd, and what its keys hold (JSON). */
import type { History } from './history.js';
import { decodeHistory, encodeHistory } from './history.js';

export const leaderKey = (cluster: string) => `/cairn/${cluster}/leader`;
export const memberPrefix = (cluster: string) => `/cairn/${cluster}/members/`;
export const memberKey = (cluster: string, nodeId: string) => `${memberPrefix(cluster)}${nodeId}`;
/** A planned switchover: while it exists only `to` may campaign. */
export const switchoverKey = (cluster: string) => `/cairn/${cluster}/switchover`;
/** `cairn cluster switchover` asks the primary to step down by writing this. */
export const switchoverRequestKey = (cluster: string) => `/cairn/${cluster}/switchover-request`;
/** Written once, with no lease, by the first node to campaign: the seq its store held. Records up
 *  to it were never acknowledged at majority (they predate the cluster), so only a node holding
 *  at least that much may campaign: an empty node must never win over the store it was seeded
 *  from (Patroni's `initialize` key). */
export const initializeKey = (cluster: string) => `/cairn/${cluster}/initialize`;

export interface InitializeValue {
  nodeId: string;
  seq: bigint;
}

export function encodeInitialize(v: InitializeValue): string {
  return JSON.stringify({ nodeId: v.nodeId, seq: String(v.seq) });
}

export function decodeInitialize(s: string): InitializeValue {
  const o = JSON.parse(s) as { nodeId: string; seq: string };
  return { nodeId: o.nodeId, seq: BigInt(o.seq) };
}

export interface LeaderValue {
  nodeId: string;
  address: string;
  /** The leader's epoch history before its own term; its term starts at `start`. */
  history: History;
  /** The first seq of the leader's epoch (its last seq when it won, plus one). */
  start: bigint;
  /** False while the winner gathers a majority's final seqs; true once it serves. */
  ready: boolean;
}

export interface MemberValue {
  nodeId: string;
  address: string;
  role: string;
  /** The highest epoch this node has made durable (it refuses anything older). */
  epoch: bigint;
  durableSeq: bigint;
  /** The epoch that wrote its last durable record (Raft's last log term): (lastEpoch, durableSeq)
   *  orders logs by how up to date they are. */
  lastEpoch: bigint;
  /** Wall-clock ms when written: data only. */
  at: number;
}

export function encodeLeader(v: LeaderValue): string {
  return JSON.stringify({ ...v, history: encodeHistory(v.history), start: String(v.start) });
}

/** The leader's whole history, its own epoch `epoch` (the key's create revision) included. */
export function leaderHistory(v: LeaderValue, epoch: bigint): History {
  return [...v.history, [epoch, v.start] as const];
}

export function decodeLeader(s: string): LeaderValue {
  const o = JSON.parse(s) as { nodeId: string; address: string; history: unknown; start: string; ready: boolean };
  return { nodeId: o.nodeId, address: o.address, history: decodeHistory(o.history), start: BigInt(o.start), ready: o.ready === true };
}

export function encodeMember(v: MemberValue): string {
  return JSON.stringify({ ...v, epoch: String(v.epoch), durableSeq: String(v.durableSeq), lastEpoch: String(v.lastEpoch) });
}

export function decodeMember(s: string): MemberValue {
  const o = JSON.parse(s) as { nodeId: string; address: string; role: string; epoch: string; durableSeq: string; lastEpoch?: string; at: number };
  return {
    nodeId: o.nodeId,
    address: o.address,
    role: o.role,
    epoch: BigInt(o.epoch),
    durableSeq: BigInt(o.durableSeq),
    lastEpoch: BigInt(o.lastEpoch ?? '0'),
    at: o.at,
  };
}

/** Whether a log ending at (epoch `a`, seq `aSeq`) is more up to date than one ending at (`b`, `bSeq`). */
export function aheadOf(a: bigint, aSeq: bigint, b: bigint, bSeq: bigint): boolean {
  return a > b || (a === b && aSeq > bSeq);
}
