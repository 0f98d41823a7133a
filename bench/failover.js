// Failover benchmark: how long a three-node Cairn cluster (etcd leader key, w: 'majority')
// takes from SIGKILL of the primary to the first acknowledged write on the new one, split into
// lease expiry + detection, the election's fencing round, and the first write; over N kills at
// leaseTtlMs 5000 and 2000. Then write throughput through a planned switchover.
//
//   node bench/failover.js                        # 20 kills per TTL, about 6 minutes
//   BENCH_FAILOVERS=5 node bench/failover.js      # fewer kills
//   BENCH_TTLS=2000 node bench/failover.js        # one TTL
//   BENCH_FAILOVERS=0 node bench/failover.js      # the switchover only
//
// A timed harness, not tinybench (one failover is one sample of seconds; tinybench's rounds
// fit micro-operations), printed with console.table beside the load average (os.loadavg())
// at the start and the end. The reference is Patroni's documented defaults (ttl 30 s,
// loop_wait 10 s, retry_timeout 10 s): Patroni is not installed here, so its row is what its
// documentation implies, not a measurement. etcd is Debian's etcd-server on loopback, with its
// data under bench/.bench-data/failover/ (removed at the end).
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { startEtcd } from '../packages/cairn/dist/drill/etcd.js';
import { freePort } from '../packages/cairn/dist/drill/free-port.js';

const here = dirname(fileURLToPath(import.meta.url));
const DATA_DIR = join(here, '.bench-data', 'failover');
const RUNS = Math.max(0, Math.min(100, Number(process.env.BENCH_FAILOVERS ?? 20)));
const TTLS = (process.env.BENCH_TTLS ?? '5000,2000').split(',').map(Number);
const TOKEN = 'bench-failover-token-0123456789abcdef0123';
const IDS = ['n1', 'n2', 'n3'];
const WRITERS = 8;
const load = () =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(' / ');

