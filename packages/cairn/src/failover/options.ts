/** Validation of `startNode()`'s options. */
import { invalidArgument } from '../errors.js';
import { checkToken } from '../replication/auth.js';
import { parseHostPort, parseNodeId } from '../replication/options.js';
import type { WriteConcern } from '../replication/types.js';
import { parseWriteConcern } from '../replication/write-concern.js';

export interface StartNodeOptions {
  /** The store's directory (created if missing or empty). */
  dir: string;
  nodeId: string;
  /** The cluster's name: its keys live under `/cairn/<cluster>/` in etcd. */
  cluster: string;
  /** Replication address 'host:port' this node serves on as primary, advertised in etcd. */
  listen: string;
  /** The 'host:port' the other nodes connect to, when it is not `listen` (a NAT, a proxy);
   *  advertised in etcd instead of `listen` (Patroni's `connect_address`). */
  advertise?: string;
  /** etcd client URLs (v3 JSON gateway), e.g. 'http://127.0.0.1:2379'. */
  etcd: string | string[];
  /** Every node that votes (this one included); a majority of them is needed to elect and to commit. */
  voters: string[];
  token: string | Buffer;
  /** Leader lease TTL (default 10000; a whole number of seconds in etcd, at least 2000). */
  leaseTtlMs?: number;
  /** Default write concern on the primary (default `{ w: 'majority', timeoutMs: 5000 }`). */
  writeConcern?: WriteConcern;
  /** On a replica, forward writes to the primary instead of refusing them. */
  forwardWrites?: boolean;
  /** A replica further behind the most advanced voter than this many records does not campaign (default 0). */
  maxLagOnFailover?: number;
}

export interface NodeConfig {
  dir: string;
  nodeId: string;
  cluster: string;
  listen: string;
  /** What etcd advertises: `advertise`, or `listen`. */
  advertise: string;
  etcd: string[];
  voters: string[];
  token: Buffer;
  leaseTtlMs: number;
  /** Safety margin taken off the lease before the primary stops acknowledging. */
  marginMs: number;
  /** Period of the node's loop (renewal, leader check). */
  loopMs: number;
  /** Each etcd request's bound. Safety does not depend on it: the lease deadline counts from
   *  when a renewal was sent, and every acknowledgement checks it. */
  requestTimeoutMs: number;
  writeConcern: WriteConcern;
  forwardWrites: boolean;
  maxLagOnFailover: bigint;
  heartbeatMs: number;
}

const KEYS = ['dir', 'nodeId', 'cluster', 'listen', 'advertise', 'etcd', 'voters', 'token', 'leaseTtlMs', 'writeConcern', 'forwardWrites', 'maxLagOnFailover'];

export function parseNodeOptions(o: StartNodeOptions): NodeConfig {
  if (o === null || typeof o !== 'object') throw invalidArgument('options must be an object');
  for (const k of Object.keys(o)) if (!KEYS.includes(k)) throw invalidArgument(`options.${k} is not a known option`);
  if (typeof o.dir !== 'string' || o.dir === '') throw invalidArgument('options.dir must be a directory path');
  const nodeId = parseNodeId('options.nodeId', o.nodeId);
  const cluster = parseNodeId('options.cluster', o.cluster);
  parseHostPort('options.listen', o.listen, false);
  if (o.advertise !== undefined) parseHostPort('options.advertise', o.advertise, false);
  const etcd = typeof o.etcd === 'string' ? [o.etcd] : o.etcd;
  if (!Array.isArray(etcd) || etcd.length === 0 || etcd.some((u) => typeof u !== 'string' || !/^https?:\/\//.test(u)))
    throw invalidArgument('options.etcd must be an etcd URL or a non-empty array of them');
  if (!Array.isArray(o.voters) || o.voters.length === 0) throw invalidArgument('options.voters must be a non-empty array of node ids');
  const voters = o.voters.map((v, i) => parseNodeId(`options.voters[${i}]`, v));
  if (new Set(voters).size !== voters.length) throw invalidArgument('options.voters must not name a node twice');
  if (!voters.includes(nodeId)) throw invalidArgument(`options.voters must include this node ('${nodeId}')`);
  const token = checkToken('options.token', o.token);
  const leaseTtlMs = o.leaseTtlMs ?? 10_000;
  if (!Number.isInteger(leaseTtlMs) || leaseTtlMs < 2000 || leaseTtlMs > 600_000 || leaseTtlMs % 1000 !== 0)
    throw invalidArgument('options.leaseTtlMs must be a whole number of seconds in ms, from 2000 to 600000');
  const writeConcern = parseWriteConcern('options.writeConcern', o.writeConcern ?? { w: 'majority', timeoutMs: 5000 });
  if (o.forwardWrites !== undefined && typeof o.forwardWrites !== 'boolean') throw invalidArgument('options.forwardWrites must be a boolean');
  const lag = o.maxLagOnFailover ?? 0;
  if (!Number.isSafeInteger(lag) || lag < 0) throw invalidArgument('options.maxLagOnFailover must be a non-negative integer');
  const loopMs = Math.max(100, Math.floor(leaseTtlMs / 5));
  return {
    dir: o.dir,
    nodeId,
    cluster,
    listen: o.listen,
    advertise: o.advertise ?? o.listen,
    etcd,
    voters,
    token,
    leaseTtlMs,
    // Renewals every loopMs, each bounded by loopMs: the deadline keeps two periods in hand.
    marginMs: Math.floor(leaseTtlMs / 4),
    loopMs,
    requestTimeoutMs: Math.max(1000, Math.floor(leaseTtlMs / 2)),
    writeConcern,
    forwardWrites: o.forwardWrites === true,
    maxLagOnFailover: BigInt(lag),
    heartbeatMs: Math.max(50, Math.floor(leaseTtlMs / 10)),
  };
}
