// A real write failure poisons the store: a child runs under a file-size limit (`ulimit -f`,
// RLIMIT_FSIZE, no root needed), so appending a record larger than the limit fails with EFBIG.
// The failed write is not acknowledged, later writes are refused with CAIRN_POISONED, reads go
// on working, nothing is retried, and a reopen (without the limit) recovers every acknowledged
// write and nothing else.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { open } from 'cairndb';
import { describe, expect, test } from 'vitest';

import { tempDir } from './helpers.js';

const CHILD = fileURLToPath(new URL('./fixtures/poison-child.mjs', import.meta.url));

interface ChildReport {
  acked: Array<{ id: string; seq: string }>;
  rejected: Array<{ id: string; code: string }>;
  lastSeqBefore: string;
  huge: string;
  hugeMessage?: string;
  poisoned: string | null;
  lastSeqAfter: string;
  later: string;
  batch: string;
  checkpoint: string;
  read: { metadata: unknown; first: number } | null;
  count: number;
  query: string[];
  close: string;
}

/** 2048 blocks: 1 MiB where `ulimit -f` counts 512-byte blocks (dash), 2 MiB where 1 KiB (bash). */
function runLimited(dir: string, sync: string): Promise<{ report: ChildReport; code: number | null; signal: string | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', 'ulimit -f 2048 && exec "$0" "$@"', process.execPath, CHILD, dir, sync], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      try {
        resolve({ report: JSON.parse(stdout) as ChildReport, code, signal, stderr });
      } catch {
        reject(new Error(`child (code ${code}, signal ${signal}) printed no report: ${stdout}\n${stderr}`));
      }
    });
  });
}

describe.each(['always', 'group'] as const)('write failure, sync %s', (sync) => {
  test(`efbig_write_poisons_store_and_reopen_recovers_acknowledged_writes_${sync}`, async () => {
    const dir = tempDir('cairn-poison-');
    const { report: r, code, signal, stderr } = await runLimited(dir, sync);
    expect([code, signal], stderr).toEqual([0, null]);

    // The failing commit is refused, never acknowledged, and the reason names the I/O error.
    expect(r.huge).toBe('CAIRN_POISONED');
    expect(r.poisoned).toMatch(/File too large|os error 27/);
    expect(r.hugeMessage).toContain(r.poisoned!);
    expect(r.lastSeqAfter).toBe(r.lastSeqBefore);
    // Commits queued behind it, and every later write, are refused: nothing is retried.
    expect(r.acked.map((a) => a.id)).toEqual(['a', 'bb', 'ccc']);
    expect(r.rejected.map((x) => x.code)).toEqual(['CAIRN_POISONED', 'CAIRN_POISONED', 'CAIRN_POISONED']);
    expect([r.later, r.batch, r.checkpoint]).toEqual(['CAIRN_POISONED', 'CAIRN_POISONED', 'CAIRN_POISONED']);
    // Reads go on working.
    expect(r.read).toEqual({ metadata: { id: 'bb' }, first: 2 });
    expect(r.count).toBe(3);
    expect(r.query).toEqual(['ccc']);

    // Reopened without the limit: exactly the acknowledged writes, and a working store.
    const db = await open(dir);
    try {
      expect(db.poisoned).toBeNull();
      expect(db.lastSeq).toBe(BigInt(r.lastSeqBefore));
      // The partial record the failed write() left behind is a torn tail, truncated.
      expect(db.recoveryReport.tornTail?.file).toMatch(/[/\\]wal[/\\]\d{20}\.wal$/);
      expect(db.recoveryReport.skipped).toEqual([]);
      const docs = db.collection('docs');
      expect(await docs.count()).toBe(3);
      for (const { id } of r.acked) expect((await docs.get(id))?.metadata).toEqual({ id });
      for (const { id } of r.rejected) expect(await docs.get(id)).toBeUndefined();
      expect(await docs.get('later')).toBeUndefined();
      expect(await db.collection('big').count()).toBe(0);
      const { seq } = await docs.upsert([{ id: 'after', vector: new Float32Array(8) }]);
      expect(seq).toBe(BigInt(r.lastSeqBefore) + 1n);
    } finally {
      await db.close();
    }
  });
});
