/**
 * replica-loss: SIGKILL a replica while the primary writes with `w: 'majority'` (the other
 * replica keeps the majority), restart it, and wait until it holds every write acknowledged
 * meanwhile (catch-up from the primary's WAL). RTO: from the kill to caught up. RPO: writes
 * missing on the primary (0).
 */
import { performance } from 'node:perf_hooks';

import { DrillCluster } from './cluster.js';
import { round, type ScenarioContext, type ScenarioOutcome, Stopwatch } from './context.js';
import { scenarioOutcome } from './outcome.js';

export async function replicaLoss(ctx: ScenarioContext): Promise<ScenarioOutcome> {
  const sw = new Stopwatch();
  const c = await sw.step('start etcd and 3 nodes', () => DrillCluster.start(ctx));
  try {
    const primary = await sw.step('first primary serving', () => c.servingPrimary(20, 120_000));
    const victim = c.nodes.find((n) => n !== primary && n.alive)!;
    const t0 = performance.now();
    await victim.kill('SIGKILL');
    const during = await sw.step('writes go on without it', () => c.firstAckAfter(performance.now(), 30_000));
    c.restart(victim);
    const problems: string[] = [];
    const ids = c.ackedIds();
    const r = await sw.step('restart and catch up', () => victim.request('check', { ids }, 120_000));
    const missingOnReplica = (r.missing as string[]).length;
    if (missingOnReplica > 0) problems.push(`the restarted replica lacks ${missingOnReplica} acknowledged writes after catch-up`);
    const rtoMs = missingOnReplica === 0 ? round(performance.now() - t0) : null;
    const { acked, missing } = await sw.step('check acknowledged writes', () => c.lostOnPrimary());
    if (missing.length > 0) problems.push(`${missing.length} acknowledged writes missing on the primary`);
    return scenarioOutcome(sw, problems, {
      rtoMs,
      rpo: missing.length,
      mechanism: 'replica restart (a supervisor) + catch-up from the primary; writes never stopped',
      figures: { acknowledgedWrites: acked, msToFirstAckWithoutIt: round(during.at - t0) },
    });
  } finally {
    await c.stop();
  }
}
