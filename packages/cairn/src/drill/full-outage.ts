/**
 * full-outage: SIGKILL all three nodes at once, restart them all. RTO: from the kill to the
 * first write acknowledged again. RPO: acknowledged writes missing on the final primary (0).
 */
import { performance } from 'node:perf_hooks';

import { DrillCluster, TAKEOVER_TIMEOUT_MS } from './cluster.js';
import { round, type ScenarioContext, type ScenarioOutcome, Stopwatch } from './context.js';
import { scenarioOutcome } from './outcome.js';

export async function fullOutage(ctx: ScenarioContext): Promise<ScenarioOutcome> {
  const sw = new Stopwatch();
  const c = await sw.step('start etcd and 3 nodes', () => DrillCluster.start(ctx));
  try {
    await sw.step('first primary serving', () => c.servingPrimary(20, 120_000));
    const t0 = performance.now();
    await Promise.all(c.nodes.map((n) => n.kill('SIGKILL')));
    for (const n of c.nodes) c.restart(n);
    const back = await sw.step('restart all, first acknowledged write', () => c.firstAckAfter(t0, TAKEOVER_TIMEOUT_MS));
    const rtoMs = round(back.at - t0);
    const { acked, missing } = await sw.step('check acknowledged writes', () => c.lostOnPrimary());
    const problems = missing.length > 0 ? [`${missing.length} acknowledged writes missing on the primary`] : [];
    return scenarioOutcome(sw, problems, {
      rtoMs,
      rpo: missing.length,
      mechanism: 'restart every node (a supervisor): recovery on open, lease expiry, election',
      figures: { acknowledgedWrites: acked },
    });
  } finally {
    await c.stop();
  }
}
