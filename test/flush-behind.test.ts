// FlushBehind (packages/cairn/src/backup/flush-behind.ts), which a backup restore uses to make
// the files it writes durable while it is still writing them: on a real file, background
// fdatasyncs start every `every` bytes, never two at once, and `finish` ends with one more; a
// background fdatasync that fails is thrown by `finish` even when every later one succeeds
// (Linux reports a writeback error to one fdatasync only).

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';
// Internal module: not part of the package's API.
import { FlushBehind } from '../packages/cairn/dist/backup/flush-behind.js';

const MiB = 1 << 20;
let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

/** A real file whose datasync calls are counted (and, with `failFirst`, the first one fails). */
async function countedFile(failFirst = false) {
  dir = mkdtempSync(join(tmpdir(), 'cairn-flush-'));
  const path = join(dir, 'f');
  const fh: FileHandle = await open(path, 'w');
  const real = fh.datasync.bind(fh);
  const stats = { calls: 0, running: 0, maxRunning: 0 };
  fh.datasync = async () => {
    stats.calls++;
    stats.running++;
    stats.maxRunning = Math.max(stats.maxRunning, stats.running);
    try {
      await real();
      if (failFirst && stats.calls === 1) throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
    } finally {
      stats.running--;
    }
  };
  return { fh, path, stats };
}

test('background flushes start every `every` bytes, one at a time, and finish syncs what is left', async () => {
  const { fh, path, stats } = await countedFile();
  const flush = new FlushBehind(fh, 4 * MiB);
  const expected: Buffer[] = [];
  for (let i = 0; i < 20; i++) {
    const chunk = Buffer.alloc(MiB, i);
    await fh.write(chunk, 0, chunk.length, i * MiB);
    expected.push(chunk);
    flush.wrote(chunk.length);
  }
  await flush.finish();
  await fh.close();
  expect(stats.maxRunning).toBe(1);
  // 20 MiB at one flush per 4 MiB while none is running: between 1 and 5 background flushes,
  // then the final one.
  expect(stats.calls).toBeGreaterThanOrEqual(2);
  expect(stats.calls).toBeLessThanOrEqual(6);
  expect(readFileSync(path).equals(Buffer.concat(expected))).toBe(true);
});

test('below the threshold no background flush starts; finish syncs once', async () => {
  const { fh, stats } = await countedFile();
  const flush = new FlushBehind(fh, 4 * MiB);
  await fh.write(Buffer.alloc(MiB, 1), 0, MiB, 0);
  flush.wrote(MiB);
  expect(stats.calls).toBe(0);
  await flush.finish();
  await fh.close();
  expect(stats.calls).toBe(1);
});

test('a failed background flush is thrown by finish, not lost to the final fdatasync that would succeed', async () => {
  const { fh, stats } = await countedFile(true);
  const flush = new FlushBehind(fh, MiB);
  await fh.write(Buffer.alloc(2 * MiB, 7), 0, 2 * MiB, 0);
  flush.wrote(2 * MiB);
  expect(stats.calls).toBe(1);
  await flush.settled(); // never rejects, so a caller can close the file after it
  await expect(flush.finish()).rejects.toMatchObject({ code: 'EIO' });
  await fh.close();
});
