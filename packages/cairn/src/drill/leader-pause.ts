/**
 * leader-pause: SIGSTOP the primary past its lease; another node takes over. After SIGCONT the
 * paused one must acknowledge nothing more (its monotonic deadline has passed). RTO: from the
 * pause to the first write acknowledged by the new primary. RPO: acknowledged writes missing on
 * the final primary (0).
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

import { DrillCluster, LEASE_TTL_MS, TAKEOVER_TIMEOUT_MS } from './cluster.js';
import { round, type ScenarioContext, type ScenarioOutcome, Stopwatch } from './context.js';
import { scenarioOutcome } from './outcome.js';

export async function leaderPause(ctx: ScenarioContext): Promise<ScenarioOutcome> {
  const sw = new Stopwatch();
  const c = await sw.step('start etcd and 3 nodes', () => DrillCluster.start(ctx));
  try {
    const old = await sw.step('first primary serving', () => c.servingPrimary(20, 120_000));
    const t0 = performance.now();
    old.proc.kill('SIGSTOP');
    const next = await sw.step('failover', () => c.firstAckAfter(t0, TAKEOVER_TIMEOUT_MS, old));
    const rtoMs = round(next.at - t0);
    await sleep(Math.max(0, t0 + LEASE_TTL_MS + 500 - performance.now()));
    // A stopped process runs no code: an ack it prints after this was made after it resumed.
    const resumedAt = performance.now();
    old.proc.kill('SIGCONT');
    await sleep(LEASE_TTL_MS);
    const late = old.acks().filter((l) => l.at > resumedAt + 100).length;
    const problems: string[] = [];
    if (late > 0) problems.push(`the paused primary acknowledged ${late} writes after it resumed`);
    const { acked, missing } = await sw.step('check acknowledged writes', () => c.lostOnPrimary());
    if (missing.length > 0) problems.push(`${missing.length} acknowledged writes missing on the new primary`);
    return scenarioOutcome(sw, problems, {
      rtoMs,
      rpo: missing.length,
      mechanism: 'startNode: lease expiry, election; the resumed primary stops at its monotonic deadline',
      figures: { acknowledgedWrites: acked, acksAfterResume: late, leaseTtlMs: LEASE_TTL_MS },
    });
  } finally {
    await c.stop();
  }
}
