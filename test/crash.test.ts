// Crash tests: a child process writes with 8 concurrent writers and is SIGKILLed at a random
// moment; the store is reopened and checked against what the child reported as acknowledged.
// One store directory per lane lives through every cycle, so recovered stores are crashed and
// recovered again; some cycles skip the parent's check so the next child itself recovers a
// crashed store.
import { spawn } from 'node:child_process';
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { open } from 'cairndb';
import { describe, expect, test } from 'vitest';

import { childLines } from './child-lines.js';
import { CRASH_COLLECTIONS, metadataFor, prng, vectorFor } from './fixtures/records.mjs';

const WRITER = fileURLToPath(new URL('./fixtures/crash-writer.mjs', import.meta.url));
/** Cycles per sync mode; CAIRN_CRASH_CYCLES raises it for a longer local run. */
const CYCLES = Number(process.env.CAIRN_CRASH_CYCLES ?? 100);
const LANES = 2;
const WRITERS = 8;
/** Small segments, so segments roll and checkpoints archive them often. */
const SEGMENT_BYTES = 256 * 1024;
const SEED = Number(process.env.CAIRN_CRASH_SEED ?? Date.now() % 1_000_000);

type Effect = [collection: string, id: string, version: string | null];
interface Op {
  w: number;
  cycle: number;
  n: number;
  effects: Effect[];
  /** Set once the child reported the acknowledgement. */
  seq?: bigint;
}

interface ChildRun {
  ops: Op[];
  openedAt: bigint | null;
  checkpoints: number;
  signal: NodeJS.Signals | null;
  code: number | null;
  stderr: string;
}

function runChild(
  dir: string,
  sync: string,
  cycle: number,
  seed: number,
  deletable: Record<number, [string, string][]>,
  rand: () => number,
): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WRITER, dir, sync, String(cycle), String(seed), String(SEGMENT_BYTES), String(WRITERS)], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    child.stdin.end(JSON.stringify({ deletable }));
    const run: ChildRun = { ops: [], openedAt: null, checkpoints: 0, signal: null, code: null, stderr: '' };
    if (process.env.CAIRN_CRASH_LOG) child.stdout.on('data', (d) => appendFileSync(`${dir}.log`, `--- cycle ${cycle}\n${d}`));
    const byKey = new Map<string, Op>();
    let killTimer: NodeJS.Timeout | undefined;
    const kill = () => child.kill('SIGKILL');
    // Most kills land a random time after the first acknowledgement; some land anywhere from
    // start-up on, including during the child's own recovery.
    const early = rand() < 0.15;
    if (early) killTimer = setTimeout(kill, rand() * 400);
    // Now and then a longer run, so that checkpoints (slower than commits) also complete.
    const delay = rand() < 0.2 ? rand() * 600 : rand() * 120;
    const killAfterAck = () => {
      if (killTimer === undefined) killTimer = setTimeout(kill, delay);
    };
    // A stuck child must not hang the suite.
    const guard = setTimeout(kill, 20_000);
    const exit = childLines(child, (line) => {
      const [tag, a, b, ...rest] = line.split(' ');
      if (tag === 'O') run.openedAt = BigInt(a!);
      else if (tag === 'C') run.checkpoints++;
      else if (tag === 'S') {
        const op: Op = { w: Number(a), cycle, n: Number(b), effects: JSON.parse(rest.join(' ')) as Effect[] };
        byKey.set(`${a}/${b}`, op);
        run.ops.push(op);
      } else if (tag === 'A') {
        const op = byKey.get(`${a}/${b}`);
        if (!op) return reject(new Error(`ack without start: ${line}`));
        op.seq = BigInt(rest[0]!);
        killAfterAck();
      }
    });
    exit.then((e) => {
      clearTimeout(killTimer);
      clearTimeout(guard);
      resolve(Object.assign(run, e));
    }, reject);
  });
}

const key = (c: string, id: string) => `${c}\u0000${id}`;

