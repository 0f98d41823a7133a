/**
 * index-loss: delete every persisted HNSW graph file, reopen, and query while the graph is
 * rebuilt in the background. RTO: from the reopen to the first correct answer (queries scan the
 * rows not yet in the graph exactly, so they are correct meanwhile); `graphMs`: until every
 * row is in the graph again.
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { LAYOUT } from '../layout.js';
import { open } from '../store.js';
import { round, type ScenarioContext, type ScenarioOutcome, Stopwatch } from './context.js';
import { answersCorrectly } from './model.js';
import { verifiedOutcome } from './outcome.js';

/** Probe queries checked while the graph is rebuilt, at most (each scans the pending rows
 *  exactly, so more would slow the rebuild it measures). */
const QUERIES_WHILE_REBUILDING = 20;

export async function indexLoss(ctx: ScenarioContext): Promise<ScenarioOutcome> {
  const sw = new Stopwatch();
  const store = join(ctx.dir, 'store');
  await sw.step('copy', () => ctx.copy(store));
  const data = join(store, LAYOUT.data);
  const graphs = (await readdir(data)).filter((n) => n.endsWith(LAYOUT.graphExt));
  await sw.step('delete graph files', () => Promise.all(graphs.map((n) => rm(join(data, n)))));
  const problems: string[] = [];
  if (graphs.length === 0) problems.push('the source has no persisted graph file (never checkpointed with its index built)');
  const t0 = performance.now();
  const db = await open(store, { create: false });
  let rtoMs: number | null = null;
  let graphMs = 0;
  let during = 0;
  let wrongDuring = 0;
  let pendingAtOpen = 0;
  try {
    const col = db.collection(ctx.main.name);
    pendingAtOpen = col.indexStats().pending;
    if (await answersCorrectly(col, ctx.model.probes[0]!)) rtoMs = round(performance.now() - t0);
    else problems.push('the first query after reopening did not find the probe row');
    sw.steps.push({ name: 'reopen + first query', ms: rtoMs ?? 0 });
    // Queries stay correct while rows wait for the graph.
    for (let i = 0; i < QUERIES_WHILE_REBUILDING && col.indexStats().pending > 0; i++) {
      during++;
      if (!(await answersCorrectly(col, ctx.model.probes[i % ctx.model.probes.length]!))) wrongDuring++;
    }
    if (wrongDuring > 0) problems.push(`${wrongDuring} of ${during} queries during the rebuild missed their probe row`);
    await sw.step('graph rebuilt', async () => {
      for (const c of db.collections()) await db.collection(c.name).waitForIndex();
    });
    graphMs = round(performance.now() - t0);
    const stats = col.indexStats();
    if (stats.pending !== 0 || stats.indexed < ctx.main.ids.length) problems.push(`graph holds ${stats.indexed} rows, ${stats.pending} pending`);
    if (!(await answersCorrectly(col, ctx.model.probes[ctx.model.probes.length - 1]!))) problems.push('a query through the rebuilt graph missed its probe row');
  } finally {
    await db.close();
  }
  return verifiedOutcome(ctx, sw, store, problems, 'rows changed', {
    rtoMs,
    mechanism: 'open(): graph rebuilt from the vectors in the background; pending rows scanned exactly',
    figures: { graphFilesDeleted: graphs.length, graphMs, pendingAtOpen, queriesWhileRebuilding: during },
  });
}
