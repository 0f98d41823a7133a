/**
 * The Jepsen-style failover harness the failover tests share: a real etcd (Debian's
 * etcd-server, started on free loopback ports with a temporary data dir), three nodes as child
 * processes (test/fixtures/failover-node.mjs) each running a writer loop at w: 'majority' that
 * reports every acknowledged write with its epoch and node, optional TCP proxies
 * (test/tcp-proxy.ts) in front of each node's replication port and between each node and etcd,
 * and the checker: every acknowledged write on the final primary and on a majority; one node per
 * epoch, epochs' acknowledgements in epoch order and never overlapping in time.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { ETCD_BINARY, spawnEtcd } from '../packages/cairn/dist/drill/etcd.js';
import { freePort } from '../packages/cairn/dist/drill/free-port.js';
import { onLines } from './child-lines.js';
import { TcpProxy } from './tcp-proxy.js';

export { freePort };

const NODE = fileURLToPath(new URL('./fixtures/failover-node.mjs', import.meta.url));
export const CLI = fileURLToPath(new URL('../packages/cairn/dist/cli.js', import.meta.url));
export const haveEtcd = existsSync(ETCD_BINARY);
export const TOKEN = 'failover-test-token-0123456789abcdef0123';
export const TTL = 2000;
export const IDS = ['n1', 'n2', 'n3'];

export type Line = Record<string, unknown> & { event?: string; id?: unknown };
export interface Ack {
  node: string;
  id: string;
  epoch: string;
  epochAfter: string;
  seq: string;
  wall: number;
}

export const running: ChildProcess[] = [];
const proxies: TcpProxy[] = [];
let etcdProc: ChildProcess | undefined;
/** The shared etcd and the temporary root of this test file (set by `useEtcd`). */
export const env = { etcdUrl: '', root: '' };

/** An etcd on loopback with its data in `dataDir` (ports kept, so it can be restarted). */
export async function startEtcd(dataDir: string, client: number, peer: number): Promise<ChildProcess> {
  return (await spawnEtcd(dataDir, client, peer)).process;
}

/** Wait (bounded: 50 ms polls, at most `timeoutMs`) until `cond` holds; false if it never did. */
export async function until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
    if (cond()) return true;
    await sleep(50);
  }
  return cond();
}

/** Start one etcd for the test file and kill every child and proxy after each test. */
export function useEtcd(): void {
  beforeAll(async () => {
    env.root = mkdtempSync(join(tmpdir(), 'cairn-failover-'));
    if (!haveEtcd) return;
    const client = await freePort();
    env.etcdUrl = `http://127.0.0.1:${client}`;
    etcdProc = await startEtcd(join(env.root, 'etcd'), client, await freePort());
  }, 30_000);

  afterAll(() => {
    etcdProc?.kill('SIGKILL');
    if (env.root) rmSync(env.root, { recursive: true, force: true });
  });

  afterEach(async () => {
    for (const c of running.splice(0)) {
      if (c.signalCode === 'SIGSTOP') c.kill('SIGCONT');
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }
    for (const p of proxies.splice(0)) await p.close();
  });
}

export class Node {
  readonly id: string;
  readonly dir: string;
  readonly config: Record<string, unknown>;
  proc!: ChildProcess;
  lines: Line[] = [];
  #next = 1;
  stderr = '';

  constructor(id: string, dir: string, config: Record<string, unknown>) {
    this.id = id;
    this.dir = dir;
    this.config = config;
  }

