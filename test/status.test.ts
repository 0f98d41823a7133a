// `cairn status` and `cairn range` read a store without its lock, so they work while another
// process writes it; the recoverable range carries real commit times, and a --time outside it is
// refused with the range in ISO form.
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { open } from 'cairndb';
import { describe, expect, test } from 'vitest';

import { storeChild, tempDir } from './helpers.js';

const CLI = fileURLToPath(new URL('../packages/cairn/dist/cli.js', import.meta.url));

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function cliAsync(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

const ISO = /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/;

describe('status and range', () => {
  test('status_reads_a_store_held_open_by_a_writing_child', async () => {
    const dir = join(tempDir('status-live'), 'store');
    const before = Date.now();
    const db = await open(dir);
    const docs = await db.createCollection('docs', { dim: 8, metric: 'l2' });
    await docs.upsert([{ id: 'seed', vector: new Float32Array(8).fill(1) }]);
    await db.snapshot();
    await db.close();

    const child = storeChild(['hold', dir, 'always', '40']);
    const lines = await child.waitFor((l) => l === 'ready');
    const acked = lines.filter((l) => l.startsWith('A ')).map((l) => BigInt(l.split(' ')[2]!));
    const lastAcked = acked[acked.length - 1]!;

    const r = cli('status', dir, '--json');
    expect(r.status, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s.openElsewhere).toBe(true);
    expect(BigInt(s.lastSeq)).toBeGreaterThanOrEqual(lastAcked);
    expect(s.walRecordsAfterCheckpoint).toBeGreaterThanOrEqual(acked.length);
    // Counts are current: the seed row plus every acknowledged write in the WAL after the checkpoint.
    expect(s.collections).toEqual([{ name: 'docs', dim: 8, metric: 'l2', count: 1 + acked.length, checkpointRecords: 1, dataFiles: 1, unreadable: 0 }]);
    expect(s.snapshots).toHaveLength(1);
    expect(s.range.from.seq).toBe('0');
    expect(Date.parse(s.range.from.time)).toBeGreaterThanOrEqual(before - 1000);
    expect(BigInt(s.range.to.seq)).toBeGreaterThanOrEqual(lastAcked);
    expect(s.disk.wal).toBeGreaterThan(0);
    expect(s.disk.data).toBeGreaterThan(0);
    expect(s.disk.snapshots).toBeGreaterThan(0);
    for (const k of ['archive', 'graph', 'quarantine']) expect(typeof s.disk[k]).toBe('number');

    const text = cli('status', dir);
    expect(text.status).toBe(0);
    expect(text.stdout).toContain('(open in another process)');
    expect(text.stdout).toMatch(new RegExp(`docs: 8d l2, ${1 + acked.length} rows`));
    expect(text.stdout).toMatch(/disk: wal .* archive .* data .* graph .* snapshots .* quarantine /);

    const range = cli('range', dir);
    expect(range.status, range.stderr).toBe(0);
    expect(range.stdout).toMatch(new RegExp(`^recoverable: seq 0 \\(${ISO.source}\\) \\.\\. seq \\d+ \\(${ISO.source}\\)\\n$`));
    await child.kill();

    // Closed cleanly by nobody: the lock is free now.
    expect(JSON.parse(cli('status', dir, '--json').stdout).openElsewhere).toBe(false);
  });

  test('status_counts_match_the_model_at_the_seq_read_while_a_child_writes_deletes_and_checkpoints', async () => {
    const dir = join(tempDir('status-churn'), 'store');
    // More ops than the reads below need, so the child is still writing during every read,
    // however slow the host; the test stops it after its reads.
    const total = 1_000_000;
    const child = storeChild(['churn', dir, String(total)]);
    const acks = () => child.lines.filter((l) => l.startsWith('A ')).map((l) => l.split(' ').map(Number) as [number, number, number]);
    await child.waitFor((l) => l.startsWith('A 0 '));
    // Rows after ops 0..n-1: op i upserts c<i>, except that each i % 4 == 3 deletes c<i-2>.
    const rowsAfter = (n: number) => n - 2 * Math.floor(n / 4);
    const base = acks()[0]![2]; // seq of op 0; ops commit one at a time, so op i has seq base + i
    let reads = 0;
    for (let round = 0; round < 200 && reads < 8 && !child.lines.includes('done'); round++) {
      const ackedBefore = acks().length;
      const r = await cliAsync('status', dir, '--json');
      expect(r.status, r.stderr).toBe(0);
      const s = JSON.parse(r.stdout);
      const ops = Number(BigInt(s.lastSeq)) - base + 1;
      // At least every write acknowledged before the read started, and only writes the child
      // goes on to acknowledge (it may not have printed the last one yet).
      expect(ops).toBeGreaterThanOrEqual(ackedBefore);
      if (ops > 0) await child.waitFor((l) => l.startsWith(`A ${ops - 1} `));
      expect(acks()[ops - 1]![2]).toBe(base + ops - 1);
      expect(s.collections).toHaveLength(1);
      expect(s.collections[0].count, `at seq ${s.lastSeq}`).toBe(rowsAfter(ops));
      reads++;
    }
    expect(reads).toBe(8);
    await child.kill();
  });

  test('last_scrub_result_is_on_disk_for_status_and_http_status_and_a_damaged_record_is_reported', async () => {
    const dir = join(tempDir('status-scrub'), 'store');
    const db = await open(dir);
    const docs = await db.createCollection('docs', { dim: 4, metric: 'l2' });
    await docs.upsert([1, 2, 3].map((i) => ({ id: `r${i}`, vector: [i, 0, 0, 0] })));
    await db.checkpoint();
    await db.close();
    expect(JSON.parse(cli('status', dir, '--json').stdout).lastScrub).toBeNull();
    expect(cli('status', dir).stdout).toContain('last scrub: none recorded');

    const scrubbed = cli('scrub', dir, '--json');
    expect(scrubbed.status, scrubbed.stderr).toBe(0);
    const report = JSON.parse(scrubbed.stdout);
    const s = JSON.parse(cli('status', dir, '--json').stdout);
    expect(s.lastScrubError).toBeNull();
    expect(s.lastScrub).toMatchObject({ files: report.files, bytes: report.bytes, corrupt: 0, repaired: 0, unrepaired: 0, repair: false });
    expect(s.lastScrub.bytes).toBeGreaterThan(0);
    expect(Math.abs(Date.parse(s.lastScrub.time) - Date.now())).toBeLessThan(120_000);
    expect(cli('status', dir).stdout).toMatch(new RegExp(`last scrub: ${ISO.source}, ${report.files} files, .* 0 corrupt, 0 repaired, 0 unrepaired`));

    // Another process's /status shows the scrub recorded on disk.
    const again = await open(dir, { create: false });
    const server = await again.serveHttp({ listen: '127.0.0.1:0' });
    try {
      const st = await (await fetch(`${server.url}/status`)).json();
      expect(st.lastScrub).toMatchObject({ files: report.files, bytes: report.bytes, corrupt: 0, unrepaired: 0 });
      expect((await fetch(`${server.url}/health`)).status).toBe(200);
    } finally {
      await server.close();
      await again.close();
    }

    // A flipped bit in the record is reported as such, never read as a result.
    const path = join(dir, 'SCRUB_RESULT');
    const bytes = readFileSync(path);
    bytes[40] = (bytes[40] as number) ^ 0x01;
    writeFileSync(path, bytes);
    const bad = JSON.parse(cli('status', dir, '--json').stdout);
    expect(bad.lastScrub).toBeNull();
    expect(bad.lastScrubError).toMatch(/^CAIRN_CORRUPTION/);
  });

  test('range_starts_at_the_first_commit_time_and_earlier_times_are_refused_in_iso', async () => {
    const root = tempDir('range-times');
    const dir = join(root, 'store');
    const before = Date.now();
    const db = await open(dir);
    const docs = await db.createCollection('docs', { dim: 2 });
    await docs.upsert([{ id: 'a', vector: [1, 0] }]);
    const range = await db.recoverableRange();
    await db.close();
    expect(range.from.seq).toBe(0n);
    expect(range.from.time.getTime()).toBeGreaterThanOrEqual(before - 1000);
    expect(range.from.time.getTime()).toBeLessThanOrEqual(range.to.time.getTime());

    for (const time of ['2020-01-01', new Date(range.to.time.getTime() + 60_000).toISOString()]) {
      const r = cli('restore', dir, join(root, `r-${time.slice(0, 4)}`), '--time', time);
      expect(r.status, time).toBe(1);
      expect(r.stderr).toMatch(/^cairn: CAIRN_INVALID_ARGUMENT: time .* is outside the recoverable range: seq 0\.\.2 \(time /);
      expect(r.stderr).toContain(`${range.from.time.toISOString()}..${range.to.time.toISOString()}`);
      expect(r.stderr).not.toMatch(/ ms\)/);
    }
    const ok = cli('restore', dir, join(root, 'r-ok'), '--time', range.from.time.toISOString(), '--json');
    expect(ok.status, ok.stderr).toBe(0);
  });
});
