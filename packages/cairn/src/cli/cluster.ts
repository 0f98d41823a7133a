/** `cairn node` (run a failover node until SIGINT/SIGTERM) and `cairn cluster status|switchover`. */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

import { CairnError } from '../errors.js';
import { Etcd } from '../failover/etcd.js';
import { switchoverRequestKey } from '../failover/keys.js';
import { type RoleEvent, startNode } from '../failover/node.js';
import { clusterStatus } from '../failover/status.js';
import { type Command, UsageError } from './command.js';
import { commaList, need, readToken, untilSignal } from './daemon.js';
import { json } from './output.js';

export const node: Command = {
  name: 'node',
  help:
    '  node --dir D --id n1 --cluster C --listen H:P --etcd URL[,URL] --voters n1,n2,n3 --token-file F\n' +
    '       [--advertise H:P] [--lease-ttl-ms 10000] [--forward-writes]\n' +
    '                           run a failover node (etcd leader key) until SIGINT/SIGTERM; prints role changes\n',
  options: {
    dir: { type: 'string' },
    id: { type: 'string' },
    cluster: { type: 'string' },
    listen: { type: 'string' },
    advertise: { type: 'string' },
    etcd: { type: 'string' },
    voters: { type: 'string' },
    'token-file': { type: 'string' },
    'lease-ttl-ms': { type: 'string' },
    'forward-writes': { type: 'boolean' },
  },
  async run(args) {
    const tokenFile = need(args, 'node', 'token-file');
    const token = readToken(tokenFile);
    const ttl = args.string('lease-ttl-ms');
    const advertise = args.string('advertise');
    const n = await startNode({
      dir: need(args, 'node', 'dir'),
      nodeId: need(args, 'node', 'id'),
      cluster: need(args, 'node', 'cluster'),
      listen: need(args, 'node', 'listen'),
      ...(advertise === undefined ? {} : { advertise }),
      etcd: commaList(need(args, 'node', 'etcd')),
      voters: commaList(need(args, 'node', 'voters')),
      token,
      ...(ttl === undefined ? {} : { leaseTtlMs: Number(ttl) }),
      forwardWrites: args.flag('forward-writes'),
    });
    const show = (e: Pick<RoleEvent, 'role' | 'epoch' | 'primary'>) =>
      console.log(
        args.json
          ? JSON.stringify({ nodeId: n.nodeId, role: e.role, epoch: String(e.epoch), primary: e.primary ?? null, at: new Date().toISOString() })
          : `node ${n.nodeId}: ${e.role}, epoch ${e.epoch}${e.primary ? `, primary ${e.primary.nodeId} at ${e.primary.address}` : ''}${n.fencedReason ? ` (${n.fencedReason})` : ''}`,
      );
    show({ role: n.role, epoch: n.epoch, primary: n.primary });
    n.on('role', show);
    const signal = await untilSignal();
    if (!args.json) console.log(`${signal}: closing`);
    await n.close();
    return 0;
  },
};

export const cluster: Command = {
  name: 'cluster',
  help:
    '  cluster status --etcd URL --cluster C      the primary, its epoch and every member (durable seq, lag, role)\n' +
    '  cluster switchover --etcd URL --cluster C [--to n2] [--timeout-ms 30000]\n' +
    '                           ask the primary to hand over (to the most up-to-date replica by default)\n',
  options: { etcd: { type: 'string' }, cluster: { type: 'string' }, to: { type: 'string' }, 'timeout-ms': { type: 'string' } },
  async run(args) {
    const sub = args.positionals[0];
    const etcd = commaList(need(args, 'cluster', 'etcd'));
    const name = need(args, 'cluster', 'cluster');
    if (sub === 'status') {
      const s = await clusterStatus({ etcd, cluster: name });
      if (args.json) console.log(json(s));
      else {
        console.log(s.primary ? `primary ${s.primary.nodeId} at ${s.primary.address}, epoch ${s.epoch}${s.primary.ready ? '' : ' (electing)'}` : 'no primary');
        for (const m of s.members)
          console.log(
            `  ${m.nodeId}  ${m.role.padEnd(9)} seq ${m.durableSeq}  lag ${m.lagRecords}  epoch ${m.epoch}  ${m.address}  ${m.lastContact.toISOString()}`,
          );
      }
      return 0;
    }
    if (sub === 'switchover') {
      const before = await clusterStatus({ etcd, cluster: name });
      if (!before.primary?.ready) throw new CairnError('CAIRN_NOT_PRIMARY', `cluster '${name}' has no serving primary to hand over from`);
      const to = args.string('to');
      const timeoutMs = Number(args.string('timeout-ms') ?? '30000');
      await new Etcd(etcd, 5000).put(switchoverRequestKey(name), JSON.stringify(to === undefined ? {} : { to }));
      const deadline = performance.now() + timeoutMs;
      for (let i = 0; i < 100_000 && performance.now() < deadline; i++) {
        const s = await clusterStatus({ etcd, cluster: name });
        if (s.primary?.ready && s.epoch !== before.epoch) {
          console.log(
            args.json ? json({ from: before.primary.nodeId, to: s.primary.nodeId, epoch: s.epoch }) : `primary is now ${s.primary.nodeId} (epoch ${s.epoch})`,
          );
          return 0;
        }
        await sleep(100);
      }
      throw new CairnError(
        'CAIRN_REPLICATION_TIMEOUT',
        `no new primary within ${timeoutMs} ms (the primary still holds the key, or the election has not finished)`,
      );
    }
    throw new UsageError("cluster needs a subcommand: 'status' or 'switchover'");
  },
};