  start(): void {
    this.proc = spawn(process.execPath, [NODE, JSON.stringify(this.config)], { stdio: ['pipe', 'pipe', 'pipe'] });
    running.push(this.proc);
    onLines(this.proc.stdout!, (line) => {
      if (line) this.lines.push(JSON.parse(line) as Line);
    });
    this.proc.stderr?.setEncoding('utf8');
    this.proc.stderr?.on('data', (s: string) => (this.stderr += s));
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  roles(): Line[] {
    return this.lines.filter((l) => l.event === 'role');
  }

  get role(): string | undefined {
    return this.roles().at(-1)?.role as string | undefined;
  }

  async request(op: string, args: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<Line> {
    const id = `r${this.#next++}`;
    this.proc.stdin?.write(`${JSON.stringify({ id, op, ...args })}\n`);
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < 10_000; i++) {
      const found = this.lines.find((l) => l.id === id);
      if (found) return found;
      if (!this.alive) throw new Error(`${this.id} exited: ${this.stderr}`);
      if (Date.now() > deadline) break;
      await sleep(50);
    }
    throw new Error(`${this.id}: no answer to ${op} within ${timeoutMs} ms`);
  }

  async kill(signal: NodeJS.Signals): Promise<void> {
    const exited = new Promise<void>((resolve) => this.proc.once('close', () => resolve()));
    this.proc.kill(signal);
    await exited;
  }
}

export interface ClusterOptions {
  /** Put a TcpProxy in front of each node's replication port and between each node and etcd. */
  proxies?: boolean;
  leaseTtlMs?: number;
  writeTimeoutMs?: number;
}

export class Cluster {
  readonly nodes: Node[];
  readonly name: string;
  /** Every line earlier incarnations of the nodes printed. */
  readonly #old: Line[] = [];

  readonly etcd: string;
  readonly #opts: ClusterOptions;
  /** With `proxies`: per node id, the proxy in front of its replication port (what it
   *  advertises) and the one between it and etcd. */
  readonly links = new Map<string, { replication: TcpProxy; etcd: TcpProxy }>();

  constructor(name: string, etcd = env.etcdUrl, opts: ClusterOptions = {}) {
    this.name = name;
    this.etcd = etcd;
    this.nodes = [];
    this.#opts = opts;
  }

  get ttl(): number {
    return this.#opts.leaseTtlMs ?? TTL;
  }

  async start(): Promise<void> {
    await this.create();
    for (const n of this.nodes) n.start();
  }

