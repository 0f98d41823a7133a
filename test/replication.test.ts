// Replication across processes on loopback: every node is its own child process
// (fixtures/repl-node.mjs) with an OS-chosen port; the test drives them over stdin and checks
// their stores against a reference model. Every loop is bounded in time and count.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { open } from 'cairndb';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../packages/cairn/dist/drill/free-port.js';
import { newNonce, proof } from '../packages/cairn/dist/replication/auth.js';
import { encodeFrame, FRAME_HEADER_LEN, FrameDecoder, FrameType, MAX_FRAME_PAYLOAD, OFF_LENGTH } from '../packages/cairn/dist/replication/frame.js';
import {
  decodeAuth,
  decodeChallenge,
  decodeError,
  decodeHello,
  encodeAuth,
  encodeChallenge,
  encodeHello,
  encodeReady,
  encodeWal,
} from '../packages/cairn/dist/replication/messages.js';
import { CHUNK_BYTES, MAX_IN_FLIGHT_BYTES } from '../packages/cairn/dist/replication/session.js';
import { STAGE_MIN_RECORDS } from '../packages/cairn/dist/upsert-payload.js';
import { mulberry32 as rng } from './fixtures/mulberry32.mjs';
import { tempDir } from './helpers.js';
import { ReplNode, type Reply } from './repl-node.js';

const CLI = fileURLToPath(new URL('../packages/cairn/dist/cli.js', import.meta.url));
const TOKEN = 'replication-test-token-0123456789abcdef';
const running: ChildProcess[] = [];
const servers: Server[] = [];

// A node that missed the collection's create record holds none of its ids.
function absentCollection(e: { code?: string }): undefined {
  if (e.code !== 'CAIRN_NOT_FOUND') throw e;
  return undefined;
}

afterEach(() => {
  for (const c of running.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const s of servers.splice(0)) s.close();
});

/** A node of this file (its token). */
class NodeProc extends ReplNode {
  constructor(config: Record<string, unknown>) {
    super({ token: TOKEN, ...config });
  }
}

describe('pause and follow (failover keeps a replica store open across role changes)', () => {
  it('a paused replica applies nothing more until it follows again, then catches up', async () => {
    const { node: p, address } = await startPrimary(tempDir('pause-p'), { w: 'local' });
    const n2 = await startReplica(tempDir('pause-r'), 'n2', address, { heartbeatMs: 50 });
    await p.ok('create', { name: 't', dim: 2 });
    await p.ok('upsert', { collection: 't', records: [{ id: 'a', vector: [1, 0] }] });
    const first = (await p.ok('status')).lastSeq as string;
    await n2.ok('waitFor', { seq: first });
    expect((await n2.ok('pause')).lastSeq).toBe(first);
    const later = ['b', 'c', 'd'];
    for (const id of later) await p.ok('upsert', { collection: 't', records: [{ id, vector: [2, 0] }] });
    const last = (await p.ok('status')).lastSeq as string;
    // Long enough for a connected replica to have received them many times over (50 ms beats).
    await new Promise((r) => setTimeout(r, 500));
    expect((await n2.ok('status')).lastSeq).toBe(first);
    expect((await n2.ok('has', { collection: 't', ids: later })).present).toEqual([]);
    await n2.ok('follow', { primary: address });
    await n2.ok('waitFor', { seq: last });
    expect((await n2.ok('has', { collection: 't', ids: ['a', ...later] })).present).toEqual(['a', ...later]);
  });
});

async function startPrimary(dir: string, extra: Record<string, unknown> = {}): Promise<{ node: NodeProc; address: string }> {
  const node = new NodeProc({ role: 'primary', dir, nodeId: 'n1', replicas: ['n2', 'n3'], ...extra });
  const r = await node.ready();
  return { node, address: r.address as string };
}

async function startReplica(dir: string, nodeId: string, primary: string, extra: Record<string, unknown> = {}): Promise<NodeProc> {
  const node = new NodeProc({ role: 'replica', dir, nodeId, primary, ...extra });
  await node.ready();
  return node;
}

