// Progress: the callbacks behind the CLI's byte bars never report more than their total and end
// at it (scrub's total is the exact set of bytes it reads: hard-linked snapshot files once, the
// active WAL segment not at all); on a terminal the commands draw cli-progress bars, and with a
// pipe or --json they print nothing on stderr.
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { BackupManager, exportSnapshot, importSnapshot, open, recoverableRange, restore, type ScrubProgress, scrub } from 'cairndb';
import { describe, expect, test } from 'vitest';

import { tempDir } from './helpers.js';

const CLI = fileURLToPath(new URL('../packages/cairn/dist/cli.js', import.meta.url));

/** A store with a full and incremental snapshots (hard links), an archived WAL, several data
 *  files per collection and an active WAL segment; closed. */
async function busyStore(dir: string): Promise<void> {
  const db = await open(dir, { walSegmentBytes: 1 << 20 });
  const docs = await db.createCollection('docs', { dim: 32 });
  const other = await db.createCollection('other', { dim: 4, metric: 'l2' });
  let n = 0;
  const vec = (d: number) => Float32Array.from({ length: d }, (_, i) => Math.sin(n * 31 + i));
  for (let round = 0; round < 4; round++) {
    for (let b = 0; b < 10; b++) {
      await docs.upsert(Array.from({ length: 40 }, () => ({ id: `d${n++}`, vector: vec(32), metadata: { round } })));
      await other.upsert([{ id: `o${n++}`, vector: vec(4) }]);
    }
    await db.snapshot({ incremental: round > 0 });
  }
  await docs.upsert(Array.from({ length: 40 }, () => ({ id: `t${n++}`, vector: vec(32) })));
  await db.close();
}

function checkRun(seen: ScrubProgress[]): void {
  expect(seen.length).toBeGreaterThan(0);
  let last = 0;
  for (const p of seen) {
    expect(p.bytes).toBeLessThanOrEqual(p.totalBytes);
    expect(p.files).toBeLessThanOrEqual(p.totalFiles);
    expect(p.bytes).toBeGreaterThanOrEqual(last);
    last = p.bytes;
  }
  const end = seen.at(-1)!;
  expect(end.totalBytes).toBeGreaterThan(1_000_000);
  // Reading an intact store reads exactly the total: it is the byte set scrub reads.
  expect(end.bytes).toBe(end.totalBytes);
}

/** Reports of one run: the total is the same in every report (known before the first byte),
 *  bytes only grow and never pass it, and the last report is exactly the total. */
function checkBytes(seen: Array<{ bytes: number; totalBytes: number }>, name: string): number {
  expect(seen.length, name).toBeGreaterThan(0);
  const total = seen[0]!.totalBytes;
  let last = 0;
  for (const p of seen) {
    expect(p.totalBytes, name).toBe(total);
    expect(p.bytes, name).toBeLessThanOrEqual(total);
    expect(p.bytes, name).toBeGreaterThanOrEqual(last);
    last = p.bytes;
  }
  expect(seen.at(-1)!.bytes, name).toBe(total);
  return total;
}

async function moreRows(dir: string, n: number): Promise<void> {
  const db = await open(dir, { create: false });
  const docs = db.collection('docs');
  await docs.upsert(
    Array.from({ length: n }, (_, i) => ({ id: `more${Date.now()}-${i}`, vector: Float32Array.from({ length: 32 }, (_, j) => Math.cos(i + j)) })),
  );
  await db.close();
}

function run(args: string[], env: NodeJS.ProcessEnv = process.env) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env, timeout: 120_000 });
}

