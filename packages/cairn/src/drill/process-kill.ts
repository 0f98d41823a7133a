/**
 * process-kill: SIGKILL a real child process while it writes, reopen the store, answer a query.
 * RTO: from the kill to the first correct answer (open and WAL replay included). RPO: writes the
 * child printed as acknowledged that are missing or different after recovery (must be 0).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { open } from '../store.js';
import { round, type ScenarioContext, type ScenarioOutcome, Stopwatch, verifyModel } from './context.js';
import { answersCorrectly } from './model.js';
import { scenarioOutcome } from './outcome.js';
import { holdsDrillWrite } from './writer.js';

/** Acknowledged writes to wait for before the kill, and the bounds on waiting. */
const ACKS_BEFORE_KILL = 500;
const LOAD_MS = 1_500;
const READY_TIMEOUT_MS = 60_000;

const WRITER = fileURLToPath(new URL('./writer.js', import.meta.url));

export async function processKill(ctx: ScenarioContext): Promise<ScenarioOutcome> {
  const sw = new Stopwatch();
  const store = join(ctx.dir, 'store');
  await sw.step('copy', () => ctx.copy(store));
  const acked: string[] = [];
  const child = spawn(process.execPath, [WRITER, store, ctx.main.name, String(ctx.main.dim)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => {
    stderr = (stderr + d).slice(-2000);
  });
  // 'close', not 'exit': every ack the child printed before it died is read first.
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  let killedAt = 0;
  try {
    await sw.step('load', () => underLoad(child, acked, () => stderr));
  } finally {
    killedAt = performance.now();
    child.kill('SIGKILL');
  }
  await exited;
  const problems: string[] = [];
  const db = await open(store, { create: false });
  let rtoMs: number | null = null;
  let lost = 0;
  try {
    const col = db.collection(ctx.main.name);
    if (await answersCorrectly(col, ctx.model.probes[0]!)) rtoMs = round(performance.now() - killedAt);
    else problems.push('the first query after reopening did not find the probe row');
    sw.steps.push({ name: 'reopen + first query', ms: rtoMs ?? 0 });
    await sw.step('check acknowledged writes', async () => {
      for (const id of acked) {
        const same = await holdsDrillWrite(col, id, ctx.main.dim);
        if (!same) {
          lost++;
          if (lost <= 5) problems.push(`acknowledged write '${id}' is missing or different after recovery`);
        }
      }
    });
  } finally {
    await db.close();
  }
  const { lost: lostRows, model: after } = await verifyModel(
    ctx,
    sw,
    store,
    problems,
    'rows written before the drill changed',
    (c, id) => c === ctx.main.name && id.startsWith('drill-kill-'),
  );
  return scenarioOutcome(sw, problems, {
    rtoMs,
    rpo: lost + lostRows,
    mechanism: 'open(): WAL replay from the last checkpoint (torn tail truncated)',
    figures: { acknowledgedWrites: acked.length, recoveredRows: after.rows },
  });
}

/** Resolve once the child has acknowledged enough writes (or written for `LOAD_MS`). */
function underLoad(child: ChildProcess, acked: string[], stderr: () => string): Promise<void> {
  return new Promise((resolve, reject) => {
    let readyAt = 0;
    const lines = createInterface({ input: child.stdout! });
    const fail = (why: string) => {
      clearTimeout(readyTimer);
      reject(new Error(`process-kill: the writer child ${why}: ${stderr().trim()}`));
    };
    const readyTimer = setTimeout(() => fail(`did not start writing within ${READY_TIMEOUT_MS} ms`), READY_TIMEOUT_MS);
    child.once('exit', (code, signal) => fail(`exited early (${signal ?? code})`));
    lines.on('line', (line) => {
      if (line === 'ready') {
        readyAt = performance.now();
        clearTimeout(readyTimer);
        setTimeout(resolve, LOAD_MS);
      } else if (line.startsWith('ack ')) {
        acked.push(line.slice(4));
        if (readyAt > 0 && acked.length >= ACKS_BEFORE_KILL && performance.now() - readyAt > 100) resolve();
      }
    });
  });
}
