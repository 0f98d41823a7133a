/** `clusterStatus()`: the leader and every member as etcd shows them (wall-clock times are data). */
import { invalidArgument } from '../errors.js';
import { Etcd } from './etcd.js';
import { decodeLeader, decodeMember, leaderKey, memberPrefix } from './keys.js';

export interface ClusterMemberStatus {
  nodeId: string;
  address: string;
  role: string;
  /** The highest epoch the member has made durable. */
  epoch: bigint;
  durableSeq: bigint;
  /** The primary's durable seq minus this member's (0 for the primary, or when there is none). */
  lagRecords: bigint;
  /** When the member last wrote its key (its wall clock). */
  lastContact: Date;
}

export interface ClusterStatus {
  primary: { nodeId: string; address: string; ready: boolean } | undefined;
  epoch: bigint;
  members: ClusterMemberStatus[];
}

export async function clusterStatus(options: { etcd: string | string[]; cluster: string; timeoutMs?: number }): Promise<ClusterStatus> {
  if (options === null || typeof options !== 'object') throw invalidArgument('options must be an object');
  const endpoints = typeof options.etcd === 'string' ? [options.etcd] : options.etcd;
  if (!Array.isArray(endpoints) || endpoints.length === 0) throw invalidArgument('options.etcd must be an etcd URL or an array of them');
  if (typeof options.cluster !== 'string' || options.cluster === '') throw invalidArgument('options.cluster must be a cluster name');
  const etcd = new Etcd(endpoints, options.timeoutMs ?? 5000);
  const leader = await etcd.get(leaderKey(options.cluster));
  const members = (await etcd.getPrefix(memberPrefix(options.cluster))).map((kv) => decodeMember(kv.value));
  const l = leader ? decodeLeader(leader.value) : undefined;
  const primarySeq = l ? members.find((m) => m.nodeId === l.nodeId)?.durableSeq : undefined;
  return {
    primary: l ? { nodeId: l.nodeId, address: l.address, ready: l.ready } : undefined,
    epoch: leader ? leader.createRevision : 0n,
    members: members
      .map((m) => ({
        nodeId: m.nodeId,
        address: m.address,
        role: m.role,
        epoch: m.epoch,
        durableSeq: m.durableSeq,
        lagRecords: primarySeq !== undefined && primarySeq > m.durableSeq ? primarySeq - m.durableSeq : 0n,
        lastContact: new Date(m.at),
      }))
      .sort((a, b) => a.nodeId.localeCompare(b.nodeId)),
  };
}
