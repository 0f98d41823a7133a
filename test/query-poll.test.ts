// While a `query` is outstanding, the event loop polls for its answer (a chain of setImmediate)
// instead of sleeping until the query worker wakes it (packages/cairn/src/query-poll.ts). The
// chain is counted in a fresh child process, where nothing else schedules immediates: with the
// default `queryPollMicros` a query is polled for, with 0 it is not, and once the answer has
// arrived the loop stops polling. Answers are the same either way, and the option is checked.
import { execFile } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';

import { open } from 'cairndb';
import { describe, expect, test } from 'vitest';

import { rejectsWith, tempDir } from './helpers.js';

const CAIRN = fileURLToPath(new URL('../packages/cairn/dist/index.js', import.meta.url));

const CHILD = `
import { createHook } from 'node:async_hooks';
const { open } = await import(${JSON.stringify(CAIRN)});
const [dir, pollArg] = process.argv.slice(1);
const options = pollArg === 'default' ? {} : { queryPollMicros: Number(pollArg) };
const db = await open(dir, { sync: 'none', ...options });
const col = await db.createCollection('c', { dim: 16, metric: 'l2' });
const vectors = new Float32Array(5000 * 16).map((_, i) => Math.sin(i * 0.37));
await col.upsert({ ids: Array.from({ length: 5000 }, (_, i) => 'r' + i), vectors });
await col.waitForIndex();
let immediates = 0;
createHook({ init(_id, type) { if (type === 'Immediate') immediates++; } }).enable();
const during = [];
const answers = [];
for (let i = 0; i < 20; i++) {
  const before = immediates;
  const hits = await col.query(vectors.subarray(i * 16, i * 16 + 16), { k: 3, exact: i % 2 === 1 });
  during.push(immediates - before);
  answers.push(hits.map((h) => h.id));
}
const before = immediates;
await new Promise((r) => setTimeout(r, 50));
const after = immediates - before;
console.log(JSON.stringify({ during, after, answers }));
await db.close();
`;

interface ChildReport {
  /** Immediates created while each query was outstanding. */
  during: number[];
  /** Immediates created in the 50 ms after the last answer. */
  after: number;
  answers: string[][];
}

function runChild(poll: string): Promise<ChildReport> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', CHILD, tempDir(), poll], { timeout: 120_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`child failed: ${err.message}\n${stderr}`));
      resolve(JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}'));
    });
  });
}

describe('query polling', () => {
  test('the_loop_polls_while_a_query_is_outstanding_and_stops_once_it_is_answered', async () => {
    const polled = await runChild('default');
    const unpolled = await runChild('0');
    // The loop polled for the answers; with polling off it never did. (Not every query needs a
    // poll of its own: an answer posted while the previous one is being dispatched is taken in
    // the same dispatch.) One core: the query worker needs it, so nothing polls.
    const total = polled.during.reduce((a, b) => a + b, 0);
    expect(total >= 1, `immediates per query: ${polled.during}`).toBe(availableParallelism() > 1);
    expect(unpolled.during).toEqual(polled.during.map(() => 0));
    // Nothing keeps spinning after the answers.
    expect(polled.after).toBe(0);
    expect(unpolled.after).toBe(0);
    // Polling changes when an answer is seen, never what it is.
    expect(polled.answers).toEqual(unpolled.answers);
    expect(polled.answers.every((a) => a.length === 3)).toBe(true);
  }, 180_000);

  test('queryPollMicros_is_checked_and_names_the_option', async () => {
    for (const bad of [-1, 1.5, '1000', 100_001, Number.NaN]) {
      const err = await rejectsWith(open(tempDir(), { queryPollMicros: bad as number }), 'CAIRN_INVALID_ARGUMENT');
      expect(err.message).toContain('options.queryPollMicros');
    }
    const db = await open(tempDir(), { queryPollMicros: 0 });
    await db.close();
  });
});
