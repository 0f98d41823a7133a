/**
 * segment-corruption: flip bytes in the middle of the largest checkpoint data file of an open
 * store; a scrub with repair finds the file and replaces it (from an identical copy, or
 * rewritten by the engine from its verified rows). RTO: from the damage to the first correct
 * answer after the repair. A second scrub must then find nothing.
 */
import { open as openFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { LAYOUT } from '../layout.js';
import { open } from '../store.js';
import { round, type ScenarioContext, type ScenarioOutcome, Stopwatch } from './context.js';
import { answersCorrectly } from './model.js';
import { verifiedOutcome } from './outcome.js';

/** Bytes flipped, spread over the file's middle half. */
const FLIPS = 3;

export async function segmentCorruption(ctx: ScenarioContext): Promise<ScenarioOutcome> {
  const sw = new Stopwatch();
  const store = join(ctx.dir, 'store');
  await sw.step('copy', () => ctx.copy(store));
  const problems: string[] = [];
  const db = await open(store, { create: false });
  let rtoMs: number | null = null;
  const figures: Record<string, number> = {};
  try {
    const data = join(store, LAYOUT.data);
    let victim: { name: string; size: number } | undefined;
    for (const name of await readdir(data)) {
      if (!name.endsWith(LAYOUT.dataExt)) continue;
      const { size } = await stat(join(data, name));
      if (!victim || size > victim.size) victim = { name, size };
    }
    if (!victim) throw new Error('segment-corruption: the source has no checkpoint data file (never checkpointed)');
    const rel = `${LAYOUT.data}/${victim.name}`;
    figures.damagedFileBytes = victim.size;
    const t0 = performance.now();
    const fh = await openFile(join(data, victim.name), 'r+');
    try {
      for (let i = 0; i < FLIPS; i++) {
        const at = Math.floor(victim.size / 4 + ((i + 0.5) * victim.size) / (2 * FLIPS));
        const b = Buffer.alloc(1);
        await fh.read(b, 0, 1, at);
        b[0]! ^= 0xff;
        await fh.write(b, 0, 1, at);
      }
      await fh.datasync();
    } finally {
      await fh.close();
    }
    const report = await sw.step('scrub with repair', () => db.scrub({ repair: true }));
    figures.scrubbedBytes = report.bytes;
    if (!report.corrupt.some((c) => c.file === rel)) problems.push(`scrub did not report ${rel}`);
    if (!report.repaired.some((r) => r.file === rel)) problems.push(`scrub did not repair ${rel}`);
    for (const u of report.unrepaired) problems.push(`scrub left ${u.file} unrepaired: ${u.reason}`);
    const col = db.collection(ctx.main.name);
    if (await answersCorrectly(col, ctx.model.probes[0]!)) rtoMs = round(performance.now() - t0);
    else problems.push('the first query after the repair did not find the probe row');
    const again = await sw.step('scrub again', () => db.scrub({ repair: false }));
    if (again.corrupt.length > 0) problems.push(`a second scrub still finds damage: ${again.corrupt.map((c) => c.file).join(', ')}`);
  } finally {
    await db.close();
  }
  return verifiedOutcome(ctx, sw, store, problems, 'rows changed', {
    rtoMs,
    mechanism: 'scrub({ repair: true }) (scheduled with open({ scrub })): quarantine, replace from a copy or the engine',
    figures,
  });
}
