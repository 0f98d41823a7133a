/**
 * The three-node cluster the cluster scenarios run: real `startNode` child processes
 * (`cluster-node.ts`) on 127.0.0.1 over the drill's etcd. n1 starts on a copy of the source
 * store and takes the leader key first; n2 and n3 start empty once it has (they catch up from
 * it, as when a cluster is bootstrapped from an existing store). Every line a node prints is kept
 * with the parent's monotonic receive time, across restarts.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import type { ScenarioContext } from './context.js';
import { type DrillEtcd, startEtcd } from './etcd.js';
import { freePort } from './free-port.js';

const NODE = fileURLToPath(new URL('./cluster-node.js', import.meta.url));
const IDS = ['n1', 'n2', 'n3'];
/** etcd's smallest lease (whole seconds, at least 2). */
export const LEASE_TTL_MS = 2000;
/** How long a takeover may take before the scenario fails: generous, so a slow one (a new
 *  primary opening a large store) is measured rather than cut off. */
export const TAKEOVER_TIMEOUT_MS = 120_000;
const TOKEN = 'cairn-drill-cluster-token-0123456789abcdef';

interface Line {
  event?: string;
  role?: string;
  id?: string;
  at: number;
  [k: string]: unknown;
}

export class DrillNode {
  readonly id: string;
  readonly dir: string;
  proc!: ChildProcess;
  lines: Line[] = [];
  readonly #config: string;
  #next = 1;
  stderr = '';

  constructor(id: string, dir: string, config: Record<string, unknown>) {
    this.id = id;
    this.dir = dir;
    this.#config = JSON.stringify(config);
  }