/** Polls `check` (bounded) until it returns true. */
async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 10_000; i++) {
    if (await check()) return;
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not reached within ${timeoutMs} ms`);
}

type Row = { vector: number[]; metadata: Record<string, unknown> };

describe('replication', () => {
  it('frames_decode_across_any_chunk_boundaries', () => {
    const random = rng(3);
    const frames = Array.from({ length: 50 }, (_, i) => encodeFrame(FrameType.HEARTBEAT, randomBytes(Math.floor(random() * 300)), BigInt(i)));
    const stream = Buffer.concat(frames);
    for (let round = 0; round < 20; round++) {
      const decoder = new FrameDecoder();
      const got: Buffer[] = [];
      for (let pos = 0; pos < stream.length; ) {
        const n = 1 + Math.floor(random() * 200);
        for (const f of decoder.push(stream.subarray(pos, pos + n))) got.push(f.payload);
        pos += n;
      }
      decoder.finish();
      expect(got).toEqual(frames.map((f) => f.subarray(FRAME_HEADER_LEN)));
    }
    const cut = new FrameDecoder();
    expect(cut.push(stream.subarray(0, stream.length - 1)).length).toBe(49);
    expect(() => cut.finish()).toThrow(/closed inside a frame/);
  });

  it('cli_serve_and_replicate_follow_until_sigterm', async () => {
    const src = tempDir();
    const db = await open(src);
    const docs = await db.createCollection('docs', { dim: 4 });
    for (let i = 0; i < 5; i++) await docs.upsert([{ id: `r${i}`, vector: [i, 1, 1, 1] }]);
    const last = db.lastSeq;
    await db.close();
    const tokenFile = join(tempDir(), 'token');
    writeFileSync(tokenFile, `${TOKEN}\n`);
    const serve = spawn(
      process.execPath,
      [CLI, 'serve', src, '--replication', '127.0.0.1:0', '--replicas', 'n2', '--token-file', tokenFile, '--node-id', 'n1', '--json'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    running.push(serve);
    const first = await new Promise<string>((resolve) => serve.stdout?.once('data', (d: Buffer) => resolve(d.toString())));
    const address = (JSON.parse(first) as { serving: string }).serving;
    const dst = tempDir();
    let seen = 0n;
    for (let attempt = 0; attempt < 20 && seen !== last; attempt++) {
      const rep = spawn(process.execPath, [CLI, 'replicate', dst, '--primary', address, '--token-file', tokenFile, '--node-id', 'n2'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      running.push(rep);
      await new Promise<void>((resolve) => rep.stdout?.once('data', () => resolve()));
      await new Promise((r) => setTimeout(r, 300));
      const exited = new Promise<number | null>((resolve) => rep.on('close', (code) => resolve(code)));
      rep.kill('SIGTERM');
      expect(await exited).toBe(0);
      const copy = await open(dst);
      seen = copy.lastSeq;
      if (seen === last) expect((await copy.collection('docs').get('r4'))?.vector).toEqual(new Float32Array([4, 1, 1, 1]));
      await copy.close();
    }
    expect(seen).toBe(last);
    const served = new Promise<number | null>((resolve) => serve.on('close', (code) => resolve(code)));
    serve.kill('SIGINT');
    expect(await served).toBe(0);
  });

  it('replicas_equal_primary_and_model_under_random_workload', async () => {
    const { node: p, address } = await startPrimary(tempDir());
    const [n2, n3] = await Promise.all([startReplica(tempDir(), 'n2', address), startReplica(tempDir(), 'n3', address)]);
    const random = rng(11);
    const pick = <T>(xs: T[]): T => xs[Math.floor(random() * xs.length)] as T;
    const model = new Map<string, Map<string, Row>>();
    const ids = Array.from({ length: 25 }, (_, i) => `id${i}`);
    const record = (id: string): { id: string } & Row => ({
      id,
      vector: [Math.floor(random() * 100) / 2, 1, 2, 3],
      metadata: { v: Math.floor(random() * 1000) },
    });
    let created = 0;
    let drops = 0;
    for (let step = 0; step < 160; step++) {
      const colls = [...model.keys()];
      const dice = random();
      const w = random() < 0.3 ? { w: 'majority', timeoutMs: 20_000 } : {};
      if (colls.length === 0 || (dice < 0.05 && colls.length < 4)) {
        const name = `c${created++}`;
        await p.ok('create', { name, dim: 4 });
        model.set(name, new Map());
      } else if (dice < 0.08 && colls.length > 1) {
        const name = pick(colls);
        await p.ok('drop', { name });
        model.delete(name);
        drops++;
      } else if (dice < 0.55) {
        const c = pick(colls);
        const recs = new Map<string, { id: string } & Row>();
        for (let i = 1 + Math.floor(random() * 4); i > 0; i--) {
          const r = record(pick(ids));
          recs.set(r.id, r);
        }
        await p.ok('upsert', { collection: c, records: [...recs.values()], ...w });
        for (const r of recs.values()) model.get(c)?.set(r.id, { vector: r.vector, metadata: r.metadata });
      } else if (dice < 0.7) {
        const c = pick(colls);
        const present = [...(model.get(c)?.keys() ?? [])];
        if (present.length === 0) continue;
        const id = pick(present);
        await p.ok('delete', { collection: c, ids: [id], ...w });
        model.get(c)?.delete(id);
      } else if (dice < 0.95) {
        const a = pick(colls);
        const b = pick(colls);
        const r = record(pick(ids));
        const presentB = [...(model.get(b)?.keys() ?? [])].filter((id) => a !== b || id !== r.id);
        const ops: unknown[] = [{ collection: a, op: 'upsert', records: [r] }];
        const del = presentB.length > 0 ? pick(presentB) : null;
        if (del !== null) ops.push({ collection: b, op: 'delete', ids: [del] });
        await p.ok('batch', { ops, ...w });
        model.get(a)?.set(r.id, { vector: r.vector, metadata: r.metadata });
        if (del !== null) model.get(b)?.delete(del);
      } else {
        await p.ok('checkpoint');
      }
    }
    const last = (await p.ok('status')).lastSeq as string;
    await Promise.all([n2.ok('waitFor', { seq: last }), n3.ok('waitFor', { seq: last })]);
    const query = { collections: Object.fromEntries([...model.keys()].map((c) => [c, ids])) };
    const dumps = await Promise.all([p, n2, n3].map((n) => n.ok('dump', query)));
    const expected = Object.fromEntries([...model].map(([c, rows]) => [c, Object.fromEntries(rows)]));
    expect(drops, 'the workload dropped collections').toBeGreaterThan(0);
    for (const d of dumps) {
      expect(d.lastSeq).toBe(last);
      expect(d.rows).toEqual(expected);
      expect(d.collections).toEqual(dumps[0]?.collections);
      expect((d.collections as Array<[string, number]>).map(([name]) => name).sort()).toEqual([...model.keys()].sort());
    }
    // The primary learns a replica's applied seq from its next ACK, which can follow the
    // replica's own waitFor: poll its view (bounded) before asserting it.
    type Status = { replicas: Array<{ nodeId: string; appliedSeq: string; lagRecords: string }> };
    let status = (await p.ok('status')).status as Status;
    for (let i = 0; i < 100 && status.replicas.some((r) => r.appliedSeq !== last); i++) {
      await new Promise((r) => setTimeout(r, 50));
      status = (await p.ok('status')).status as Status;
    }
    for (const r of status.replicas) expect(r.appliedSeq).toBe(last);
  });

  /**
   * 200 cycles of SIGKILL at a random moment of a w: 'majority' write stream: the primary every
   * cycle, and one replica (alternately n2, n3). Each cycle is cheap: a replacement process is
   * spawned ahead (it loads, then waits to be told to open: `deferred`), the primary listens on
   * one fixed port so the surviving replica reconnects by itself, and only the cycle's
   * acknowledged ids are checked. Every acknowledged write must be on at least 2 of 3 disks:
   * the killed primary's directory as its restart opens it, the killed replica's reopened here,
   * the surviving replica's as it serves it (nothing can reach it with no primary running).
   * At the end every directory is reopened here and every acknowledged write of every cycle is
   * checked again.
   */
  it('majority_acks_survive_sigkill_of_primary_and_replicas_for_200_cycles', async () => {
    const dirs = [tempDir(), tempDir(), tempDir()] as const;
    {
      const { node } = await startPrimary(dirs[0]);
      await node.ok('create', { name: 'docs', dim: 4 });
      await node.close();
    }
    const listen = `127.0.0.1:${await freePort()}`;
    const configs = [
      { role: 'primary', dir: dirs[0], nodeId: 'n1', replicas: ['n2', 'n3'], w: 'majority', timeoutMs: 5_000, heartbeatMs: 200, listen },
      { role: 'replica', dir: dirs[1], nodeId: 'n2', primary: listen, heartbeatMs: 200 },
      { role: 'replica', dir: dirs[2], nodeId: 'n3', primary: listen, heartbeatMs: 200 },
    ];
    const spares: NodeProc[] = [];
    const spare = () => spares.push(new NodeProc({ deferred: true }));
    /** A loaded spare process, opened as node `i`. */
    const launch = async (i: number): Promise<NodeProc> => {
      if (spares.length === 0) spare();
      const n = spares.shift() as NodeProc;
      spare();
      await n.line((l) => l.event === 'loaded');
      n.proc.stdin?.write(`${JSON.stringify({ op: 'start', config: configs[i] })}\n`);
      await n.ready();
      return n;
    };
    spare();
    spare();
    const nodes: NodeProc[] = [];
    for (let i = 0; i < 3; i++) nodes.push(await launch(i));

    const random = rng(7);
    const budgetMs = 540_000;
    const started = Date.now();
    const allAcked: string[] = [];
    let cycles = 0;
    for (; cycles < 200 && Date.now() - started < budgetMs; cycles++) {
      const p = nodes[0] as NodeProc;
      const victim = 1 + (cycles % 2);
      const survivor = 3 - victim;
      p.proc.stdin?.write(`${JSON.stringify({ id: 0, op: 'write-loop', collection: 'docs', prefix: `c${cycles}-`, count: 100_000 })}\n`);
      // Kill at a random moment after the writes started flowing.
      await p.line((l) => l.event === 'acked');
      await new Promise((r) => setTimeout(r, Math.floor(random() * 100)));
      await Promise.all([p.kill(), (nodes[victim] as NodeProc).kill()]);
      const acked = p.lines.filter((l) => l.event === 'acked').map((l) => l.id as string);
      allAcked.push(...acked);
      const copies = new Map<string, number>();
      const count = (present: string[]) => {
        for (const id of present) copies.set(id, (copies.get(id) ?? 0) + 1);
      };
      count(((await (nodes[survivor] as NodeProc).ok('has', { collection: 'docs', ids: acked })).present as string[]) ?? []);
      {
        const db = await open(dirs[victim]);
        // A replica killed before it applied the create holds none of the writes.
        if (db.collections().some((c) => c.name === 'docs')) {
          const docs = db.collection('docs');
          const held = await Promise.all(acked.map(async (id) => ((await docs.get(id).catch(absentCollection)) ? id : null)));
          count(held.filter((id): id is string => id !== null));
        }
        await db.close();
      }
      nodes[0] = await launch(0);
      count(((await (nodes[0] as NodeProc).ok('has', { collection: 'docs', ids: acked })).present as string[]) ?? []);
      nodes[victim] = await launch(victim);
      const onMinority = acked.filter((id) => (copies.get(id) ?? 0) < 2);
      expect(onMinority, `cycle ${cycles}: acknowledged writes on fewer than 2 of 3 disks`).toEqual([]);
    }
    for (const n of nodes) await n.kill();
    const copies = new Map<string, number>();
    for (const dir of dirs) {
      const db = await open(dir);
      if (db.collections().some((c) => c.name === 'docs')) {
        const docs = db.collection('docs');
        for (const id of allAcked) if ((await docs.get(id)) !== undefined) copies.set(id, (copies.get(id) ?? 0) + 1);
      }
      await db.close();
    }
    expect(allAcked.filter((id) => (copies.get(id) ?? 0) < 2)).toEqual([]);
    console.log(`sigkill loop: ${cycles} cycles in ${Math.round((Date.now() - started) / 1000)} s, ${allAcked.length} acknowledged writes checked`);
    expect(cycles).toBe(200);
  }, 600_000);

  it('replica_sigkilled_during_streaming_catches_up', async () => {
    const { node: p, address } = await startPrimary(tempDir());
    const n2dir = tempDir();
    let n2 = await startReplica(n2dir, 'n2', address);
    const n3 = await startReplica(tempDir(), 'n3', address);
    await p.ok('create', { name: 'docs', dim: 4 });
    p.proc.stdin?.write(`${JSON.stringify({ id: 0, op: 'write-loop', collection: 'docs', prefix: 'k', count: 1500 })}\n`);
    await p.line((l) => l.event === 'acked' && l.id === 'k300');
    await n2.kill();
    await p.line((l) => l.event === 'acked' && l.id === 'k700');
    n2 = await startReplica(n2dir, 'n2', address);
    await p.line((l) => l.id === 0, 120_000);
    const last = (await p.ok('status')).lastSeq as string;
    await Promise.all([n2.ok('waitFor', { seq: last }), n3.ok('waitFor', { seq: last })]);
    const ids = Array.from({ length: 1500 }, (_, i) => `k${i}`);
    const [a, b] = await Promise.all([p.ok('dump', { collections: { docs: ids } }), n2.ok('dump', { collections: { docs: ids } })]);
    expect(Object.keys(a.rows as object)).toEqual(['docs']);
    expect(Object.keys((a.rows as Record<string, object>).docs).length).toBe(1500);
    expect(b.rows).toEqual(a.rows);
    expect(b.lastSeq).toBe(last);
  });

  it('majority_times_out_while_cut_and_resumes_after_heal', async () => {
    const { node: p, address } = await startPrimary(tempDir(), { heartbeatMs: 200 });
    const [host, port] = address.split(':') as [string, string];
    const proxies = await Promise.all([startProxy(host, Number(port)), startProxy(host, Number(port))]);
    await Promise.all([
      startReplica(tempDir(), 'n2', proxies[0].address, { heartbeatMs: 200 }),
      startReplica(tempDir(), 'n3', proxies[1].address, { heartbeatMs: 200 }),
    ]);
    await p.ok('create', { name: 'docs', dim: 4 });
    const rec = (id: string) => [{ id, vector: [1, 2, 3, 4] }];
    await p.ok('upsert', { collection: 'docs', records: rec('before'), w: 'majority', timeoutMs: 20_000 });
    // A slow link still meets the write concern.
    for (const x of proxies) x.delayMs = 100;
    await p.ok('upsert', { collection: 'docs', records: rec('slow'), w: 'all', timeoutMs: 20_000 });
    for (const x of proxies) x.delayMs = 0;
    // Partition: both replicas cut, so no majority.
    for (const x of proxies) x.cut();
    const r = await p.request('upsert', { collection: 'docs', records: rec('cut'), w: 'majority', timeoutMs: 800 });
    expect(r.ok).toBe(false);
    expect(r.error?.code).toBe('CAIRN_REPLICATION_TIMEOUT');
    expect(r.error?.durableOn).toEqual(['n1']);
    expect(r.error?.message).toContain(`seq ${r.error?.seq}`);
    // One replica back: a majority again.
    proxies[0].heal();
    let healed: Reply | undefined;
    for (let i = 0; i < 30 && !healed?.ok; i++)
      healed = await p.request('upsert', { collection: 'docs', records: rec(`after${i}`), w: 'majority', timeoutMs: 2_000 });
    expect(healed?.ok, JSON.stringify(healed?.error)).toBe(true);
    proxies[1].heal();
    const all = await p.request('upsert', { collection: 'docs', records: rec('all'), w: 'all', timeoutMs: 30_000 });
    expect(all.ok, JSON.stringify(all.error)).toBe(true);
  });

  it('slow_replica_keeps_primary_in_flight_bytes_bounded', async () => {
    const { node: p, address } = await startPrimary(tempDir(), { heartbeatMs: 5_000 });
    const [host, port] = address.split(':') as [string, string];
    const proxy = await startProxy(host, Number(port));
    const n2 = await startReplica(tempDir(), 'n2', proxy.address, { heartbeatMs: 5_000 });
    await p.ok('create', { name: 'docs', dim: 256 });
    const start = (await p.ok('status')).lastSeq as string;
    await n2.ok('waitFor', { seq: start });
    const limit = MAX_IN_FLIGHT_BYTES + CHUNK_BYTES;
    // Each round writes about 40 MiB of WAL the replica does not acknowledge: first the link
    // swallows the bytes and never delivers them (the socket drains, so only the in-flight
    // limit holds the primary back), then the link stops reading (the socket's buffer fills).
    for (const [round, mode] of (['hold', 'stall'] as const).entries()) {
      if (mode === 'hold') proxy.hold();
      else proxy.stall();
      await p.ok('bulk', { collection: 'docs', batches: 40, perBatch: 1000, dim: 256, round });
      const last = (await p.ok('status')).lastSeq as string;
      let peak = 0;
      for (let i = 0; i < 10; i++) {
        const s = (await p.ok('status')).status as { replicas: Array<{ nodeId: string; inFlightBytes: number; receivedSeq: string }> };
        const r = s.replicas.find((x) => x.nodeId === 'n2');
        peak = Math.max(peak, r?.inFlightBytes ?? 0);
        expect(r?.inFlightBytes).toBeLessThanOrEqual(limit);
        expect(BigInt(r?.receivedSeq ?? '0') < BigInt(last)).toBe(true);
        await new Promise((res) => setTimeout(res, 100));
      }
      if (mode === 'hold') expect(peak).toBeGreaterThanOrEqual(MAX_IN_FLIGHT_BYTES);
      else expect(peak).toBeGreaterThan(0);
      proxy.resume();
      await n2.ok('waitFor', { seq: last });
    }
  });

  it('replica_behind_a_pruned_archive_catches_up_through_a_snapshot', async () => {
    const { node: p, address } = await startPrimary(tempDir(), { openOptions: { walSegmentBytes: 65536, walArchive: { maxBytes: 1 } } });
    const n2dir = tempDir();
    let n2 = await startReplica(n2dir, 'n2', address);
    await p.ok('create', { name: 'docs', dim: 4 });
    await p.ok('bulk', { collection: 'docs', batches: 20, perBatch: 50, dim: 4, round: 0 });
    await n2.ok('waitFor', { seq: (await p.ok('status')).lastSeq });
    await n2.kill();
    // While n2 is away, its next record leaves the archive.
    await p.ok('bulk', { collection: 'docs', batches: 40, perBatch: 50, dim: 4, round: 1 });
    await p.ok('checkpoint');
    await p.ok('bulk', { collection: 'docs', batches: 5, perBatch: 50, dim: 4, round: 2 });
    await p.ok('checkpoint');
    n2 = await startReplica(n2dir, 'n2', address);
    const fresh = await startReplica(tempDir(), 'n3', address);
    await p.ok('bulk', { collection: 'docs', batches: 5, perBatch: 50, dim: 4, round: 3 });
    const last = (await p.ok('status')).lastSeq as string;
    await Promise.all([n2.ok('waitFor', { seq: last }), fresh.ok('waitFor', { seq: last })]);
    for (const r of [n2, fresh]) {
      const s = (await r.ok('status')).status as { snapshotsInstalled: number; lastError: string | null };
      // Two replicas catching up at once: each snapshot's checkpoint may prune what the other needs next.
      expect(s.snapshotsInstalled, String(s.lastError)).toBeGreaterThanOrEqual(1);
    }
    const ids: string[] = [];
    for (const [round, batches] of [20, 40, 5, 5].entries()) for (let b = 0; b < batches; b++) for (let i = 0; i < 50; i++) ids.push(`b${round}-${b}-${i}`);
    const dumps = await Promise.all([p, n2, fresh].map((n) => n.ok('dump', { collections: { docs: ids } })));
    const primaryRows = dumps[0]?.rows as Record<string, object>;
    expect(Object.keys(primaryRows.docs ?? {}).length).toBe(ids.length);
    for (const d of dumps) {
      expect(d.rows).toEqual(primaryRows);
      expect(d.lastSeq).toBe(last);
    }
  });

  it('replica_lagging_beyond_snapshot_lag_records_catches_up_through_a_snapshot', async () => {
    const { node: p, address } = await startPrimary(tempDir(), { snapshotLagRecords: 50 });
    await p.ok('create', { name: 'docs', dim: 4 });
    await p.ok('bulk', { collection: 'docs', batches: 120, perBatch: 5, dim: 4, round: 0 });
    const r = await startReplica(tempDir(), 'n2', address);
    const last = (await p.ok('status')).lastSeq as string;
    await r.ok('waitFor', { seq: last });
    expect(((await r.ok('status')).status as { snapshotsInstalled: number }).snapshotsInstalled).toBe(1);
    // Within the threshold afterwards: the WAL again.
    await p.ok('bulk', { collection: 'docs', batches: 10, perBatch: 5, dim: 4, round: 1 });
    const after = (await p.ok('status')).lastSeq as string;
    await r.ok('waitFor', { seq: after });
    expect(((await r.ok('status')).status as { snapshotsInstalled: number }).snapshotsInstalled).toBe(1);
    const ids: string[] = [];
    for (const [round, batches] of [120, 10].entries()) for (let b = 0; b < batches; b++) for (let i = 0; i < 5; i++) ids.push(`b${round}-${b}-${i}`);
    const [a, b] = await Promise.all([p.ok('dump', { collections: { docs: ids } }), r.ok('dump', { collections: { docs: ids } })]);
    expect(b.rows).toEqual(a.rows);
  });

  it('replica_sigkilled_during_snapshot_catch_up_catches_up', async () => {
    const { node: p, address } = await startPrimary(tempDir(), { openOptions: { walSegmentBytes: 65536, walArchive: { maxBytes: 1 } } });
    await p.ok('create', { name: 'docs', dim: 4 });
    await p.ok('bulk', { collection: 'docs', batches: 60, perBatch: 50, dim: 4, round: 0 });
    await p.ok('checkpoint');
    await p.ok('bulk', { collection: 'docs', batches: 5, perBatch: 50, dim: 4, round: 1 });
    await p.ok('checkpoint');
    const last = (await p.ok('status')).lastSeq as string;
    const dir = tempDir();
    const random = rng(5);
    for (let i = 0; i < 8; i++) {
      const r = await startReplica(dir, 'n2', address);
      await new Promise((res) => setTimeout(res, Math.floor(random() * 400)));
      await r.kill();
    }
    const leftovers = readdirSync(dirname(dir)).filter((n) => n.startsWith(`.${basename(dir)}.snapshot-`)).length;
    console.log(`replica_sigkilled_during_snapshot_catch_up: ${leftovers} interrupted install(s) left behind before the last start`);
    const r = await startReplica(dir, 'n2', address);
    await r.ok('waitFor', { seq: last });
    const ids: string[] = [];
    for (const [round, batches] of [60, 5].entries()) for (let b = 0; b < batches; b++) for (let i = 0; i < 50; i++) ids.push(`b${round}-${b}-${i}`);
    const [a, b] = await Promise.all([p.ok('dump', { collections: { docs: ids } }), r.ok('dump', { collections: { docs: ids } })]);
    expect(b.rows).toEqual(a.rows);
    expect(b.lastSeq).toBe(last);
    // Interrupted installs left nothing behind.
    expect(readdirSync(dirname(dir)).filter((n) => n.startsWith(`.${basename(dir)}.snapshot-`))).toEqual([]);
  });

  it('tls_replication_streams_and_refuses_a_peer_without_a_certificate', async () => {
    const pki = makePki(tempDir());
    const { node: p, address } = await startPrimary(tempDir(), { tls: { key: pki.serverKey, cert: pki.serverCert, ca: pki.ca } });
    const secure = await startReplica(tempDir(), 'n2', address, { tls: { key: pki.clientKey, cert: pki.clientCert, ca: pki.ca } });
    await p.ok('create', { name: 'docs', dim: 4 });
    const w = await p.ok('upsert', { collection: 'docs', records: [{ id: 'a', vector: [1, 2, 3, 4] }], w: 'majority', timeoutMs: 20_000 });
    await secure.ok('waitFor', { seq: w.seq });
    // Plain TCP to a TLS listener, and TLS without a client certificate: neither gets anything.
    const plain = await startReplica(tempDir(), 'n3', address);
    const anonymous = await startReplica(tempDir(), 'n3', address, { tls: { ca: pki.ca } });
    for (const r of [plain, anonymous]) {
      await eventually('refused replica reports an error', async () => ((await r.ok('status')).status as { lastError: string | null }).lastError !== null);
      expect((await r.ok('status')).lastSeq).toBe('0');
    }
  });

  it('bad_peers_are_refused_with_clear_errors_and_nothing_applied', async () => {
    const { node: p, address } = await startPrimary(tempDir());
    await p.ok('create', { name: 'docs', dim: 4 });
    const before = (await p.ok('status')).lastSeq;
    const [host, port] = address.split(':') as [string, string];

    // Garbage bytes.
    expect(await refusal(host, Number(port), [randomBytes(64)])).toMatch(/not a Cairn replication frame/);
    // A CRC that does not match.
    const hello = encodeFrame(FrameType.HELLO, encodeHello({ nodeId: 'n2', nonce: newNonce() }));
    const badCrc = Buffer.from(hello);
    badCrc[FRAME_HEADER_LEN + 3] ^= 0x40;
    expect(await refusal(host, Number(port), [badCrc])).toMatch(/CRC32C/);
    // An oversized length, refused from the header alone.
    const huge = Buffer.from(hello.subarray(0, FRAME_HEADER_LEN));
    huge.writeUInt32LE(MAX_FRAME_PAYLOAD + 1, OFF_LENGTH);
    expect(await refusal(host, Number(port), [huge])).toMatch(/exceeds the maximum/);
    // An unknown frame type.
    const unknown = Buffer.from(hello);
    unknown[5] = 99;
    expect(await refusal(host, Number(port), [unknown])).toMatch(/unknown replication frame type 99/);
    // A node that is not a configured replica.
    expect(await refusal(host, Number(port), [encodeFrame(FrameType.HELLO, encodeHello({ nodeId: 'intruder', nonce: newNonce() }))])).toMatch(
      /not one of this primary's configured replicas/,
    );
    // A wrong token, and a replica claiming a seq ahead of the primary.
    expect(await handshake(host, Number(port), 'wrong-token-wrong-token-wrong-token!!', 0n)).toMatch(/failed authentication/);
    expect(await handshake(host, Number(port), TOKEN, 1_000_000n)).toMatch(/CAIRN_SEQUENCE_GAP.*claims seq 1000000/);
    // A frame cut short by the close: the primary records it.
    const truncated = connect(Number(port), host);
    await new Promise<void>((r) => truncated.on('connect', () => r()));
    truncated.end(hello.subarray(0, hello.length - 5));

    let status: { rejected: Array<{ error: string }> } = { rejected: [] };
    await eventually('primary lists the truncated frame', async () => {
      status = (await p.ok('status')).status as typeof status;
      return status.rejected.some((x) => /closed inside a frame/.test(x.error));
    });
    const reasons = status.rejected.map((x) => x.error).join('\n');
    for (const m of [/CRC32C/, /exceeds the maximum/, /failed authentication/, /claims seq/, /not a Cairn replication frame/]) expect(reasons).toMatch(m);
    expect((await p.ok('status')).lastSeq).toBe(before);

    // A replica with the wrong token refuses the primary (its proof fails) and applies nothing.
    const r = await startReplica(tempDir(), 'n2', address, { token: 'another-token-another-token-another!!' });
    await eventually('replica reports the failed authentication', async () => {
      const s = (await r.ok('status')).status as { lastError: string | null };
      return /failed authentication/.test(s.lastError ?? '');
    });
    expect((await r.ok('status')).lastSeq).toBe('0');
  });

  it('replica_refuses_a_sequence_gap_a_bad_crc_and_damaged_records', async () => {
    const fake = await fakePrimary();
    const dir = tempDir();
    // A gap: the first WAL frame starts at seq 5 on an empty replica.
    fake.script = (send) => send(FrameType.WAL, encodeWal({ firstSeq: 5n, lastSeq: 5n, records: Buffer.alloc(40) }));
    let r = await startReplica(dir, 'n2', fake.address);
    await eventually('gap refused', async () =>
      /CAIRN_SEQUENCE_GAP.*starts at seq 5, expected 1/.test(((await r.ok('status')).status as { lastError: string }).lastError ?? ''),
    );
    expect(fake.errors.some((e) => /starts at seq 5/.test(e))).toBe(true);
    await r.close();
    // Damaged records inside a frame whose CRC is right: the engine refuses the chunk.
    fake.script = (send) => send(FrameType.WAL, encodeWal({ firstSeq: 1n, lastSeq: 1n, records: fakeRecord(1n) }));
    r = await startReplica(dir, 'n2', fake.address);
    await eventually('damaged record refused', async () => /CAIRN_CORRUPTION/.test(((await r.ok('status')).status as { lastError: string }).lastError ?? ''));
    await r.close();
    // A frame whose CRC is wrong.
    fake.script = (_send, raw) => {
      const f = encodeFrame(FrameType.WAL, encodeWal({ firstSeq: 1n, lastSeq: 1n, records: fakeRecord(1n) }));
      f[f.length - 1] ^= 1;
      raw(f);
    };
    r = await startReplica(dir, 'n2', fake.address);
    await eventually('bad CRC refused', async () => /CRC32C/.test(((await r.ok('status')).status as { lastError: string }).lastError ?? ''));
    expect(fake.errors.some((e) => /CRC32C/.test(e))).toBe(true);
    expect((await r.ok('status')).lastSeq).toBe('0');
    await r.close();
    const db = await open(dir);
    expect(db.lastSeq).toBe(0n);
    expect(db.collections()).toEqual([]);
    await db.close();
  });

  it('forwarded_writes_read_your_writes_and_not_primary_names_the_primary', async () => {
    const { node: p, address } = await startPrimary(tempDir(), { w: 'majority', timeoutMs: 20_000 });
    const fwd = await startReplica(tempDir(), 'n2', address, { forwardWrites: true });
    const plain = await startReplica(tempDir(), 'n3', address);
    await p.ok('create', { name: 'docs', dim: 4 });
    const last = (await p.ok('status')).lastSeq as string;
    await fwd.ok('waitFor', { seq: last });
    await plain.ok('waitFor', { seq: last });
    for (let i = 0; i < 20; i++) {
      const w = await fwd.ok('upsert', { collection: 'docs', records: [{ id: `f${i}`, vector: [i, 0, 0, 1], metadata: { i } }] });
      const seen = await fwd.ok('dump', { collections: { docs: [`f${i}`] } });
      expect((seen.rows as Record<string, Record<string, Row>>).docs[`f${i}`]).toEqual({ vector: [i, 0, 0, 1], metadata: { i } });
      expect(BigInt(seen.lastSeq as string) >= BigInt(w.seq as string)).toBe(true);
    }
    const onPrimary = await p.ok('dump', { collections: { docs: ['f19'] } });
    expect((onPrimary.rows as Record<string, Record<string, Row>>).docs.f19).toBeDefined();
    const refused = await plain.request('upsert', { collection: 'docs', records: [{ id: 'x', vector: [0, 0, 0, 1] }] });
    expect(refused.error?.code).toBe('CAIRN_NOT_PRIMARY');
    expect(refused.error?.message).toContain(address);
    // deleteWhere is resolved where writes are ordered: never forwarded, refused naming the
    // primary; on the primary it is one record at the write concern, and replicas apply it.
    const notForwarded = await fwd.request('deleteWhere', { collection: 'docs', filter: { i: { $lt: 10 } } });
    expect(notForwarded.error?.code).toBe('CAIRN_NOT_PRIMARY');
    expect(notForwarded.error?.message).toContain(address);
    const before = BigInt((await p.ok('status')).lastSeq as string);
    const del = await p.ok('deleteWhere', { collection: 'docs', filter: { i: { $lt: 10 } } });
    expect(del.deleted).toBe(10);
    expect(BigInt(del.seq as string)).toBe(before + 1n);
    await plain.ok('waitFor', { seq: del.seq });
    const ids = Array.from({ length: 20 }, (_, i) => `f${i}`);
    const after = (await plain.ok('dump', { collections: { docs: ids } })).rows as Record<string, Record<string, Row>>;
    expect(Object.keys(after.docs).sort()).toEqual(ids.slice(10).sort());
    // A batch large enough to be staged in chunks: a forwarding replica sends it whole to the
    // primary; on the primary it is staged and committed as one record at the write concern.
    const bulk = (prefix: string) =>
      Array.from({ length: STAGE_MIN_RECORDS + 100 }, (_, i) => ({ id: `${prefix}${i}`, vector: [i, 1, 0, 1], metadata: { i } }));
    const lastBulk = STAGE_MIN_RECORDS + 99;
    const viaReplica = await fwd.ok('upsert', { collection: 'docs', records: bulk('rf') });
    const onPrimaryBulk = await p.ok('upsert', { collection: 'docs', records: bulk('pb') });
    expect(BigInt(onPrimaryBulk.seq as string)).toBe(BigInt(viaReplica.seq as string) + 1n);
    await plain.ok('waitFor', { seq: onPrimaryBulk.seq });
    const bulkRows = (await plain.ok('dump', { collections: { docs: ['rf0', `rf${lastBulk}`, 'pb0', `pb${lastBulk}`] } })).rows as Record<
      string,
      Record<string, Row>
    >;
    expect(bulkRows.docs[`rf${lastBulk}`]).toEqual({ vector: [lastBulk, 1, 0, 1], metadata: { i: lastBulk } });
    expect(bulkRows.docs[`pb${lastBulk}`]).toEqual({ vector: [lastBulk, 1, 0, 1], metadata: { i: lastBulk } });
    expect(Object.keys(bulkRows.docs).length).toBe(4);
  });
});

/** Send `chunks` as a client and return the ERROR frame's text the primary answers with. */
async function refusal(host: string, port: number, chunks: Buffer[]): Promise<string> {
  const socket = connect(port, host);
  const answer = readError(socket);
  await new Promise<void>((r) => socket.on('connect', () => r()));
  for (const c of chunks) socket.write(c);
  return answer;
}

function readError(socket: Socket, onFrame?: (type: number, payload: Buffer) => void): Promise<string> {
  const decoder = new FrameDecoder();
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('no answer'), 10_000);
    socket.on('data', (d: Buffer) => {
      for (const f of decoder.push(d)) {
        if (f.type === FrameType.ERROR) {
          const e = decodeError(f.payload);
          clearTimeout(timer);
          resolve(`${e.code}: ${e.message}`);
        } else onFrame?.(f.type, f.payload);
      }
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve('closed without an ERROR frame');
    });
    socket.on('error', () => {});
  });
}

/** A full handshake as replica n2 with `token`, claiming `lastSeq`; returns the primary's ERROR. */
async function handshake(host: string, port: number, token: string, lastSeq: bigint): Promise<string> {
  const socket = connect(port, host);
  const nonce = newNonce();
  const answer = readError(socket, (type, payload) => {
    if (type !== FrameType.CHALLENGE) return;
    const c = decodeChallenge(payload);
    const h = { replicaNonce: nonce, primaryNonce: c.nonce, replicaId: 'n2', primaryId: c.nodeId };
    socket.write(encodeFrame(FrameType.AUTH, encodeAuth({ proof: proof(Buffer.from(token), 'replica', h), lastSeq })));
  });
  await new Promise<void>((r) => socket.on('connect', () => r()));
  socket.write(encodeFrame(FrameType.HELLO, encodeHello({ nodeId: 'n2', nonce })));
  return answer;
}

/** A WAL record frame with a wrong checksum (docs/format.md, "WAL record"). */
function fakeRecord(seq: bigint): Buffer {
  const payload = Buffer.alloc(8);
  const rec = Buffer.alloc(24 + 8 + 8);
  rec.writeUInt32LE(payload.length, 0);
  rec.writeUInt8(1, 4);
  rec.writeBigUInt64LE(seq, 8);
  rec.writeBigUInt64LE(BigInt(Date.now()), 16);
  rec.writeBigUInt64LE(0x1234n, 32);
  return rec;
}

/** A primary played by the test: it authenticates properly, then runs `script`. */
async function fakePrimary(): Promise<{
  address: string;
  errors: string[];
  script: (send: (type: FrameType, payload: Buffer) => void, raw: (b: Buffer) => void) => void;
}> {
  const state = {
    address: '',
    errors: [] as string[],
    script: (_send: (type: FrameType, payload: Buffer) => void, _raw: (b: Buffer) => void) => {},
  };
  const server = createServer((socket) => {
    const decoder = new FrameDecoder();
    const send = (type: FrameType, payload: Buffer) => socket.write(encodeFrame(type, payload));
    let handshakeState: { replicaNonce: Buffer; primaryNonce: Buffer; replicaId: string; primaryId: string } | null = null;
    socket.on('error', () => {});
    socket.on('data', (d: Buffer) => {
      for (const f of decoder.push(d)) {
        if (f.type === FrameType.HELLO) {
          const h = decodeHello(f.payload);
          handshakeState = { replicaNonce: h.nonce, primaryNonce: newNonce(), replicaId: h.nodeId, primaryId: 'fake' };
          send(
            FrameType.CHALLENGE,
            encodeChallenge({ nodeId: 'fake', nonce: handshakeState.primaryNonce, proof: proof(Buffer.from(TOKEN), 'primary', handshakeState) }),
          );
        } else if (f.type === FrameType.AUTH) {
          decodeAuth(f.payload);
          send(FrameType.READY, encodeReady({ primaryLastSeq: 5n }));
          state.script(send, (b) => socket.write(b));
        } else if (f.type === FrameType.ERROR) {
          state.errors.push(decodeError(f.payload).message);
        }
      }
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const a = server.address() as { port: number };
  state.address = `127.0.0.1:${a.port}`;
  return state;
}

/** A TCP proxy to the primary that can delay every chunk or cut the link (and refuse new ones). */
async function startProxy(
  host: string,
  port: number,
): Promise<{ address: string; delayMs: number; cut(): void; heal(): void; hold(): void; stall(): void; resume(): void }> {
  const pairs = new Set<[Socket, Socket]>();
  const state = {
    address: '',
    delayMs: 0,
    down: false,
    held: null as Buffer[] | null,
    cut() {
      state.down = true;
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      pairs.clear();
    },
    heal() {
      state.down = false;
    },
    /** Keep reading from the primary but deliver nothing (bytes queue here). */
    hold() {
      state.held = [];
    },
    /** Stop reading from the primary (a replica that cannot keep up). */
    stall() {
      for (const [, upstream] of pairs) upstream.pause();
    },
    resume() {
      for (const [client, upstream] of pairs) {
        upstream.resume();
        for (const d of state.held ?? []) client.write(d);
      }
      state.held = null;
    },
  };
  const pipe = (from: Socket, to: Socket, fromPrimary: boolean) =>
    from.on('data', (d: Buffer) => {
      if (fromPrimary && state.held) state.held.push(d);
      else if (state.delayMs === 0) to.write(d);
      else setTimeout(() => to.write(d), state.delayMs);
    });
  const server = createServer((client) => {
    client.on('error', () => {});
    if (state.down) {
      client.destroy();
      return;
    }
    const upstream = connect(port, host);
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    pipe(client, upstream, false);
    pipe(upstream, client, true);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  state.address = `127.0.0.1:${(server.address() as { port: number }).port}`;
  return state;
}

/** A CA and a server (IP 127.0.0.1) and client certificate it signed, made with openssl. */
function makePki(dir: string): { ca: string; serverKey: string; serverCert: string; clientKey: string; clientCert: string } {
  const run = (args: string[]) => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
  };
  run(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=cairn-test-ca']);
  for (const name of ['server', 'client']) {
    run(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
    writeFileSync(join(dir, `${name}.ext`), name === 'server' ? 'subjectAltName=IP:127.0.0.1\n' : 'extendedKeyUsage=clientAuth\n');
    run([
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${name}.pem`,
      '-days',
      '1',
      '-extfile',
      `${name}.ext`,
    ]);
  }
  const read = (f: string) => readFileSync(join(dir, f), 'utf8');
  return { ca: read('ca.pem'), serverKey: read('server.key'), serverCert: read('server.pem'), clientKey: read('client.key'), clientCert: read('client.pem') };
}
