/**
 * accidental-delete: delete 10% of the main collection's rows (acknowledged), then restore the
 * store as of the write just before the delete (point-in-time recovery, immutable files linked)
 * and open the result. RTO: from the start of the restore to the first correct answer, which
 * must find a deleted row. RPO: rows of the pre-delete state missing or different (0); the
 * delete itself is undone by design.
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { restore } from '../restore.js';
import { open } from '../store.js';
import { round, type ScenarioContext, type ScenarioOutcome, Stopwatch } from './context.js';
import { answersCorrectly, type Probe } from './model.js';
import { verifiedOutcome } from './outcome.js';

/** Ids per delete call. */
const DELETE_BATCH = 1_000;

export async function accidentalDelete(ctx: ScenarioContext): Promise<ScenarioOutcome> {
  const sw = new Stopwatch();
  const store = join(ctx.dir, 'store');
  const restored = join(ctx.dir, 'restored');
  await sw.step('copy', () => ctx.copy(store));
  const problems: string[] = [];
  const figures: Record<string, number> = {};
  const doomed = ctx.main.ids.filter((_, i) => i % 10 === 0);
  const db = await open(store, { create: false });
  let rtoMs: number | null = null;
  let probe: Probe | undefined;
  try {
    // A snapshot is what PITR starts from (an operator schedules them: open({ snapshots })).
    await sw.step('snapshot', () => db.snapshot());
    const col = db.collection(ctx.main.name);
    const row = await col.get(doomed[0]!);
    if (!row) throw new Error(`accidental-delete: row '${doomed[0]}' is missing before the delete`);
    probe = { collection: ctx.main.name, id: doomed[0]!, vector: row.vector, metadata: JSON.stringify(row.metadata) };
    const before = db.lastSeq;
    await sw.step('delete 10%', async () => {
      for (let i = 0; i < doomed.length; i += DELETE_BATCH) await col.delete(doomed.slice(i, i + DELETE_BATCH));
    });
    figures.deletedRows = doomed.length;
    if (await col.get(doomed[0]!)) problems.push('the delete did not take effect');
    // The store stays open and in use: restore reads it without its lock.
    const t0 = performance.now();
    const r = await sw.step('restore to before the delete', () => restore({ source: store, target: restored, to: { seq: before } }));
    figures.filesCloned = r.files.cloned;
    figures.filesLinked = r.files.linked;
    figures.filesCopied = r.files.copied;
    figures.replayedRecords = r.replayedRecords;
    const back = await open(restored, { create: false });
    try {
      if (await answersCorrectly(back.collection(ctx.main.name), probe)) rtoMs = round(performance.now() - t0);
      else problems.push('the first query on the restored store did not find a deleted row');
      sw.steps.push({ name: 'open + first query', ms: rtoMs === null ? 0 : round(rtoMs - (sw.steps.at(-1)?.ms ?? 0)) });
    } finally {
      await back.close();
    }
  } finally {
    await db.close();
  }
  return verifiedOutcome(ctx, sw, restored, problems, 'restored rows differ from the pre-delete state', {
    rtoMs,
    declaredLoss: 'the delete itself (rolled back on purpose); later writes must be replayed by hand',
    automatic: false,
    mechanism: 'restore({ source, target, to: { seq } }): newest snapshot linked + WAL replayed',
    figures,
  });
}
