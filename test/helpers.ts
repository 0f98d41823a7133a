// Shared by the test files: temp dirs, a child process that holds a store open, and readers
// for the on-disk framing (docs/format.md) so tests can damage exact bytes.
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readdirSync, readSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { CairnError } from 'cairndb';
import { afterAll, afterEach, expect } from 'vitest';

const dirs: string[] = [];
const children: ChildProcess[] = [];

afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});
// After the file, not each test: a directory made in beforeAll must outlive the first test.
afterAll(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A fresh directory, removed after the test file. */
export function tempDir(prefix = 'cairn-test-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

const STORE_CHILD = fileURLToPath(new URL('./fixtures/store-child.mjs', import.meta.url));

export interface Child {
  /** Every complete line printed so far. */
  readonly lines: readonly string[];
  /** Resolves with every line printed up to and including the first one that `until` accepts. */
  waitFor(until: (line: string) => boolean): Promise<string[]>;
  /** SIGKILL, resolving once the process is gone. */
  kill(): Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

/** Run test/fixtures/store-child.mjs with these arguments; killed after the test at the latest. */
export function storeChild(args: string[]): Child {
  const proc = spawn(process.execPath, [STORE_CHILD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(proc);
  const lines: string[] = [];
  let partial = '';
  let stderr = '';
  let waiter: (() => void) | undefined;
  proc.stdout.setEncoding('utf8');
  proc.stdout.on('data', (s: string) => {
    const parts = (partial + s).split('\n');
    partial = parts.pop() ?? '';
    lines.push(...parts);
    waiter?.();
  });
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (s: string) => (stderr += s));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
    proc.on('close', (code, signal) => {
      resolve({ code, signal, stderr });
      waiter?.();
    }),
  );
  let done = false;
  void exited.then(() => (done = true));
  return {
    lines,
    exited,
    waitFor(until) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const i = lines.findIndex(until);
          if (i >= 0) resolve(lines.slice(0, i + 1));
          else if (done || proc.exitCode !== null || proc.signalCode !== null) reject(new Error(`child exited before the expected line: ${stderr}`));
        };
        waiter = check;
        check();
      });
    },
    async kill() {
      proc.kill('SIGKILL');
      await exited;
    },
  };
}

/** Await `p` and require a CairnError (any code); returns it for further checks. */
export async function rejection(p: Promise<unknown>, expected = 'expected a rejection with a CairnError'): Promise<CairnError> {
  let error: unknown;
  try {
    await p;
  } catch (e) {
    error = e;
  }
  expect(error, expected).toBeInstanceOf(CairnError);
  return error as CairnError;
}

/** Await `p` and require a CairnError with this code; returns it for further checks. */
export async function rejectsWith(p: Promise<unknown>, code: string): Promise<CairnError> {
  const error = await rejection(p, `expected a rejection with ${code}`);
  expect(error.code, error.message).toBe(code);
  return error;
}

export function walSegments(dir: string): string[] {
  return readdirSync(join(dir, 'wal'))
    .filter((n) => /^\d{20}\.wal$/.test(n))
    .sort()
    .map((n) => join(dir, 'wal', n));
}

export const WAL_SEGMENT_HEADER = 32;
const WAL_RECORD_HEADER = 24;

/** The valid-looking records of a WAL segment, in order, up to the zeroed (preallocated) tail. */
export function walRecords(buf: Buffer): Array<{ offset: number; len: number; seq: bigint }> {
  const out = [];
  let pos = WAL_SEGMENT_HEADER;
  while (pos + WAL_RECORD_HEADER <= buf.length) {
    const payload = buf.readUInt32LE(pos);
    const seq = buf.readBigUInt64LE(pos + 8);
    if (payload === 0 && seq === 0n) break;
    const len = WAL_RECORD_HEADER + Math.ceil(payload / 8) * 8 + 8;
    if (pos + len > buf.length) break;
    out.push({ offset: pos, len, seq });
    pos += len;
  }
  return out;
}

export const SEG_HEADER = 64;
const SEG_FOOTER = 32;

/** Records of a checkpoint file (`data/*.seg`): each starts with its total length (u32). */
export function segRecords(buf: Buffer): Array<{ offset: number; len: number }> {
  const out = [];
  for (let pos = SEG_HEADER; pos < buf.length - SEG_FOOTER; ) {
    const len = buf.readUInt32LE(pos);
    out.push({ offset: pos, len });
    pos += len;
  }
  return out;
}

/** Invert the byte in the middle of `path` in place (damage a file under an open store). */
export function flipMiddleByte(path: string): void {
  const fd = openSync(path, 'r+');
  try {
    const at = Math.floor(statSync(path).size / 2);
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0] = (b[0] as number) ^ 0xff;
    writeSync(fd, b, 0, 1, at);
  } finally {
    closeSync(fd);
  }
}