/** Run the CLI under a pseudo-terminal (util-linux `script`), returning what the terminal showed. */
function onTty(args: string[]): { status: number | null; screen: string } {
  const cmd = [process.execPath, CLI, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const r = spawnSync('script', ['-qefc', cmd, '/dev/null'], { encoding: 'utf8', env: { ...process.env, TERM: 'xterm', COLUMNS: '160' }, timeout: 120_000 });
  return { status: r.status, screen: r.stdout };
}

describe('progress', () => {
  test('scrub_progress_never_passes_its_total_and_ends_at_it_open_and_offline', async () => {
    const dir = join(tempDir('progress-scrub'), 'store');
    await busyStore(dir);
    const offline: ScrubProgress[] = [];
    const r1 = await scrub(dir, { concurrency: 2, onProgress: (p) => offline.push(p) });
    expect(r1.corrupt).toEqual([]);
    checkRun(offline);

    const db = await open(dir, { create: false });
    try {
      const live: ScrubProgress[] = [];
      // Throttled, so that the 200 ms reports fall in the middle of the reading too.
      const r2 = await db.scrub({ concurrency: 2, throttleMBps: 8, onProgress: (p) => live.push(p) });
      expect(r2.corrupt).toEqual([]);
      checkRun(live);
      expect(live.some((p) => p.bytes > 0 && p.bytes < p.totalBytes)).toBe(true);
    } finally {
      await db.close();
    }
  });

  test('backup_verify_and_restore_progress_stay_within_and_end_at_their_totals', async () => {
    const root = tempDir('progress-backup');
    const dir = join(root, 'store');
    await busyStore(dir);
    const backups = new BackupManager({ source: dir, target: `file://${join(root, 'target')}` });
    try {
      const made = await backups.create({ kind: 'full' });
      const id = made.id;
      const seen: Array<{ bytes: number; totalBytes: number }> = [];
      const report = await backups.verify(id, { onProgress: (p) => seen.push(p) });
      expect(report.ok).toBe(true);
      for (const p of seen) expect(p.bytes).toBeLessThanOrEqual(p.totalBytes);
      expect(seen.at(-1)!.bytes).toBe(seen.at(-1)!.totalBytes);
      expect(seen.at(-1)!.totalBytes).toBeGreaterThan(500_000);

      const phases: Array<{ phase: string; bytes: number; totalBytes: number }> = [];
      await backups.restore(id, join(root, 'restored'), { onProgress: (p) => phases.push(p) });
      for (const p of phases) expect(p.bytes).toBeLessThanOrEqual(p.totalBytes);
      expect(new Set(phases.map((p) => p.phase))).toEqual(new Set(['write', 'restore']));
      const lastRestore = phases.filter((p) => p.phase === 'restore').at(-1)!;
      expect(lastRestore.bytes).toBe(lastRestore.totalBytes);
      expect(lastRestore.totalBytes).toBeGreaterThan(0);
      const lastWrite = phases.filter((p) => p.phase === 'write').at(-1)!;
      expect(lastWrite.bytes).toBe(lastWrite.totalBytes);
    } finally {
      await backups.close();
    }
  });

  test('pitr_restore_progress_stays_within_and_ends_at_its_total', async () => {
    const root = tempDir('progress-restore');
    const dir = join(root, 'store');
    await busyStore(dir);
    const range = await recoverableRange(dir);
    for (const [name, to] of [
      ['latest', undefined],
      ['middle', { seq: (range.from.seq + range.to.seq) / 2n }],
    ] as const) {
      const seen: Array<{ bytes: number; totalBytes: number }> = [];
      await restore({ source: dir, target: join(root, `r-${name}`), ...(to ? { to } : {}), onProgress: (p) => seen.push(p) });
      expect(seen.length, name).toBeGreaterThan(0);
      for (const p of seen) expect(p.bytes).toBeLessThanOrEqual(p.totalBytes);
      expect(seen.at(-1)!.totalBytes, name).toBeGreaterThan(100_000);
      expect(seen.at(-1)!.bytes, name).toBe(seen.at(-1)!.totalBytes);
    }
  });

  test('snapshot_export_and_import_progress_stay_within_and_end_at_their_totals', async () => {
    const root = tempDir('progress-snapshot');
    const dir = join(root, 'store');
    await busyStore(dir);
    const db = await open(dir, { create: false });
    let inc: Awaited<ReturnType<typeof db.snapshot>>;
    try {
      // A snapshot counts the files its checkpoint writes (named after the snapshot's seq; the
      // older files it links move no bytes); an incremental one also the archived WAL it checksums.
      const full: Array<{ bytes: number; totalBytes: number }> = [];
      const f = await db.snapshot({ onProgress: (p) => full.push(p) });
      const written = f.files.filter((x) => x.path.startsWith('data/') && x.path.includes(`-${String(f.seq).padStart(20, '0')}.`));
      expect(written.length).toBeGreaterThan(0);
      expect(checkBytes(full, 'full')).toBe(written.reduce((n, x) => n + x.bytes, 0));
      await db.collection('docs').upsert(Array.from({ length: 200 }, (_, i) => ({ id: `n${i}`, vector: Float32Array.from({ length: 32 }, (_, j) => i + j) })));
      const seen: Array<{ bytes: number; totalBytes: number }> = [];
      inc = await db.snapshot({ incremental: true, onProgress: (p) => seen.push(p) });
      const wal = inc.files.filter((x) => x.path.startsWith('wal/')).reduce((n, x) => n + x.bytes, 0);
      expect(wal).toBeGreaterThan(0);
      expect(checkBytes(seen, 'incremental')).toBeGreaterThan(wal);
      await expect(db.snapshot({ onProgress: 1 as never })).rejects.toMatchObject({
        code: 'CAIRN_INVALID_ARGUMENT',
        message: expect.stringContaining('options.onProgress'),
      });
    } finally {
      await db.close();
    }

    const file = join(root, 'chain.carc');
    const out: Array<{ bytes: number; totalBytes: number }> = [];
    const exported = await exportSnapshot({ dir, id: inc.id, file, onProgress: (p) => out.push(p) });
    // The total is every raw byte of the chain's files, read once.
    expect(checkBytes(out, 'export')).toBe(exported.rawBytes);
    expect(exported.rawBytes).toBeGreaterThan(500_000);

    const back: Array<{ bytes: number; totalBytes: number }> = [];
    const imported = await importSnapshot({ file, dir: join(root, 'imported'), onProgress: (p) => back.push(p) });
    expect(imported.snapshots.at(-1)).toBe(inc.id);
    // The total is the archive's size; it is read once, chunk by chunk.
    expect(checkBytes(back, 'import')).toBe(statSync(file).size);
    expect(back.length).toBeGreaterThan(2);
    await expect(importSnapshot({ file, dir: join(root, 'x'), onProgress: 'no' as never })).rejects.toMatchObject({ code: 'CAIRN_INVALID_ARGUMENT' });
  });

  test('cli_draws_bars_on_a_terminal_and_prints_nothing_on_a_pipe_or_with_json', async () => {
    const root = tempDir('progress-cli');
    const dir = join(root, 'store');
    await busyStore(dir);
    const url = `file://${join(root, 'target')}`;
    const env = { ...process.env, CAIRN_BACKUP_KEY: '' };

    // A pipe: results on stdout, nothing at all on stderr.
    const made = run(['backup', dir, '--to', url, '--json'], env);
    expect(made.status, made.stderr).toBe(0);
    expect(made.stderr).toBe('');
    const id = JSON.parse(made.stdout).id as string;
    await moreRows(dir, 100);
    const snaps = JSON.parse(run(['snapshots', dir, '--json']).stdout) as Array<{ id: string }>;
    const snapId = snaps.at(-1)!.id;
    for (const args of [
      ['snapshot', dir],
      ['snapshot-export', dir, snapId, join(root, 'pipe.carc')],
      ['snapshot-import', join(root, 'pipe.carc'), join(root, 'imported-pipe')],
      ['scrub', dir],
      ['backup', dir, '--to', url, '--kind', 'incremental'],
      ['verify', url, id],
      ['restore-backup', url, id, join(root, 'r-pipe')],
      ['restore', dir, join(root, 'pitr-pipe')],
    ]) {
      const r = run(args, env);
      expect(r.status, `${args[0]}: ${r.stderr}`).toBe(0);
      expect(r.stderr, args[0]).toBe('');
    }

    // A terminal: a bar per command, ending at 100% of its total.
    const tty = spawnSync('script', ['--version'], { encoding: 'utf8' });
    if (tty.status !== 0) throw new Error('util-linux script is needed for the terminal test');
    await moreRows(dir, 100);
    for (const [label, args] of [
      ['snapshot', ['snapshot', dir, '--incremental']],
      ['snapshot-export', ['snapshot-export', dir, snapId, join(root, 'tty.carc')]],
      ['snapshot-import', ['snapshot-import', join(root, 'tty.carc'), join(root, 'imported-tty')]],
      ['restore', ['restore', join(root, 'imported-tty'), join(root, 'from-archive')]],
      ['scrub', ['scrub', dir]],
      ['backup', ['backup', dir, '--to', url]],
      ['verify', ['verify', url, id]],
      ['restore-backup', ['restore-backup', url, id, join(root, 'r-tty')]],
      ['restore', ['restore', dir, join(root, 'pitr-tty')]],
    ] as const) {
      const r = onTty([...args]);
      expect(r.status, r.screen).toBe(0);
      expect(r.screen, label).toMatch(new RegExp(`${label} \\[[█░]+\\] 100% \\| (\\d+\\.\\d)/\\1 MB`));
    }
    // --json on a terminal: no bar.
    const quiet = onTty(['scrub', dir, '--json']);
    expect(quiet.status).toBe(0);
    expect(quiet.screen).not.toMatch(/scrub \[/);
    expect(JSON.parse(quiet.screen.replace(/\r/g, '')).files).toBeGreaterThan(0);
    // Nothing new to snapshot on a terminal: no bar, the command says so.
    const nothing = onTty(['snapshot', dir, '--incremental']);
    expect(nothing.status, nothing.screen).toBe(0);
    expect(nothing.screen).not.toMatch(/snapshot \[/);
    expect(nothing.screen).toContain('nothing new to snapshot');
  });
});