  start(): void {
    this.lines = [];
    this.proc = spawn(process.execPath, [NODE, this.#config], { stdio: ['pipe', 'pipe', 'pipe'] });
    createInterface({ input: this.proc.stdout! }).on('line', (l) => {
      try {
        this.lines.push({ ...(JSON.parse(l) as object), at: performance.now() });
      } catch {
        // Not a protocol line.
      }
    });
    this.proc.stderr!.on('data', (d) => {
      this.stderr = (this.stderr + d).slice(-4000);
    });
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  get role(): string | undefined {
    return this.lines.filter((l) => l.event === 'role').at(-1)?.role;
  }

  acks(): Line[] {
    return this.lines.filter((l) => l.event === 'ack');
  }

  async request(op: string, args: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<Line> {
    const id = `q${this.#next++}`;
    this.proc.stdin!.write(`${JSON.stringify({ id, op, ...args })}\n`);
    const deadline = performance.now() + timeoutMs;
    for (let i = 0; i < 100_000 && performance.now() < deadline; i++) {
      const found = this.lines.find((l) => l.id === id && l.event === undefined);
      if (found) return found;
      if (!this.alive) throw new Error(`node ${this.id} exited: ${this.stderr.trim()}`);
      await sleep(20);
    }
    throw new Error(`node ${this.id}: no answer to ${op} within ${timeoutMs} ms`);
  }

  async kill(signal: 'SIGKILL'): Promise<void> {
    if (!this.alive) return;
    const gone = new Promise<void>((resolve) => this.proc.once('close', () => resolve()));
    this.proc.kill(signal);
    await gone;
  }
}

export class DrillCluster {
  readonly nodes: DrillNode[] = [];
  /** Acknowledged ids of every incarnation of every node. */
  readonly #earlier: string[] = [];
  #etcd: DrillEtcd | undefined;

  static async start(ctx: ScenarioContext): Promise<DrillCluster> {
    const c = new DrillCluster();
    try {
      await c.#boot(ctx);
    } catch (e) {
      await c.stop();
      throw e;
    }
    return c;
  }

  async #boot(ctx: ScenarioContext): Promise<void> {
    this.#etcd = await startEtcd(join(ctx.dir, 'etcd'));
    await ctx.copy(join(ctx.dir, 'n1'));
    for (const id of IDS) {
      const dir = join(ctx.dir, id);
      await mkdir(dir, { recursive: true });
      const node = new DrillNode(id, dir, {
        dir,
        nodeId: id,
        cluster: 'drill',
        listen: `127.0.0.1:${await freePort()}`,
        etcd: [this.#etcd.url],
        voters: IDS,
        token: TOKEN,
        leaseTtlMs: LEASE_TTL_MS,
        writeConcern: { w: 'majority', timeoutMs: 3000 },
        collection: ctx.main.name,
        dim: ctx.main.dim,
      });
      this.nodes.push(node);
    }
    // n1 holds the data: it must win the first election, or it would be fenced for holding
    // records the winner lacks. It takes the leader key first; the others then follow it.
    const [first, ...rest] = this.nodes;
    first!.start();
    const deadline = performance.now() + 60_000;
    for (let i = 0; i < 100_000 && first!.role !== 'candidate' && first!.role !== 'primary'; i++) {
      if (performance.now() > deadline || !first!.alive) throw new Error(`n1 did not campaign within 60 s: ${this.describe()} ${first!.stderr.trim()}`);
      await sleep(20);
    }
    for (const n of rest) n.start();
  }

  /** Each node's role and last loop error, for a failure's message. */
  describe(): string {
    return this.nodes
      .map((n) => {
        const err = n.lines.filter((l) => l.event === 'error').at(-1)?.error;
        return `${n.id}=${n.alive ? (n.role ?? '?') : 'down'}${err ? ` (${String(err)})` : ''}`;
      })
      .join('; ');
  }

  restart(n: DrillNode): void {
    this.#earlier.push(...n.acks().map((l) => l.id as string));
    n.start();
  }

  ackedIds(): string[] {
    return [...this.#earlier, ...this.nodes.flatMap((n) => n.acks().map((l) => l.id as string))];
  }

  /** The first acknowledgement received after `since` from a node other than `exclude`. */
  async firstAckAfter(since: number, timeoutMs: number, exclude?: DrillNode): Promise<{ node: DrillNode; at: number }> {
    const deadline = performance.now() + timeoutMs;
    for (let i = 0; i < 100_000 && performance.now() < deadline; i++) {
      for (const n of this.nodes) {
        if (n === exclude) continue;
        const a = n.acks().find((l) => l.at > since);
        if (a) return { node: n, at: a.at };
      }
      await sleep(10);
    }
    throw new Error(`no write acknowledged within ${timeoutMs} ms: ${this.describe()}`);
  }

  /** The primary once it has acknowledged `minAcks` writes (bounded wait). */
  async servingPrimary(minAcks: number, timeoutMs: number): Promise<DrillNode> {
    const deadline = performance.now() + timeoutMs;
    for (let i = 0; i < 100_000 && performance.now() < deadline; i++) {
      const p = this.nodes.find((n) => n.alive && n.role === 'primary' && n.acks().length >= minAcks);
      if (p) return p;
      await sleep(20);
    }
    throw new Error(
      `no primary acknowledging writes within ${timeoutMs} ms: ${this.nodes.map((n) => `${n.id}=${n.role ?? '?'} ${n.stderr.trim()}`).join('; ')}`,
    );
  }

  /** Wait until `n` follows the primary again ('replica') or refuses to ('fenced': it holds
   *  records past the fork and needs reseeding by hand); returns that role. */
  async settled(n: DrillNode, timeoutMs: number): Promise<string> {
    const deadline = performance.now() + timeoutMs;
    for (let i = 0; i < 100_000 && performance.now() < deadline; i++) {
      if (n.role === 'replica' || n.role === 'fenced') return n.role;
      await sleep(20);
    }
    throw new Error(`node ${n.id} did not rejoin within ${timeoutMs} ms (role ${n.role ?? '?'}): ${n.stderr.trim()}`);
  }

  /** Stop the writers; the acknowledged writes missing on the primary (RPO). */
  async lostOnPrimary(): Promise<{ acked: number; missing: string[] }> {
    const live = this.nodes.filter((n) => n.alive && n.role !== 'fenced');
    for (const n of live) await n.request('stop-writes');
    const ids = this.ackedIds();
    const primary = live.find((n) => n.role === 'primary');
    if (!primary) throw new Error(`no primary at the end: ${this.nodes.map((n) => `${n.id}=${n.role ?? '?'}`).join(' ')}`);
    const r = await primary.request('check', { ids }, 60_000);
    return { acked: ids.length, missing: r.missing as string[] };
  }

  async stop(): Promise<void> {
    for (const n of this.nodes) {
      if (!n.proc) continue;
      await n.kill('SIGKILL');
    }
    await this.#etcd?.stop();
  }
}
