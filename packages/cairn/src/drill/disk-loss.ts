/**
 * disk-loss: back the store up to a file:// target in the scratch area (a full backup, more
 * acknowledged writes, then an incremental one: the newest backup holds its snapshot chain and
 * WAL), remove the store's directory entirely, restore the newest backup into its place and
 * open it. RTO: from the loss to the first correct answer. RPO: acknowledged writes up to the
 * newest backup that are missing or different (0); writes after it are lost by design.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';

import { BackupManager } from '../backup/manager.js';
import { open } from '../store.js';
import { round, type ScenarioContext, type ScenarioOutcome, Stopwatch, verifyModel } from './context.js';
import { answersCorrectly } from './model.js';
import { scenarioOutcome } from './outcome.js';
import { drillWriteRecord, holdsDrillWrite } from './writer.js';

/** Rows written between the full and the incremental backup. */
const WRITES_BETWEEN = 200;

export async function diskLoss(ctx: ScenarioContext): Promise<ScenarioOutcome> {
  const sw = new Stopwatch();
  const store = join(ctx.dir, 'store');
  const target = pathToFileURL(join(ctx.dir, 'backups')).href;
  await sw.step('copy', () => ctx.copy(store));
  const problems: string[] = [];
  const figures: Record<string, number> = {};
  const written: string[] = [];
  const db = await open(store, { create: false });
  let newest: string;
  try {
    const backups = new BackupManager({ source: db, target });
    const full = await sw.step('full backup', () => backups.create({ kind: 'full' }));
    figures.fullBackupBytes = full.bytes.raw;
    const col = db.collection(ctx.main.name);
    for (let i = 0; i < WRITES_BETWEEN; i++) {
      const id = `drill-disk-${i}`;
      await col.upsert([{ id, ...drillWriteRecord(id, ctx.main.dim) }]);
      written.push(id);
    }
    const inc = await sw.step('incremental backup', () => backups.create({ kind: 'incremental' }));
    newest = inc.id;
  } finally {
    await db.close();
  }
  const t0 = performance.now();
  await sw.step('lose the directory', () => rm(store, { recursive: true, force: true }));
  let rtoMs: number | null = null;
  const r = await sw.step('restore the newest backup', () => new BackupManager({ source: store, target }).restore(newest, store));
  figures.filesLinked = r.files.linked + r.files.cloned;
  figures.filesCopied = r.files.copied;
  const back = await open(store, { create: false });
  let lost = 0;
  try {
    const col = back.collection(ctx.main.name);
    if (await answersCorrectly(col, ctx.model.probes[0]!)) rtoMs = round(performance.now() - t0);
    else problems.push('the first query on the restored store did not find the probe row');
    for (const id of written) {
      const same = await holdsDrillWrite(col, id, ctx.main.dim);
      if (!same) lost++;
    }
    if (lost > 0) problems.push(`${lost} of ${written.length} writes acknowledged before the newest backup are missing or different`);
  } finally {
    await back.close();
  }
  const { lost: lostRows } = await verifyModel(
    ctx,
    sw,
    store,
    problems,
    'restored rows differ',
    (c, id) => c === ctx.main.name && id.startsWith('drill-disk-'),
  );
  figures.writesBetweenBackups = written.length;
  return scenarioOutcome(sw, problems, {
    rtoMs,
    rpo: lost + lostRows,
    declaredLoss: 'writes acknowledged after the newest backup (none in this drill)',
    automatic: false,
    mechanism: 'BackupManager.restore(newest): verify-while-writing, then restore() links the files',
    figures,
  });
}
