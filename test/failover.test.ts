/**
 * Automatic failover, Jepsen-style: a real etcd (Debian's etcd-server, started here on free
 * loopback ports with a temporary data dir) and three nodes as child processes, each running a
 * writer loop at w: 'majority' that reports every acknowledged write with its epoch and node.
 * Nemeses: SIGKILL the primary (cycles), SIGSTOP it past the TTL then resume it, planned
 * switchover. After each: every acknowledged write is on the final primary and on a majority;
 * each epoch was acknowledged by one node only, and epochs' acknowledgements never overlap in
 * time; a new primary was serving within TTL + 2 s of the old lease's latest possible expiry.
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { describe, expect, it } from 'vitest';
import { firstDivergence } from '../packages/cairn/dist/failover/history.js';
import { clusterStatus, open, openReplica } from '../packages/cairn/dist/index.js';
import {
  type Ack,
  Cluster,
  env,
  freePort,
  haveEtcd,
  IDS,
  median,
  type Node,
  promotedAt,
  runCli,
  running,
  startEtcd,
  TOKEN,
  TTL,
  useEtcd,
} from './failover-harness.js';
import { tempDir } from './helpers.js';

useEtcd();

describe('epochs without etcd', () => {
  it('a replica refuses frames of an older epoch, and the primary hears of the newer one', async () => {
    const dir = tempDir();
    const db = await open(join(dir, 'p'), { nodeId: 'p' });
    const newer: bigint[] = [];
    const server = await db.serveReplication({
      listen: '127.0.0.1:0',
      token: TOKEN,
      replicas: ['r'],
      epoch: 3n,
      onFenced: (e: bigint) => newer.push(e),
    } as Parameters<typeof db.serveReplication>[0]);
    const r = await openReplica(join(dir, 'r'), { nodeId: 'r', primary: server.address, token: TOKEN, epoch: 5n } as Parameters<typeof openReplica>[1]);
    let status = r.replicationStatus();
    for (let i = 0; i < 200 && status.lastError === null; i++) {
      await sleep(25);
      status = r.replicationStatus();
    }
    expect(status.lastError).toMatch(/CAIRN_FENCED/);
    expect(status.state).not.toBe('streaming');
    expect(newer).toContain(5n);
    await r.close();
    await server.close();
    await db.close();
  });

  it('epoch histories: a prefix follows, records past the fork are found', () => {
    // Leader's history: epoch 10 wrote 1..50, epoch 20 from 51 on.
    const leader = [
      [10n, 1n],
      [20n, 51n],
    ] as const;
    expect(firstDivergence([[10n, 1n]], leader, 50n)).toBeUndefined();
    expect(firstDivergence([[10n, 1n]], leader, 0n)).toBeUndefined();
    expect(firstDivergence(leader, leader, 80n)).toBeUndefined();
    // An old primary of epoch 10 that kept writing to 60: 51..60 are past the fork.
    expect(firstDivergence([[10n, 1n]], leader, 60n)).toBe(51n);
    // A node that followed a short-lived epoch 15 from 40.
    expect(
      firstDivergence(
        [
          [10n, 1n],
          [15n, 40n],
        ],
        leader,
        45n,
      ),
    ).toBe(40n);
  });
});

describe.runIf(haveEtcd)('failover with etcd', () => {
  it('SIGKILL the primary, 3 cycles: a new primary within TTL + 2 s, no acknowledged write lost', async () => {
    const c = new Cluster('kill');
    await c.start();
    const takeover: number[] = [];
    const rejoined: string[] = [];
    const firstAck: number[] = [];
    const campaigned: number[] = [];
    for (let cycle = 0; cycle < 3; cycle++) {
      const { node: old, epoch } = await c.servingPrimary(10);
      const killedAt = Date.now();
      await old.kill('SIGKILL');
      // The last renewal reached etcd before the kill: the lease expires by killedAt + TTL.
      const { node: next, epoch: newEpoch } = await c.servingPrimary(1, 4 * TTL + 10_000);
      expect(BigInt(newEpoch)).toBeGreaterThan(BigInt(epoch));
      const p = promotedAt(c, killedAt);
      expect(p?.node).toBe(next.id);
      const ack = c.acks().find((a) => a.epoch === newEpoch) as Ack;
      takeover.push((p?.wall as number) - killedAt);
      // The winner's 'candidate' line of the new epoch: it created the leader key then.
      const won = next.roles().find((l) => l.role === 'candidate' && l.epoch === newEpoch);
      if (won) campaigned.push((won.wall as number) - killedAt);
      firstAck.push(ack.wall - killedAt);
      expect((p?.wall as number) - killedAt, 'promotion after the old lease could have expired, at most TTL + 2 s later').toBeLessThanOrEqual(TTL + TTL + 2000);
      // The old primary comes back as a replica; records it holds past the fork (committed
      // locally, never acknowledged) are cut into rollback/ first.
      c.restart(old);
      const deadline = Date.now() + 30_000;
      for (let i = 0; i < 1000 && Date.now() < deadline && old.role !== 'replica' && old.role !== 'fenced'; i++) await sleep(50);
      expect(old.role, String(old.roles().at(-1)?.reason)).toBe('replica');
      const rb = old.lines.find((l) => l.event === 'rollback');
      rejoined.push(`${old.id}:${rb ? `replica after cutting ${String(rb.records)} records` : 'replica'}`);
      if (rb) {
        const first = BigInt(rb.firstSeq as string);
        expect(
          c.acks().filter((a) => a.node === old.id && a.epoch === epoch && BigInt(a.seq) >= first),
          'acknowledged records among those cut',
        ).toEqual([]);
      }
    }
    const r = await c.verify();
    console.log(
      `SIGKILL x3: ${r.acked} acknowledged writes, all on ${r.onAll.join(', ')}; old primary came back as ${rejoined.join(', ')}; kill -> promoted ms: ${takeover.join(', ')} (median ${median(takeover)}, max ${Math.max(...takeover)}); kill -> first ack ms: ${firstAck.join(', ')} (median ${median(firstAck)}, max ${Math.max(...firstAck)}); split: kill -> leader key won (lease expiry + detection) ${campaigned.join(', ')} ms, then gather + open + serve ${takeover.map((t, i) => t - (campaigned[i] ?? t)).join(', ')} ms`,
    );
  }, 180_000);

  it('SIGSTOP the primary past the TTL: after SIGCONT it acknowledges nothing', async () => {
    const c = new Cluster('stop');
    await c.start();
    const { node: old, epoch } = await c.servingPrimary(10);
    const stoppedAt = Date.now();
    old.proc.kill('SIGSTOP');
    const { node: next, epoch: newEpoch } = await c.servingPrimary(5, 4 * TTL + 10_000, old);
    expect(next).not.toBe(old);
    expect(BigInt(newEpoch)).toBeGreaterThan(BigInt(epoch));
    // Paused past the TTL: etcd expired its lease (the last renewal reached etcd before the stop).
    await sleep(Math.max(0, stoppedAt + TTL + 500 - Date.now()));
    // A stopped process runs no code: any acknowledgement it times at or after this moment was
    // made after it resumed (one timed between stoppedAt and the signal landing came before).
    const resumedAt = Date.now();
    old.proc.kill('SIGCONT');
    const deadline = Date.now() + 20_000;
    for (let i = 0; i < 1000 && Date.now() < deadline && old.role === 'primary'; i++) await sleep(50);
    expect(old.role).not.toBe('primary');
    await sleep(TTL);
    const late = c.acks().filter((a) => a.node === old.id && a.wall >= resumedAt);
    expect(late, 'acknowledgements by the paused primary after it resumed').toEqual([]);
    // It rejoins as a replica (cutting into rollback/ whatever it committed past the fork).
    for (let i = 0; i < 1000 && Date.now() < deadline + 20_000 && old.role !== 'replica'; i++) await sleep(50);
    expect(old.role, String(old.roles().at(-1)?.reason)).toBe('replica');
    console.log(
      `SIGSTOP: the resumed primary ${old.id} is now ${old.role}${old.lines.some((l) => l.event === 'rollback') ? ' (after cutting its forked tail)' : ''}`,
    );
    await c.verify();
  }, 120_000);

  it('etcd lost: the primary stops acknowledging within the TTL, replicas keep reads, writes resume when etcd is back', async () => {
    const client = await freePort();
    const peer = await freePort();
    const data = join(env.root, 'etcd-lost');
    let etcd = await startEtcd(data, client, peer);
    running.push(etcd);
    const c = new Cluster('lost', `http://127.0.0.1:${client}`);
    await c.start();
    const { node: old } = await c.servingPrimary(10);
    const lostAt = Date.now();
    etcd.kill('SIGKILL');
    const deadline = Date.now() + 4 * TTL + 5000;
    for (let i = 0; i < 1000 && Date.now() < deadline && old.role === 'primary'; i++) await sleep(50);
    expect(old.role, 'the primary demoted itself without etcd').not.toBe('primary');
    await sleep(TTL);
    // The last renewal was sent before lostAt: nothing may be acknowledged after lostAt + TTL.
    const late = c.acks().filter((a) => a.wall > lostAt + TTL);
    expect(late, 'acknowledgements while etcd was away').toEqual([]);
    const replica = c.nodes.find((n) => n !== old && n.role === 'replica') as Node;
    expect(replica, 'a replica still serving reads').toBeDefined();
    const read = await replica.request('check', {
      ids: c
        .acks()
        .slice(0, 5)
        .map((a) => a.id),
    });
    expect(read.missing).toEqual([]);
    etcd = await startEtcd(data, client, peer);
    running.push(etcd);
    const backAt = Date.now();
    const { epoch } = await c.servingPrimary(5, 4 * TTL + 20_000);
    expect(c.acks().some((a) => a.epoch === epoch && a.wall > backAt)).toBe(true);
    await c.verify();
  }, 120_000);

  it('SIGKILL a replica: writes go on with the other one, the replica comes back and catches up', async () => {
    const c = new Cluster('replica-kill');
    await c.start();
    const { node: primary, epoch } = await c.servingPrimary(10);
    const victim = c.nodes.find((n) => n !== primary) as Node;
    await victim.kill('SIGKILL');
    const before = c.acks().length;
    const deadline = Date.now() + 20_000;
    for (let i = 0; i < 1000 && Date.now() < deadline && c.acks().length < before + 20; i++) await sleep(50);
    expect(c.acks().length, 'writes acknowledged with one replica down').toBeGreaterThanOrEqual(before + 20);
    expect(primary.role).toBe('primary');
    c.restart(victim);
    for (let i = 0; i < 1000 && Date.now() < deadline + 20_000 && victim.role !== 'replica'; i++) await sleep(50);
    expect(victim.role).toBe('replica');
    expect(victim.roles().at(-1)?.epoch).toBe(epoch);
    const r = await c.verify();
    expect(r.onAll).toContain(victim.id);
  }, 120_000);

  it('planned switchover (cairn cluster switchover) loses nothing, with one short window of CAIRN_NOT_PRIMARY', async () => {
    const c = new Cluster('switch');
    await c.start();
    const { node: old, epoch } = await c.servingPrimary(10);
    const to = IDS.find((id) => id !== old.id) as string;
    const startedAt = Date.now();
    // Not spawnSync: the nodes' output must keep draining (a full pipe would stall them).
    const r = await runCli(['cluster', 'switchover', '--etcd', env.etcdUrl, '--cluster', 'switch', '--to', to, '--json'], 60_000);
    expect(r.status, `${r.stderr} ${JSON.stringify(c.nodes.map((n) => [n.lines.filter((l) => l.event === 'role' || l.event === 'error'), n.stderr]))}`).toBe(0);
    expect(JSON.parse(r.stdout), JSON.stringify(c.nodes.map((n) => n.lines.filter((l) => l.event === 'role' || l.event === 'error')))).toMatchObject({
      from: old.id,
      to,
    });
    const { node: next, epoch: newEpoch } = await c.servingPrimary(5, 20_000, old);
    expect(next.id).toBe(to);
    expect(BigInt(newEpoch)).toBeGreaterThan(BigInt(epoch));
    const deadline = Date.now() + 20_000;
    for (let i = 0; i < 1000 && Date.now() < deadline && old.role !== 'replica'; i++) await sleep(50);
    expect(old.role, 'the old primary follows the new one (nothing past the fork)').toBe('replica');
    expect(
      old.lines.some((l) => l.event === 'rollback'),
      'a planned switchover leaves nothing past the fork',
    ).toBe(false);
    const s = await clusterStatus({ etcd: env.etcdUrl, cluster: 'switch' });
    expect(s.primary?.nodeId).toBe(to);
    expect(s.epoch).toBe(BigInt(newEpoch));
    // The writers' view: refusals with CAIRN_NOT_PRIMARY form one window, between the old
    // primary's last acknowledgement and the new one's first; nothing else was refused.
    const refused = c.nodes.flatMap((n) => n.lines).filter((l) => l.event === 'werr' && (l.wall as number) >= startedAt);
    const notPrimary = refused.filter((l) => l.code === 'CAIRN_NOT_PRIMARY').map((l) => l.wall as number);
    expect(
      refused.filter((l) => l.code !== 'CAIRN_NOT_PRIMARY').map((l) => l.code),
      'writes refused for another reason than CAIRN_NOT_PRIMARY',
    ).toEqual([]);
    const lastOld = Math.max(...c.ackWalls((a) => a.epoch === epoch));
    const firstNew = Math.min(...c.ackWalls((a) => a.epoch === newEpoch));
    const windowFrom = Math.min(lastOld, ...notPrimary);
    const windowTo = Math.max(firstNew, ...notPrimary);
    expect(
      c.acks().filter((a) => a.wall > windowFrom && a.wall < windowTo && a.wall !== lastOld && a.wall !== firstNew),
      'acknowledgements inside the window',
    ).toEqual([]);
    if (notPrimary.length > 0) expect(Math.min(...notPrimary)).toBeGreaterThanOrEqual(lastOld);
    if (notPrimary.length > 0) expect(Math.max(...notPrimary)).toBeLessThanOrEqual(firstNew);
    const v = await c.verify();
    console.log(
      `switchover ${old.id} -> ${to}: no write acknowledged for ${firstNew - lastOld} ms (old primary's last ack to new primary's first); ` +
        `${notPrimary.length} writes refused with CAIRN_NOT_PRIMARY in ${notPrimary.length > 0 ? Math.max(...notPrimary) - Math.min(...notPrimary) : 0} ms; ${v.acked} acknowledged, all on ${v.onAll.join(', ')}`,
    );
  }, 120_000);
  it('a cluster seeded from one store: nodes that lack its records never campaign, so it is never fenced or cut', async () => {
    const c = new Cluster('seeded');
    await c.create();
    const [seed, ...empty] = c.nodes as [Node, Node, Node];
    const ids = Array.from({ length: 30 }, (_, i) => `seed-${i}`);
    const db = await open(seed.dir, { nodeId: seed.id });
    await db.createCollection('t', { dim: 2, metric: 'l2' });
    await db.collection('t').upsert(ids.map((id, i) => ({ id, vector: [i, 1] })));
    const seeded = db.lastSeq;
    await db.close();
    // Alone, the seeded node initializes the cluster (it cannot serve: no majority), then dies.
    seed.start();
    const key = Buffer.from(`/cairn/${c.name}/initialize`).toString('base64');
    let init: { nodeId: string; seq: string } | undefined;
    for (let i = 0; i < 200 && !init; i++) {
      const r = (await (await fetch(`${c.etcd}/v3/kv/range`, { method: 'POST', body: JSON.stringify({ key }) })).json()) as { kvs?: { value: string }[] };
      if (r.kvs?.[0]) init = JSON.parse(Buffer.from(r.kvs[0].value, 'base64').toString());
      else await sleep(50);
    }
    expect(init).toEqual({ nodeId: seed.id, seq: String(seeded) });
    await seed.kill('SIGKILL');
    // The empty nodes see no leader and no member ahead of them (the seed's member key expires),
    // yet hold less than the cluster started with: neither may win.
    for (const n of empty) n.start();
    await sleep(4 * TTL);
    for (const n of empty) expect(n.roles().map((l) => l.role)).not.toContain('primary');
    // The seed comes back, wins, and the others catch up with its records.
    c.restart(seed);
    const { node } = await c.servingPrimary(5, 4 * TTL + 20_000);
    expect(node).toBe(seed);
    expect(seed.roles().map((l) => l.role)).not.toContain('fenced');
    for (const n of empty) expect((await n.request('check', { ids }, 60_000)).missing).toEqual([]);
    await c.verify();
  }, 120_000);
});
