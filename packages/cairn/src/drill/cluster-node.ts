/**
 * Child process of the cluster scenarios: one `startNode` per process, writing single-record
 * upserts with `w: 'majority'` whenever it is primary. Prints JSON lines: `{event:'role', role,
 * epoch}` at start and on each change, `{event:'ack', id}` once a write's promise resolved.
 * Stdin (one JSON line each, answered `{id, ok, ...}`): `stop-writes`; `check {ids}` (waits,
 * bounded, for every id; answers the missing ones); `close`.
 * Usage: cluster-node.js CONFIG_JSON (startNode's options plus `collection` and `dim`).
 */
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { startNode } from '../failover/node.js';
import type { StartNodeOptions } from '../failover/options.js';
import { drillWriteRecord } from './writer.js';

const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))}\n`);

async function main(): Promise<void> {
  const { collection, dim, ...options } = JSON.parse(process.argv[2] ?? '{}') as StartNodeOptions & { collection: string; dim: number };
  const node = await startNode(options);
  const role = () => out({ event: 'role', role: node.role, epoch: node.epoch, reason: node.fencedReason });
  role();
  node.on('role', role);
  // The node loop's errors as they change (for the drill's diagnostics).
  let lastError: string | null = null;
  setInterval(() => {
    if (node.lastError === lastError) return;
    lastError = node.lastError;
    out({ event: 'error', error: lastError });
  }, 200).unref();
  let writing = true;
  const writer = (async () => {
    for (let k = 0; writing; k++) {
      if (node.role !== 'primary') {
        await sleep(20);
        continue;
      }
      const id = `drill-cluster-${node.nodeId}-${node.epoch}-${k}`;
      try {
        await node.db.collection(collection).upsert([{ id, ...drillWriteRecord(id, dim) }], { w: 'majority', timeoutMs: 3000 });
        out({ event: 'ack', id });
      } catch {
        await sleep(10);
      }
    }
  })();
  for await (const line of createInterface({ input: process.stdin })) {
    const r = JSON.parse(line) as { id: string; op: string; ids?: string[] };
    try {
      if (r.op === 'stop-writes') {
        writing = false;
        await writer;
        out({ id: r.id, ok: true });
      } else if (r.op === 'check') {
        let missing = r.ids ?? [];
        for (let i = 0; i < 200 && missing.length > 0; i++) {
          try {
            // A role change replaces the store: take it again each round.
            const col = node.db.collection(collection);
            const still: string[] = [];
            for (const id of missing) {
              const got = await col.get(id);
              const want = drillWriteRecord(id, dim);
              if (!got || JSON.stringify(Array.from(got.vector)) !== JSON.stringify(Array.from(want.vector))) still.push(id);
            }
            missing = still;
          } catch {
            // Between roles: try again.
          }
          if (missing.length > 0) await sleep(50);
        }
        out({ id: r.id, ok: true, missing, role: node.role });
      } else if (r.op === 'close') {
        writing = false;
        await writer;
        await node.close();
        out({ id: r.id, ok: true });
        process.exit(0);
      }
    } catch (e) {
      out({ id: r.id, ok: false, error: String(e) });
    }
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  setTimeout(() => process.exit(3), 600_000).unref();
  main().catch((e) => {
    process.stderr.write(`${e instanceof Error ? e.stack : e}\n`);
    process.exit(1);
  });
}