  /** The three nodes, configured but not started. */
  async create(): Promise<void> {
    const etcdPort = Number(new URL(this.etcd).port);
    for (const id of IDS) {
      const listenPort = await freePort();
      let advertise: string | undefined;
      let etcd = this.etcd;
      if (this.#opts.proxies) {
        const replication = await TcpProxy.start(listenPort);
        const toEtcd = await TcpProxy.start(etcdPort);
        proxies.push(replication, toEtcd);
        this.links.set(id, { replication, etcd: toEtcd });
        advertise = replication.address;
        etcd = `http://${toEtcd.address}`;
      }
      const node = new Node(id, join(env.root, this.name, id), {
        dir: join(env.root, this.name, id),
        nodeId: id,
        cluster: this.name,
        listen: `127.0.0.1:${listenPort}`,
        ...(advertise ? { advertise } : {}),
        etcd: [etcd],
        voters: IDS,
        token: TOKEN,
        leaseTtlMs: this.ttl,
        writeConcern: { w: 'majority', timeoutMs: this.#opts.writeTimeoutMs ?? 3000 },
      });
      this.nodes.push(node);
    }
  }

  /** The links of node `n` (a cluster started with `proxies`). */
  link(n: Node): { replication: TcpProxy; etcd: TcpProxy } {
    const l = this.links.get(n.id);
    if (!l) throw new Error(`cluster ${this.name} has no proxies`);
    return l;
  }

  acks(): Ack[] {
    return this.lines('ack') as unknown as Ack[];
  }

  /** Wall-clock times of the acknowledgements `which` accepts. */
  ackWalls(which: (a: Ack) => boolean): number[] {
    return this.acks()
      .filter(which)
      .map((a) => a.wall);
  }

  /** Every line of `event` any incarnation of any node printed. */
  lines(event: string): Line[] {
    return [...this.#old, ...this.nodes.flatMap((n) => n.lines)].filter((l) => l.event === event);
  }

  /** Restart a node process (same dir); its earlier lines are kept. */
  restart(n: Node): void {
    this.#old.push(...n.lines);
    n.lines = [];
    n.start();
  }

  /** The node that is primary with acknowledged writes in its current epoch (bounded wait). */
  async servingPrimary(minAcks: number, timeoutMs = 20_000, exclude?: Node): Promise<{ node: Node; epoch: string }> {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
      for (const n of this.nodes) {
        if (!n.alive || n === exclude || n.role !== 'primary') continue;
        const epoch = n.roles().at(-1)?.epoch as string;
        if (n.lines.filter((l) => l.event === 'ack' && l.epoch === epoch).length >= minAcks) return { node: n, epoch };
      }
      await sleep(50);
    }
    throw new Error(`no primary acknowledging writes within ${timeoutMs} ms: ${this.nodes.map((n) => `${n.id}=${n.role}`).join(' ')}`);
  }

  /** Stop every writer, then check every acknowledged id on each live node. */
  async verify(): Promise<{ acked: number; onAll: string[] }> {
    const live = this.nodes.filter((n) => n.alive && n.role !== 'fenced');
    for (const n of live) await n.request('stop-writes');
    const acks = this.acks();
    const ids = acks.map((a) => a.id);
    // A role change may still be settling (a demotion right after a nemesis): wait, bounded.
    const deadline = Date.now() + 30_000;
    for (let i = 0; i < 1000 && Date.now() < deadline && !live.some((n) => n.role === 'primary'); i++) await sleep(50);
    const primary = live.find((n) => n.role === 'primary');
    expect(primary, `a primary at the end: ${this.nodes.map((n) => `${n.id}=${n.role}`).join(' ')}`).toBeDefined();
    const complete: string[] = [];
    for (const n of live) {
      const r = await n.request('check', { ids }, 60_000);
      expect(r.ok, JSON.stringify(r)).toBe(true);
      const missing = r.missing as string[];
      if (n === primary) expect(missing, `acknowledged writes missing on the primary ${n.id} (${String(r.lastError)})`).toEqual([]);
      if (missing.length === 0) complete.push(n.id);
    }
    expect(complete.length, `nodes holding every acknowledged write: ${complete.join(', ')}`).toBeGreaterThanOrEqual(2);
    checkEpochs(acks);
    return { acked: ids.length, onAll: complete };
  }
}

/** One node per epoch; an epoch's acknowledgements all precede the next epoch's. */
export function checkEpochs(acks: Ack[]): void {
  const byEpoch = new Map<bigint, Ack[]>();
  for (const a of acks) {
    expect(a.epochAfter, `ack ${a.id} changed epoch while in flight`).toBe(a.epoch);
    const e = BigInt(a.epoch);
    byEpoch.set(e, [...(byEpoch.get(e) ?? []), a]);
  }
  const epochs = [...byEpoch.keys()].sort((a, b) => (a < b ? -1 : 1));
  let prevLast = Number.NEGATIVE_INFINITY;
  for (const e of epochs) {
    const list = byEpoch.get(e) as Ack[];
    expect(new Set(list.map((a) => a.node)).size, `epoch ${e} acknowledged by ${[...new Set(list.map((a) => a.node))].join(', ')}`).toBe(1);
    const first = Math.min(...list.map((a) => a.wall));
    expect(first, `epoch ${e} acknowledged before the previous epoch's last acknowledgement`).toBeGreaterThan(prevLast);
    prevLast = Math.max(...list.map((a) => a.wall));
  }
}

/** The first 'role: primary' line of `epoch` on any node after `since` (wall ms). */
export function promotedAt(c: Cluster, since: number): { node: string; epoch: string; wall: number } | undefined {
  const lines = c.nodes.flatMap((n) => n.roles()).filter((l) => l.role === 'primary' && (l.wall as number) > since);
  const l = lines.sort((a, b) => (a.wall as number) - (b.wall as number))[0];
  return l ? { node: l.node as string, epoch: l.epoch as string, wall: l.wall as number } : undefined;
}

export async function runCli(args: string[], timeoutMs: number): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  running.push(p);
  let stdout = '';
  let stderr = '';
  p.stdout?.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  p.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
  const status = await new Promise<number | null>((resolve) => p.on('close', (code) => resolve(code)));
  clearTimeout(timer);
  return { status, stdout, stderr };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}