async function until(cond, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 100_000 && Date.now() < deadline; i++) {
    const v = cond();
    if (v) return v;
    await sleep(10);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

class Node {
  constructor(id, config) {
    this.id = id;
    this.config = config;
    this.lines = [];
  }
  start() {
    this.proc = spawn(process.execPath, [join(here, 'workers', 'failover-node.js'), JSON.stringify(this.config)], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    let partial = '';
    this.proc.stdout.setEncoding('utf8');
    this.proc.stdout.on('data', (s) => {
      const parts = (partial + s).split('\n');
      partial = parts.pop() ?? '';
      for (const p of parts) if (p) this.lines.push(JSON.parse(p));
    });
  }
  get alive() {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }
  get role() {
    return this.lines.findLast((l) => l.e === 'role')?.role;
  }
  get epoch() {
    return this.lines.findLast((l) => l.e === 'role')?.epoch;
  }
  async kill() {
    const closed = new Promise((resolve) => this.proc.once('close', resolve));
    this.proc.kill('SIGKILL');
    await closed;
  }
}

async function startCluster(name, ttl, etcdUrl) {
  const nodes = [];
  for (const id of IDS) {
    const dir = join(DATA_DIR, name, id);
    const n = new Node(id, {
      writers: WRITERS,
      options: {
        dir,
        nodeId: id,
        cluster: name,
        listen: `127.0.0.1:${await freePort()}`,
        etcd: [etcdUrl],
        voters: IDS,
        token: TOKEN,
        leaseTtlMs: ttl,
        writeConcern: { w: 'majority', timeoutMs: 3000 },
      },
    });
    n.start();
    nodes.push(n);
  }
  return nodes;
}

/** The primary once it has acknowledged `min` writes in its epoch. */
function serving(nodes, min, exclude) {
  for (const n of nodes) {
    if (n === exclude || !n.alive || n.role !== 'primary') continue;
    const epoch = n.epoch;
    let count = 0;
    for (const l of n.lines) if (l.e === 'ack' && l.epoch === epoch && ++count >= min) return n;
  }
  return undefined;
}

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
  return { median: at(0.5), p95: at(0.95), max: s[s.length - 1] };
};

async function killRuns(ttl, etcdUrl) {
  const nodes = await startCluster(`kill-${ttl}`, ttl, etcdUrl);
  const samples = { expiry: [], fencing: [], firstAck: [], total: [] };
  try {
    for (let run = 0; run < RUNS; run++) {
      const old = await until(() => serving(nodes, 20), 8 * ttl + 30_000, 'a serving primary');
      const oldEpoch = BigInt(old.epoch);
      const killedAt = Date.now();
      await old.kill();
      const next = await until(() => serving(nodes, 1, old), 8 * ttl + 30_000, 'a new primary');
      const epoch = next.epoch;
      if (BigInt(epoch) <= oldEpoch) throw new Error(`new primary ${next.id} has epoch ${epoch} <= ${oldEpoch}`);
      // The winner's 'candidate' line of the new epoch: it created the leader key then.
      const won = next.lines.find((l) => l.e === 'role' && l.role === 'candidate' && l.epoch === epoch && l.wall >= killedAt);
      const promoted = next.lines.find((l) => l.e === 'role' && l.role === 'primary' && l.epoch === epoch);
      const ack = next.lines.find((l) => l.e === 'ack' && l.epoch === epoch);
      samples.expiry.push(won.wall - killedAt);
      samples.fencing.push(promoted.wall - won.wall);
      samples.firstAck.push(ack.wall - promoted.wall);
      samples.total.push(ack.wall - killedAt);
      process.stderr.write(
        `  ttl ${ttl} run ${run + 1}/${RUNS}: ${old.id} killed, ${next.id} first ack after ${ack.wall - killedAt} ms (load ${loadavg()[0].toFixed(2)})\n`,
      );
      // The old primary comes back (it rejoins as a replica) before the next kill.
      old.lines = [];
      old.start();
      await until(() => old.role === 'replica', 8 * ttl + 30_000, `${old.id} back as a replica`);
    }
  } finally {
    for (const n of nodes) if (n.alive) await n.kill();
  }
  return samples;
}

async function switchoverRun(ttl, etcdUrl) {
  const nodes = await startCluster(`switch-${ttl}`, ttl, etcdUrl);
  try {
    const old = await until(() => serving(nodes, 200), 8 * ttl + 30_000, 'a serving primary');
    await until(() => nodes.every((n) => n.role === 'primary' || n.role === 'replica'), 30_000, 'replicas');
    const steadyFrom = Date.now();
    await sleep(3000);
    const steadyTo = Date.now();
    let askedAt = 0;
    let next;
    let attempts = 0;
    // A switchover the target cannot finish catching up to within the TTL fails and leaves the
    // primary in place (its writes go on): count it and ask again, at most 3 times.
    for (; attempts < 3 && !next; attempts++) {
      const before = old.lines.filter((l) => l.e === 'stepped').length;
      old.proc.stdin.write('switchover\n');
      askedAt = Date.now();
      await until(() => serving(nodes, 1, old) || old.lines.filter((l) => l.e === 'stepped').length > before, 8 * ttl + 30_000, 'the switchover');
      const stepped = old.lines.filter((l) => l.e === 'stepped')[before];
      if (stepped && !stepped.ok) {
        process.stderr.write(`  switchover refused: ${stepped.error}\n`);
        continue;
      }
      next = await until(() => serving(nodes, 1, old), 8 * ttl + 30_000, 'the new primary').catch((e) => {
        for (const n of nodes)
          process.stderr.write(`  ${n.id}: ${JSON.stringify(n.lines.filter((l) => l.e === 'role' || l.e === 'stepped' || l.e === 'dbg'))}\n`);
        throw e;
      });
    }
    if (!next) throw new Error('three switchovers failed');
    await sleep(3000);
    const end = Date.now();
    const acks = nodes.flatMap((n) => n.lines.filter((l) => l.e === 'ack'));
    const count = (from, to) => acks.filter((a) => a.wall >= from && a.wall < to).length;
    const lastOld = Math.max(...old.lines.filter((l) => l.e === 'ack').map((l) => l.wall));
    const firstNew = Math.min(...next.lines.filter((l) => l.e === 'ack' && l.epoch === next.epoch).map((l) => l.wall));
    const refused = nodes.flatMap((n) => n.lines.filter((l) => l.e === 'err' && l.wall >= askedAt));
    return {
      attempts,
      from: old.id,
      to: next.id,
      steady: (1000 * count(steadyFrom, steadyTo)) / (steadyTo - steadyFrom),
      through: (1000 * count(askedAt - 1000, end)) / (end - askedAt + 1000),
      gap: firstNew - lastOld,
      notPrimary: refused.filter((e) => e.code === 'CAIRN_NOT_PRIMARY').length,
      otherRefusals: [
        ...refused
          .filter((e) => e.code !== 'CAIRN_NOT_PRIMARY')
          .reduce((m, e) => m.set(`${e.node}: ${e.code}`, (m.get(`${e.node}: ${e.code}`) ?? 0) + 1), new Map())
          .entries(),
      ]
        .map(([code, n]) => `${code} x${n}`)
        .join(', '),
    };
  } finally {
    for (const n of nodes) if (n.alive) await n.kill();
  }
}

rmSync(DATA_DIR, { recursive: true, force: true });
mkdirSync(DATA_DIR, { recursive: true });
const loadStart = load();
console.log(`failover bench: ${RUNS} SIGKILLs of the primary per TTL (${TTLS.join(', ')} ms), 3 nodes, ${WRITERS} writers at w: 'majority'`);
console.log(`load average at start (1/5/15 min): ${loadStart}`);
const etcd = await startEtcd(join(DATA_DIR, 'etcd'));
try {
  const rows = [];
  for (const ttl of RUNS > 0 ? TTLS : []) {
    const s = await killRuns(ttl, etcd.url);
    const row = (phase, xs) => ({ ttl: `${ttl} ms`, phase, ...stats(xs) });
    rows.push(
      row('lease expiry + detection (kill -> leader key of the serving epoch won; failed rounds included)', s.expiry),
      row('fencing round (won -> serving: majority reports the epoch)', s.fencing),
      row('first write (serving -> first majority ack)', s.firstAck),
      row('total: kill -> first acknowledged write', s.total),
    );
  }
  rows.push({
    ttl: '30000 ms',
    phase: 'Patroni defaults (reference, not measured: no Patroni here): up to ttl 30 s for the key to expire + up to loop_wait 10 s to notice',
    median: '-',
    p95: '-',
    max: 30000 + 10000,
  });
  console.log('\nSIGKILL of the primary -> first acknowledged write on the new one (ms)');
  console.table(rows);
  const sw = [];
  for (const ttl of TTLS.slice(-1)) {
    const r = await switchoverRun(ttl, etcd.url);
    sw.push({
      ttl: `${ttl} ms`,
      switchover: `${r.from} -> ${r.to}${r.attempts > 1 ? ` (attempt ${r.attempts})` : ''}`,
      'steady acks/s': Math.round(r.steady),
      'acks/s over the switchover (1 s before to 3 s after)': Math.round(r.through),
      'ratio through/steady': (r.through / r.steady).toFixed(2),
      'no-ack gap ms': r.gap,
      'CAIRN_NOT_PRIMARY refusals': r.notPrimary,
      'other refusals (writes in flight when it demoted)': r.otherRefusals || 'none',
    });
  }
  console.log(`\nWrite throughput through a planned switchover (${WRITERS} writers, w: 'majority')`);
  console.table(sw);
  console.log(`load average at end (1/5/15 min): ${load()} (start: ${loadStart})`);
} finally {
  await etcd.stop();
  rmSync(DATA_DIR, { recursive: true, force: true });
}
