// A failover node for bench/failover.js, in its own process: argv[2] is JSON
// { options (startNode's, token included), writers }. While primary it runs `writers` loops of
// single-record upserts at w: 'majority'. Prints JSON lines: {e:'role', role, epoch, wall} at
// start and on each change; {e:'ack', epoch, wall} per acknowledged write; {e:'err', node, code, wall}
// per refused one. Stdin 'switchover\n' asks it to step down (answers {e:'stepped', ok}).
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';

import { startNode } from 'cairndb';

const { options, writers } = JSON.parse(process.argv[2]);
setTimeout(() => process.exit(3), 1_800_000).unref();
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const node = await startNode(options);
const role = () => out({ e: 'role', role: node.role, epoch: String(node.epoch), wall: Date.now() });
role();
node.on('role', role);

const vector = [0.5, 0.25, 0.125, 1];
let made = false;
async function writer(w) {
  for (let k = 0; k < 10_000_000; k++) {
    if (node.role !== 'primary') {
      await sleep(5);
      continue;
    }
    const epoch = String(node.epoch);
    try {
      const db = node.db;
      if (!made && !db.collections().some((c) => c.name === 'b')) {
        made = true;
        await db.createCollection('b', { dim: 4, metric: 'l2' });
      }
      await db.collection('b').upsert([{ id: `${options.nodeId}-${epoch}-${w}-${k}`, vector }], { w: 'majority', timeoutMs: 3000 });
      out({ e: 'ack', epoch, wall: Date.now() });
    } catch (err) {
      made = false;
      out({ e: 'err', node: options.nodeId, code: err.code ?? String(err), wall: Date.now() });
      await sleep(5);
    }
  }
}
for (let w = 0; w < writers; w++) void writer(w);

for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim() === 'switchover') {
    node.stepDown().then(
      () => out({ e: 'stepped', ok: true, wall: Date.now() }),
      (err) => out({ e: 'stepped', ok: false, error: err.message, wall: Date.now() }),
    );
  }
}