function sameBytes(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** One store directory crashed and recovered `cycles` times. */
class Lane {
  /** Exact state as of the last check: collection -> id -> version. */
  readonly model = new Map<string, Map<string, string>>(CRASH_COLLECTIONS.map((c) => [c.name, new Map()]));
  /** Per writer, every op since the last check, in issue order. */
  pending = new Map<number, Op[]>();
  maxAcked = 0n;
  acked = 0;
  uncertainApplied = 0;
  uncertainNotApplied = 0;
  checkpoints = 0;
  readonly seen = new Set<bigint>();

  constructor(
    readonly dir: string,
    readonly sync: string,
    readonly label: string,
  ) {}

  /** Ids present in the model and untouched since the last check: safe for a child to delete. */
  deletable(): Record<number, [string, string][]> {
    const touched = new Set<string>();
    for (const ops of this.pending.values()) for (const op of ops) for (const [c, id] of op.effects) touched.add(key(c, id));
    const out: Record<number, [string, string][]> = {};
    for (const [c, rows] of this.model) {
      for (const id of rows.keys()) {
        const m = /^b\d+-(\d+)-/.exec(id);
        if (!m || touched.has(key(c, id))) continue;
        const batch = Number(m[1]);
        out[batch] ??= [];
        out[batch].push([c, id]);
      }
    }
    return out;
  }

  record(run: ChildRun, where: string): void {
    if (run.openedAt !== null) {
      // The child's own recovery must already hold every earlier acknowledged write.
      expect(run.openedAt >= this.maxAcked, `${where}: child opened at seq ${run.openedAt} < acknowledged ${this.maxAcked}`).toBe(true);
    }
    for (const op of run.ops) {
      if (op.seq !== undefined) {
        expect(this.seen.has(op.seq), `${where}: seq ${op.seq} acknowledged twice`).toBe(false);
        expect(run.openedAt !== null && op.seq > run.openedAt, `${where}: seq ${op.seq} not above the open seq`).toBe(true);
        this.seen.add(op.seq);
        if (op.seq > this.maxAcked) this.maxAcked = op.seq;
        this.acked++;
      }
      const list = this.pending.get(op.w) ?? [];
      list.push(op);
      this.pending.set(op.w, list);
    }
    this.checkpoints += run.checkpoints;
  }

  /** Reopen the store and resolve every op since the last check against what it holds. */
  async check(where: string, checkpoint: boolean): Promise<void> {
    const db = await open(this.dir, { walSegmentBytes: SEGMENT_BYTES });
    try {
      expect(db.recoveryReport.skipped, `${where}: recovery skipped records`).toEqual([]);
      expect(db.lastSeq >= this.maxAcked, `${where}: lastSeq ${db.lastSeq} < acknowledged seq ${this.maxAcked}`).toBe(true);
      const cols = new Map(CRASH_COLLECTIONS.map((c) => [c.name, db.collection(c.name)]));
      const dims = new Map(CRASH_COLLECTIONS.map((c) => [c.name, c.dim]));
      const cache = new Map<string, string | null>();
      const errors: string[] = [];
      /** The version stored for an id (null when absent), after checking its exact bytes. */
      const actual = async (c: string, id: string): Promise<string | null> => {
        const k = key(c, id);
        if (cache.has(k)) return cache.get(k)!;
        const row = await cols.get(c)!.get(id);
        let v: string | null = null;
        if (row) {
          v = typeof row.metadata.v === 'string' ? row.metadata.v : '?';
          if (!sameBytes(row.vector, vectorFor(id, v, dims.get(c)!))) errors.push(`${c}/${id}@${v}: vector bytes differ`);
          expect(row.metadata, `${where}: ${c}/${id} metadata`).toEqual(metadataFor(id, v));
        }
        cache.set(k, v);
        return v;
      };

      for (const [w, ops] of this.pending) {
        const uncertain = ops.filter((op) => op.seq === undefined);
        // One op per writer is in flight at a kill; a few kills may pass between checks.
        expect(uncertain.length, `${where}: writer ${w} in-flight ops`).toBeLessThanOrEqual(12);
        const touched = new Map<string, [string, string]>();
        for (const op of ops) for (const [c, id] of op.effects) touched.set(key(c, id), [c, id]);
        const stored = new Map<string, string | null>();
        for (const [k, [c, id]] of touched) stored.set(k, await actual(c, id));
        // Acknowledged ops are all applied; each in-flight op is applied whole or not at all.
        // Some choice of applied in-flight ops must explain every touched id exactly.
        let explained: number | null = null;
        for (let mask = 0; mask < 1 << uncertain.length && explained === null; mask++) {
          const state = new Map<string, string | null>();
          for (const [k, [c, id]] of touched) state.set(k, this.model.get(c)!.get(id) ?? null);
          for (const op of ops) {
            const u = uncertain.indexOf(op);
            if (u >= 0 && (mask & (1 << u)) === 0) continue;
            for (const [c, id, v] of op.effects) state.set(key(c, id), v);
          }
          if ([...touched.keys()].every((k) => state.get(k) === stored.get(k))) explained = mask;
        }
        if (explained === null) {
          const ackedOnly = new Map<string, string | null>();
          for (const [k, [c, id]] of touched) ackedOnly.set(k, this.model.get(c)!.get(id) ?? null);
          for (const op of ops) if (op.seq !== undefined) for (const [c, id, v] of op.effects) ackedOnly.set(key(c, id), v);
          const diffs = [...touched]
            .filter(([k]) => ackedOnly.get(k) !== stored.get(k))
            .map(([k, [c, id]]) => `${c}/${id}: acknowledged ${ackedOnly.get(k)}, stored ${stored.get(k)}`);
          const inflight = uncertain.map((op) => `cycle ${op.cycle} op ${op.n}: ${JSON.stringify(op.effects)}`);
          errors.push(`writer ${w}: no prefix of its history explains the store\n  ${diffs.slice(0, 20).join('\n  ')}\n  in flight: ${inflight.join('\n  ')}`);
          continue;
        }
        for (let u = 0; u < uncertain.length; u++) {
          if (explained & (1 << u)) this.uncertainApplied++;
          else this.uncertainNotApplied++;
        }
        for (const [k, [c, id]] of touched) {
          const v = stored.get(k)!;
          if (v === null) this.model.get(c)!.delete(id);
          else this.model.get(c)!.set(id, v);
        }
      }
      this.pending = new Map();

      // The whole store equals the model: nothing lost, nothing extra, nothing changed.
      for (const [c, rows] of this.model) {
        const count = await cols.get(c)!.count();
        if (count !== rows.size) errors.push(`${c}: count ${count}, model ${rows.size}`);
        for (const [id, v] of rows) {
          const got = await actual(c, id);
          if (got !== v) errors.push(`${c}/${id}: model ${v}, stored ${got}`);
        }
      }
      expect(errors, `${where}`).toEqual([]);
      // Sometimes leave a fresh checkpoint behind, so the next crashes and recoveries start
      // from checkpoint files and an archived WAL rather than from the log alone.
      if (checkpoint) {
        await db.checkpoint();
        this.checkpoints++;
      }
    } finally {
      await db.close();
    }
  }
}

async function runLane(sync: string, lane: number, cycles: number): Promise<Lane> {
  const dir = mkdtempSync(join(tmpdir(), `cairn-crash-${sync}-`));
  const seed = SEED * 10 + lane + (sync === 'always' ? 0 : 5);
  const l = new Lane(dir, sync, `${sync} lane ${lane} (CAIRN_CRASH_SEED=${SEED}, dir ${dir})`);
  const rand = prng(seed);
  let ok = false;
  try {
    const db = await open(dir, { walSegmentBytes: SEGMENT_BYTES });
    for (const c of CRASH_COLLECTIONS) await db.createCollection(c.name, { dim: c.dim, metric: c.metric });
    await db.close();
    for (let cycle = 1; cycle <= cycles; cycle++) {
      const where = `${l.label} cycle ${cycle}`;
      const run = await runChild(dir, sync, cycle, (seed * 1000 + cycle) >>> 0, l.deletable(), rand);
      expect(run.signal, `${where}: child exited by itself (code ${run.code}): ${run.stderr}`).toBe('SIGKILL');
      l.record(run, where);
      // Most cycles are checked at once; the rest leave the crashed store to the next child.
      if (cycle === cycles || rand() < 0.7) await l.check(where, rand() < 0.25);
    }
    ok = true;
    return l;
  } finally {
    if (ok) rmSync(dir, { recursive: true, force: true });
    else console.error(`crash test failed; store kept in ${dir}`);
  }
}

describe.each(['always', 'group'] as const)('crash recovery, sync %s', (sync) => {
  // About a minute per mode on 2 idle cores; the margin is for loaded machines.
  test(`every_acknowledged_write_survives_sigkill_${sync}`, { timeout: 300_000 }, async () => {
    const perLane = Math.ceil(CYCLES / LANES);
    const lanes = await Promise.all(Array.from({ length: LANES }, (_, i) => runLane(sync, i, perLane)));
    const acked = lanes.reduce((s, l) => s + l.acked, 0);
    const inflight = lanes.reduce((s, l) => s + l.uncertainApplied + l.uncertainNotApplied, 0);
    // Guards against a test that passes by checking nothing.
    expect(acked).toBeGreaterThan(perLane * LANES);
    expect(inflight).toBeGreaterThan(0);
    console.log(
      `crash ${sync}: ${perLane * LANES} cycles, ${acked} acknowledged ops, ` +
        `${lanes.reduce((s, l) => s + l.uncertainApplied, 0)}/${inflight} in-flight ops applied, ` +
        `${lanes.reduce((s, l) => s + l.checkpoints, 0)} checkpoints completed, seed ${SEED}`,
    );
  });
});
