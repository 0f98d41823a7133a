/**
 * Failover under network nemeses: a real TCP proxy (test/tcp-proxy.ts) in front of each node's
 * replication port (the address it advertises in etcd) and another between each node and etcd.
 * - cut the primary from its replicas: it keeps its lease but must not acknowledge a single
 *   majority write while cut (CAIRN_REPLICATION_TIMEOUT); after the heal everyone converges;
 * - cut the primary from etcd only: it stops acknowledging within its lease, another node wins,
 *   the old one demotes and, after the heal, rejoins; no acknowledged write is lost;
 * - cut the primary from everything after it committed writes locally that never reached a
 *   replica (its forked tail): after the heal it saves them under rollback/, cuts them from its
 *   WAL and rejoins as a replica; none of them had been acknowledged, none is served.
 * The checker is the harness's (failover-harness.ts): every acknowledgement on the final primary
 * and a majority, one node per epoch, epochs in order and never overlapping in time.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { describe, expect, it } from 'vitest';
import { LAYOUT } from '../packages/cairn/dist/layout.js';
import { Cluster, env, haveEtcd, type Line, type Node, until, useEtcd } from './failover-harness.js';
import { TcpProxy } from './tcp-proxy.js';

useEtcd();

function werrs(n: Node, since: number): Line[] {
  return n.lines.filter((l) => l.event === 'werr' && (l.wall as number) >= since);
}

describe('tcp proxy', () => {
  it('forwards, resets, black-holes and heals a real loopback link', async () => {
    const { createServer, connect } = await import('node:net');
    const echo = createServer((s) => s.pipe(s));
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', () => resolve()));
    const port = (echo.address() as { port: number }).port;
    const proxy = await TcpProxy.start(port);
    const roundTrip = (timeoutMs: number) =>
      new Promise<string>((resolve) => {
        const s = connect(proxy.port, '127.0.0.1');
        let got = '';
        const t = setTimeout(() => {
          s.destroy();
          resolve(`timeout:${got}`);
        }, timeoutMs);
        s.on('error', () => {});
        s.on('data', (b) => {
          got += b.toString();
          if (got === 'ping') {
            clearTimeout(t);
            s.destroy();
            resolve(got);
          }
        });
        s.on('close', () => {
          clearTimeout(t);
          resolve(got === 'ping' ? got : `closed:${got}`);
        });
        s.write('ping');
      });
    expect(await roundTrip(2000)).toBe('ping');
    proxy.cut('reset');
    expect(await roundTrip(2000)).toBe('closed:');
    proxy.cut('drop');
    expect(await roundTrip(300)).toBe('timeout:');
    expect(proxy.stats.droppedBytes).toBeGreaterThanOrEqual(4);
    proxy.heal();
    expect(await roundTrip(2000)).toBe('ping');
    await proxy.close();
    await new Promise<void>((resolve) => echo.close(() => resolve()));
  });
});

describe.runIf(haveEtcd)('failover nemeses through a TCP proxy', () => {
  it('primary cut from its replicas: no acknowledgement while cut (CAIRN_REPLICATION_TIMEOUT), all converge after the heal', async () => {
    const c = new Cluster('cut-repl', env.etcdUrl, { proxies: true });
    await c.start();
    const { node: primary } = await c.servingPrimary(10);
    const replicas = c.nodes.filter((n) => n !== primary);
    c.link(primary).replication.cut('drop');
    const cutAt = Date.now();
    // Long enough for several write timeouts (3 s each) and for the replicas to notice.
    expect(await until(() => werrs(primary, cutAt).some((l) => l.code === 'CAIRN_REPLICATION_TIMEOUT'), 15_000), 'a write timed out').toBe(true);
    await sleep(2 * c.ttl);
    // Nothing new can reach a replica now: every write acknowledged so far must already be on
    // the primary and on at least one replica (a majority of 3), checked before the heal.
    const acked = c.acks().map((a) => a.id);
    const holding: string[] = [];
    for (const n of c.nodes) {
      const r = await n.request('have', { ids: acked });
      if ((r.missing as string[]).length === 0) holding.push(n.id);
    }
    expect(holding, `nodes holding all ${acked.length} acknowledged writes while the primary is cut`).toContain(primary.id);
    expect(holding.length, `nodes holding every acknowledged write while cut: ${holding.join(', ')}`).toBeGreaterThanOrEqual(2);
    const duringCut = c.acks().filter((a) => a.wall > cutAt + 1000);
    const errors = werrs(primary, cutAt);
    c.link(primary).replication.heal();
    const healAt = Date.now();
    expect(await until(() => c.acks().some((a) => a.wall > healAt), 30_000), 'writes acknowledged again after the heal').toBe(true);
    for (const r of replicas) expect(r.role, `${r.id} after the heal`).toBe('replica');
    const v = await c.verify();
    expect(v.onAll.length, `every node converged: ${v.onAll.join(', ')}`).toBe(3);
    console.log(
      `cut primary ${primary.id} from replicas: ${errors.length} writes refused while cut (${[...new Set(errors.map((e) => e.code))].join(', ')}), ` +
        `${duringCut.length} acknowledged later than 1 s after the cut (each one held by a majority); ${v.acked} acknowledged in all, on ${v.onAll.join(', ')}; ` +
        `proxy: ${JSON.stringify(c.link(primary).replication.stats)}`,
    );
  }, 120_000);

  it('primary cut from etcd only: it stops acknowledging within its lease, another wins, the old one rejoins, nothing acknowledged is lost', async () => {
    const c = new Cluster('cut-etcd', env.etcdUrl, { proxies: true });
    await c.start();
    const { node: old, epoch } = await c.servingPrimary(10);
    c.link(old).etcd.cut('drop');
    // Its last renewal was sent before this moment: its lease cannot outlive cutAt + TTL.
    const cutAt = Date.now();
    const { node: next, epoch: newEpoch } = await c.servingPrimary(5, 4 * c.ttl + 10_000, old);
    expect(next).not.toBe(old);
    expect(BigInt(newEpoch)).toBeGreaterThan(BigInt(epoch));
    expect(await until(() => old.role !== 'primary', 2 * c.ttl), 'the old primary demoted itself').toBe(true);
    const late = c.acks().filter((a) => a.node === old.id && a.wall > cutAt + c.ttl);
    expect(late, 'acknowledgements by the primary cut from etcd after its lease could have expired').toEqual([]);
    const lastOld = Math.max(...c.ackWalls((a) => a.node === old.id));
    const firstNew = Math.min(...c.ackWalls((a) => a.epoch === newEpoch));
    c.link(old).etcd.heal();
    expect(
      await until(() => old.role === 'replica', 30_000),
      `the old primary rejoins as a replica (is ${old.role}: ${String(old.roles().at(-1)?.reason)})`,
    ).toBe(true);
    const v = await c.verify();
    console.log(
      `cut primary ${old.id} from etcd: ${next.id} took over (epoch ${epoch} -> ${newEpoch}); old primary's last ack ${lastOld - cutAt} ms after the cut, ` +
        `new primary's first ack ${firstNew - cutAt} ms after it; ${v.acked} acknowledged writes, all on ${v.onAll.join(', ')}`,
    );
  }, 120_000);

  it('forked tail: a primary cut from everything keeps local commits; after the heal it cuts them into rollback/ and rejoins as a replica', async () => {
    const c = new Cluster('fork-tail', env.etcdUrl, { proxies: true });
    await c.start();
    const { node: old, epoch } = await c.servingPrimary(10);
    // Cut from its replicas first: each write it tries commits locally, then times out.
    c.link(old).replication.cut('drop');
    const cutAt = Date.now();
    expect(
      await until(() => werrs(old, cutAt).filter((l) => l.code === 'CAIRN_REPLICATION_TIMEOUT' && (l.issued as number) > cutAt).length >= 2, 20_000),
      'writes committed locally and timed out',
    ).toBe(true);
    // Only writes issued after the cut: one issued just before may have reached a replica whose
    // acknowledgement the cut then dropped (it timed out, yet it is in that replica's log).
    const unacked = werrs(old, cutAt)
      .filter((l) => l.code === 'CAIRN_REPLICATION_TIMEOUT' && (l.issued as number) > cutAt)
      .map((l) => l.id as string);
    // Then from etcd too: its lease runs out, a replica wins a new epoch without those records.
    c.link(old).etcd.cut('drop');
    const { node: next, epoch: newEpoch } = await c.servingPrimary(5, 4 * c.ttl + 10_000, old);
    expect(BigInt(newEpoch)).toBeGreaterThan(BigInt(epoch));
    expect(await until(() => old.role !== 'primary', 2 * c.ttl), 'the old primary demoted itself').toBe(true);
    // Restarted while still cut from etcd, it cannot yet know where its log forks: it serves none of it.
    await old.kill('SIGKILL');
    c.restart(old);
    expect(await until(() => old.roles().length > 0, 30_000), 'the old primary restarted').toBe(true);
    const early = await old.request('have', { ids: unacked });
    expect(early.missing, 'the restarted old primary serves its forked tail before reaching etcd').toEqual(unacked);
    expect(String(early.lastError)).toContain('CAIRN_UNAVAILABLE');
    c.link(old).replication.heal();
    c.link(old).etcd.heal();
    expect(
      await until(() => old.role === 'replica', 30_000),
      `the old primary rejoins as a replica (is ${old.role}: ${String(old.roles().at(-1)?.reason)})`,
    ).toBe(true);
    const rb = old.lines.find((l) => l.event === 'rollback');
    expect(rb, 'the old primary cut its forked tail').toBeDefined();
    const first = BigInt(rb?.firstSeq as string);
    const last = BigInt(rb?.lastSeq as string);
    expect(Number(rb?.records)).toBeGreaterThanOrEqual(unacked.length);
    expect(rb?.epoch).toBe(epoch);
    expect(rb?.primary).toBe(next.id);
    // The note beside the saved segment says what was cut and why.
    const file = join(old.dir, String(rb?.file));
    const note = JSON.parse(readFileSync(`${file}${LAYOUT.noteSuffix}`, 'utf8')) as { first_seq: number; last_seq: number; records: number; reason: string };
    expect([BigInt(note.first_seq), BigInt(note.last_seq)]).toEqual([first, last]);
    expect(note.reason).toMatch(/never acknowledged/);
    expect(readFileSync(file).length).toBeGreaterThan(Number(rb?.bytes) - 1);
    // None of the cut records had been acknowledged (the checker's log has every ack's seq).
    const ackedInCut = c.acks().filter((a) => a.node === old.id && a.epoch === epoch && BigInt(a.seq) >= first);
    expect(ackedInCut, 'acknowledged records among those cut').toEqual([]);
    // And no node serves them: not the old primary after the cut, not the others.
    for (const n of c.nodes) {
      const r = await n.request('have', { ids: unacked });
      expect(r.missing, `${n.id} serves records cut from the old primary's tail`).toEqual(unacked);
    }
    const v = await c.verify();
    expect(v.onAll, 'the old primary holds every acknowledged write again').toContain(old.id);
    console.log(
      `forked tail: ${old.id} (epoch ${epoch}) committed ${unacked.length} writes no replica got; ${next.id} won epoch ${newEpoch}; ` +
        `${old.id} cut seqs ${first}..${last} (${String(rb?.records)} records, ${String(rb?.bytes)} bytes) into ${String(rb?.file)} and rejoined; ${v.acked} acknowledged writes, all on ${v.onAll.join(', ')}`,
    );
  }, 120_000);
});
