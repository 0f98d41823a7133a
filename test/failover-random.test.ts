/**
 * Failover under random nemeses (Jepsen's "mix"): a seeded generator picks, for each of a bounded
 * number of cycles, one nemesis and its timing: SIGKILL the primary at a random point of its
 * writer loop, SIGSTOP it past the TTL, cut it from its replicas or from etcd through the TCP
 * proxies for a random time, SIGKILL a replica and restart it after a random pause. Between
 * cycles the cluster must be serving again. At the end the harness's checker runs (every
 * acknowledged write on the final primary and a majority; one node per epoch, in order), every
 * node is a replica or the primary (nobody fenced), and every record a node cut into rollback/
 * was never acknowledged.
 *
 *   CAIRN_FAILOVER_SEED=123 CAIRN_FAILOVER_CYCLES=10 npx vitest run test/failover-random.test.ts
 */
import { setTimeout as sleep } from 'node:timers/promises';

import { describe, expect, it } from 'vitest';
import { Cluster, env, haveEtcd, type Node, until, useEtcd } from './failover-harness.js';
import { mulberry32 as rng } from './fixtures/mulberry32.mjs';

useEtcd();

const SEED = Number(process.env.CAIRN_FAILOVER_SEED ?? 20261205);
const CYCLES = Math.min(20, Number(process.env.CAIRN_FAILOVER_CYCLES ?? 6));

const NEMESES = ['kill-primary', 'stop-primary', 'cut-replication', 'cut-etcd', 'kill-replica'] as const;

describe.runIf(haveEtcd)('failover under random nemeses', () => {
  it(`${CYCLES} seeded cycles (seed ${SEED}): no acknowledged write lost, one primary per epoch, everyone back`, async () => {
    const random = rng(SEED);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T;
    const between = (lo: number, hi: number) => Math.round(lo + random() * (hi - lo));
    const c = new Cluster('random', env.etcdUrl, { proxies: true });
    await c.start();
    const ttl = c.ttl;
    const log: string[] = [];
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      const { node: primary } = await c.servingPrimary(3, 4 * ttl + 20_000);
      // A random point of the writer loop.
      await sleep(between(0, ttl));
      const nemesis = pick(NEMESES);
      const started = Date.now();
      let detail = '';
      if (nemesis === 'kill-primary') {
        await primary.kill('SIGKILL');
        await c.servingPrimary(1, 4 * ttl + 20_000, primary);
        c.restart(primary);
      } else if (nemesis === 'stop-primary') {
        const pause = between(ttl + 500, 2 * ttl);
        primary.proc.kill('SIGSTOP');
        await sleep(pause);
        primary.proc.kill('SIGCONT');
        detail = ` ${pause} ms`;
      } else if (nemesis === 'cut-replication' || nemesis === 'cut-etcd') {
        const link = nemesis === 'cut-etcd' ? c.link(primary).etcd : c.link(primary).replication;
        const mode = pick(['drop', 'reset'] as const);
        const span = between(500, 2 * ttl);
        link.cut(mode);
        await sleep(span);
        link.heal();
        detail = ` ${mode} ${span} ms`;
      } else {
        const victim = pick(c.nodes.filter((n) => n !== primary));
        const pause = between(0, ttl);
        await victim.kill('SIGKILL');
        await sleep(pause);
        c.restart(victim);
        detail = ` ${victim.id}, back after ${pause} ms`;
      }
      // Serving again, and every node back in the cluster, before the next cycle.
      await c.servingPrimary(1, 4 * ttl + 20_000);
      const back = await until(() => c.nodes.every((n: Node) => n.alive && (n.role === 'primary' || n.role === 'replica')), 30_000);
      expect(back, `cycle ${cycle} (${nemesis}): ${c.nodes.map((n) => `${n.id}=${n.role}`).join(' ')}`).toBe(true);
      log.push(`${cycle}:${nemesis}(${primary.id}${detail}) ${Date.now() - started} ms`);
    }
    // Every record cut into rollback/ was never acknowledged by the node and epoch that wrote it.
    const acks = c.acks();
    const rollbacks = c.lines('rollback');
    for (const rb of rollbacks) {
      const first = BigInt(rb.firstSeq as string);
      const last = BigInt(rb.lastSeq as string);
      const cutAcked = acks.filter((a) => a.node === rb.node && a.epoch === rb.epoch && BigInt(a.seq) >= first && BigInt(a.seq) <= last);
      expect(cutAcked, `acknowledged records among ${String(rb.node)}'s cut ${first}..${last}`).toEqual([]);
    }
    expect(c.lines('role').filter((l) => l.role === 'fenced')).toEqual([]);
    console.log(`random nemeses, seed ${SEED}: ${log.join('; ')}`);
    const v = await c.verify();
    console.log(
      `random nemeses, seed ${SEED}: ${v.acked} acknowledged writes, all on ${v.onAll.join(', ')}; ` +
        `${new Set(acks.map((a) => a.epoch)).size} epochs acknowledged; ${rollbacks.length} forked tails cut (${rollbacks.map((r) => `${String(r.node)}:${String(r.records)}`).join(', ') || 'none'})`,
    );
  }, 300_000);
});
