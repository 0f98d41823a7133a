// SIGKILL during transaction commits: a child runs 8 concurrent transfer transactions (two
// accounts, a generation counter and an audit row each) and is killed at a random moment; the
// store is reopened and every transaction must be all or nothing: balances sum to the start,
// the audit rows are exactly generations 1..G with G the counter, each matching the accounts
// it moved, and every acknowledged generation is there.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { open } from 'cairndb';
import { describe, expect, test } from 'vitest';
import { childLines } from './child-lines.js';
import { prng } from './fixtures/records.mjs';
import { tempDir } from './helpers.js';

const CHILD = fileURLToPath(new URL('./fixtures/tx-crash-child.mjs', import.meta.url));
/** Kill-and-recover cycles; CAIRN_TX_CRASH_CYCLES changes it for a longer or shorter run. */
const CYCLES = Number(process.env.CAIRN_TX_CRASH_CYCLES ?? 200);
const SEED = Number(process.env.CAIRN_TX_CRASH_SEED ?? Date.now() % 1_000_000);
const ACCOUNTS = 10;
const START_BALANCE = 100;

interface Run {
  maxAcked: number;
  acks: number;
  opened: boolean;
  stderr: string;
  signal: NodeJS.Signals | null;
  code: number | null;
}

function runChild(dir: string, sync: string, seed: number, rand: () => number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, dir, sync, String(seed)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const run: Run = { maxAcked: 0, acks: 0, opened: false, stderr: '', signal: null, code: null };
    const kill = () => child.kill('SIGKILL');
    let killTimer: NodeJS.Timeout | undefined;
    // Some kills land anywhere from start-up on (during recovery, set-up, the first commits).
    if (rand() < 0.15) killTimer = setTimeout(kill, rand() * 300);
    const guard = setTimeout(kill, 20_000);
    const exit = childLines(child, (line) => {
      const [tag, a] = line.split(' ');
      if (tag === 'O') run.opened = true;
      if (tag === 'A') {
        run.acks++;
        run.maxAcked = Math.max(run.maxAcked, Number(a));
        killTimer ??= setTimeout(kill, rand() * 80);
      }
    });
    exit.then((e) => {
      clearTimeout(killTimer);
      clearTimeout(guard);
      resolve(Object.assign(run, e));
    }, reject);
  });
}

describe('transactions survive SIGKILL during commit', () => {
  test(
    'every_transaction_is_all_or_nothing_after_sigkill',
    async () => {
      const dir = tempDir('cairn-txcrash-');
      const rand = prng(SEED);
      let acked = 0;
      let acks = 0;
      let lastGen = 0;
      for (let cycle = 0; cycle < CYCLES; cycle++) {
        const sync = cycle % 4 === 3 ? 'always' : 'group';
        const run = await runChild(dir, sync, SEED + cycle, rand);
        expect(run.signal, `cycle ${cycle} (seed ${SEED}): child exited on its own: ${run.stderr}`).toBe('SIGKILL');
        acked = Math.max(acked, run.maxAcked);
        acks += run.acks;

        // A kill during start-up can land before the first child created anything: the
        // directory is still empty, which is right only if nothing was ever acknowledged.
        if (readdirSync(dir).length === 0) {
          expect(acked, `cycle ${cycle}: the store is gone after acknowledgements`).toBe(0);
          continue;
        }
        const db = await open(dir, { create: false });
        try {
          const names = db.collections().map((c) => c.name);
          if (!names.includes('acct') || !names.includes('audit')) {
            expect(acked, `cycle ${cycle}: set-up lost after acknowledgements`).toBe(0);
            continue;
          }
          const acct = db.collection('acct');
          const total = await acct.get('total');
          if (!total) {
            expect(acked).toBe(0);
            continue;
          }
          const gen = total.metadata.gen as number;
          expect(gen, `cycle ${cycle} (seed ${SEED}): acknowledged generation ${acked} lost`).toBeGreaterThanOrEqual(acked);
          expect(gen).toBeGreaterThanOrEqual(lastGen);
          lastGen = gen;
          const accounts = await acct.getMany(Array.from({ length: ACCOUNTS }, (_, i) => `a${i}`));
          const sum = accounts.reduce((s, a) => s + (a?.metadata.bal as number), 0);
          expect(sum, `cycle ${cycle} (seed ${SEED}): a transfer was applied in part`).toBe(ACCOUNTS * START_BALANCE);
          for (const a of accounts) expect(a?.metadata.gen as number).toBeLessThanOrEqual(gen);
          const audit = db.collection('audit');
          expect(await audit.count(), `cycle ${cycle} (seed ${SEED}): audit rows are not exactly generations 1..${gen}`).toBe(gen);
          if (gen > 0) {
            const last = await audit.get(`t${gen}`);
            expect(last?.metadata.gen).toBe(gen);
            // The newest transfer's accounts carry its generation: written with it, at one seq.
            const moved = await acct.getMany([`a${last?.metadata.from}`, `a${last?.metadata.to}`]);
            expect(moved.map((m) => m?.metadata.gen)).toEqual([gen, gen]);
          }
        } finally {
          await db.close();
        }
      }
      console.log(`tx crash: ${CYCLES} cycles, seed ${SEED}, ${acks} acknowledged transactions, final generation ${lastGen}`);
      expect(acks).toBeGreaterThan(CYCLES);
    },
    CYCLES * 3_000 + 60_000,
  );
});
