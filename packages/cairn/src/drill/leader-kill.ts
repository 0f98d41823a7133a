/**
 * leader-kill: SIGKILL the primary of a three-node cluster writing with `w: 'majority'`; another
 * node takes over once the lease expires. RTO: from the kill to the first write acknowledged by
 * the new primary. RPO: acknowledged writes missing on the final primary (0). The old primary is
 * restarted and rejoins (as a replica, or fenced when it holds records past the fork).
 */
import { performance } from 'node:perf_hooks';

import { DrillCluster, LEASE_TTL_MS, TAKEOVER_TIMEOUT_MS } from './cluster.js';
import { round, type ScenarioContext, type ScenarioOutcome, Stopwatch } from './context.js';
import { scenarioOutcome } from './outcome.js';

export async function leaderKill(ctx: ScenarioContext): Promise<ScenarioOutcome> {
  const sw = new Stopwatch();
  const c = await sw.step('start etcd and 3 nodes', () => DrillCluster.start(ctx));
  try {
    const old = await sw.step('first primary serving', () => c.servingPrimary(20, 120_000));
    const t0 = performance.now();
    await old.kill('SIGKILL');
    const next = await sw.step('failover', () => c.firstAckAfter(t0, TAKEOVER_TIMEOUT_MS, old));
    const rtoMs = round(next.at - t0);
    c.restart(old);
    const rejoined = await sw.step('old primary rejoins', () => c.settled(old, 60_000));
    const { acked, missing } = await sw.step('check acknowledged writes', () => c.lostOnPrimary());
    const problems = missing.length > 0 ? [`${missing.length} acknowledged writes missing on the new primary, e.g. ${missing.slice(0, 3).join(', ')}`] : [];
    return scenarioOutcome(sw, problems, {
      rtoMs,
      rpo: missing.length,
      mechanism: `startNode: lease expiry (TTL ${LEASE_TTL_MS} ms), election in etcd, new epoch`,
      figures: { acknowledgedWrites: acked, leaseTtlMs: LEASE_TTL_MS, oldPrimaryFenced: rejoined === 'fenced' ? 1 : 0 },
    });
  } finally {
    await c.stop();
  }
}
