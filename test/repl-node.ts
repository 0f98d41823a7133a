// A replication node as its own child process (test/fixtures/repl-node.mjs), shared by the
// replication test files: JSON requests in on stdin, JSON replies and events out on stdout.
// Every node still running after a test is SIGKILLed.
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { afterEach, expect } from 'vitest';

import { onLines } from './child-lines.js';

const NODE = fileURLToPath(new URL('./fixtures/repl-node.mjs', import.meta.url));
const nodes: ChildProcess[] = [];

afterEach(() => {
  for (const c of nodes.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

export type Reply = Record<string, unknown> & { ok?: boolean; error?: { code: string; message: string; seq?: string; durableOn?: string[] } };

/** A node process: JSON requests in, JSON replies and events out. */
export class ReplNode {
  readonly proc: ChildProcess;
  readonly lines: Reply[] = [];
  #next = 1;
  #wake: Array<() => void> = [];
  stderr = '';
  readonly exited: Promise<void>;

  /** Starts fixtures/repl-node.mjs with `config` (its token, role, dir, node id, ...). */
  constructor(config: Record<string, unknown>) {
    this.proc = spawn(process.execPath, [NODE, JSON.stringify(config)], { stdio: ['pipe', 'pipe', 'pipe'] });
    nodes.push(this.proc);
    onLines(this.proc.stdout!, (line) => {
      if (!line) return;
      this.lines.push(JSON.parse(line) as Reply);
      for (const w of this.#wake.splice(0)) w();
    });
    this.proc.stderr?.setEncoding('utf8');
    this.proc.stderr?.on('data', (s: string) => (this.stderr += s));
    this.exited = new Promise((resolve) =>
      this.proc.on('close', () => {
        for (const w of this.#wake.splice(0)) w();
        resolve();
      }),
    );
  }

  /** The first line `pred` accepts (waiting at most `timeoutMs`). */
  async line(pred: (l: Reply) => boolean, timeoutMs = 30_000): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.lines.find(pred);
      if (found) return found;
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) throw new Error(`node exited: ${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`no expected line within ${timeoutMs} ms; stderr: ${this.stderr}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 200);
        this.#wake.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  ready(): Promise<Reply> {
    return this.line((l) => l.event === 'ready');
  }

  async request(op: string, args: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<Reply> {
    const id = this.#next++;
    this.proc.stdin?.write(`${JSON.stringify({ id, op, ...args })}\n`);
    return this.line((l) => l.id === id, timeoutMs);
  }

  /** `request`, requiring ok: true. */
  async ok(op: string, args: Record<string, unknown> = {}): Promise<Reply> {
    const r = await this.request(op, args);
    expect(r.ok, `${op}: ${JSON.stringify(r.error)}`).toBe(true);
    return r;
  }

  async kill(): Promise<void> {
    this.proc.kill('SIGKILL');
    await this.exited;
  }

  /** Asks the node to close its store and exit; resolves with its reply once it is gone. */
  async close(): Promise<Reply> {
    const r = await this.request('close');
    await this.exited;
    return r;
  }
}
