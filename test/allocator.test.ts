// Vector blocks and link lists ask for transparent huge pages, which make searches faster
// (crates/cairn-core/src/mapped.rs; the allocator's own arena stays in small pages:
// crates/cairn-node/src/allocator.rs), unless MIMALLOC_ALLOW_THP=0, for deployments where a fresh
// process's open matters more (on the project's VMs 2 MiB faults made opens slow and erratic).
// Each case is a fresh process that opens a store, writes and indexes 20,000 128-d rows (about
// 20 MB of rows and graph), reopens it, and reports the allocator's setting and its own
// AnonHugePages. Where the kernel hands out huge pages only on request (`madvise`, a common
// default), a process that asked for none holds none.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { describe, expect, test } from 'vitest';

import { tempDir } from './helpers.js';

const CAIRN = fileURLToPath(new URL('../packages/cairn/dist/index.js', import.meta.url));
const NATIVE = fileURLToPath(new URL('../packages/cairn/dist/native.js', import.meta.url));
const THP_POLICY = '/sys/kernel/mm/transparent_hugepage/enabled';
/** The kernel's THP policy, the bracketed word of the file ('always', 'madvise', 'never'). */
const policy = existsSync(THP_POLICY) ? (/\[(\w+)\]/.exec(readFileSync(THP_POLICY, 'utf8'))?.[1] ?? 'unknown') : 'absent';

const CHILD = `
import { readFileSync } from 'node:fs';
const { open } = await import(${JSON.stringify(CAIRN)});
const { nativeModule } = await import(${JSON.stringify(NATIVE)});
const dir = process.argv[1];
let db = await open(dir, { sync: 'none' });
const col = await db.createCollection('c', { dim: 128, metric: 'l2' });
const vectors = new Float32Array(20000 * 128).map((_, i) => Math.sin(i * 0.37));
const ids = Array.from({ length: 20000 }, (_, i) => 'row-' + i);
await col.upsert({ ids, vectors });
await col.waitForIndex();
await db.close();
db = await open(dir);
const hits = await db.collection('c').query(vectors.subarray(0, 128), { k: 1 });
const smaps = readFileSync('/proc/self/smaps_rollup', 'utf8');
const anonHugeKb = Number(/AnonHugePages:\\s+(\\d+)/.exec(smaps)?.[1] ?? -1);
console.log(JSON.stringify({ allowed: nativeModule.allocatorHugePages(), anonHugeKb, first: hits[0]?.id }));
await db.close();
`;

function runChild(env: NodeJS.ProcessEnv): Promise<{ allowed: boolean; anonHugeKb: number; first: string }> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', CHILD, tempDir()], { env, timeout: 120_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`child failed: ${err.message}\n${stderr}`));
      resolve(JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}'));
    });
  });
}

describe('allocator', () => {
  test('huge_pages_are_asked_for_by_default', async () => {
    const env = { ...process.env };
    delete env.MIMALLOC_ALLOW_THP;
    const r = await runChild(env);
    expect(r.first).toBe('row-0');
    expect(r.allowed).toBe(true);
  }, 180_000);

  test('MIMALLOC_ALLOW_THP_0_leaves_the_process_without_any', async () => {
    const r = await runChild({ ...process.env, MIMALLOC_ALLOW_THP: '0' });
    expect(r.first).toBe('row-0');
    expect(r.allowed).toBe(false);
    if (policy === 'madvise') expect(r.anonHugeKb).toBe(0);
    else console.log(`THP policy '${policy}': AnonHugePages ${r.anonHugeKb} kB not asserted (only 'madvise' gives huge pages on request alone)`);
  }, 180_000);
});
