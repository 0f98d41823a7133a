/** Commands on a store as a whole: status, range, checkpoint. None of them creates a store. */
import { recoverableRange } from '../restore.js';
import { open } from '../store.js';
import { type Command, existingStore, UsageError } from './command.js';
import { json } from './output.js';

export const status: Command = {
  name: 'status',
  help: '  status DIR [--json]      open DIR, print collections, last sequence number and recovery report\n',
  options: {},
  async run({ positionals, json: asJson }) {
    const dir = positionals[0];
    if (!dir) throw new UsageError('status needs a store directory');
    const db = await open(await existingStore(dir), { create: false });
    const out = { dir: db.dir, lastSeq: db.lastSeq, collections: db.collections(), recovery: db.recoveryReport };
    await db.close();
    console.log(
      asJson ? json(out) : `${out.dir}\nlast seq: ${out.lastSeq}\n${out.collections.map((c) => `  ${c.name}: ${c.count} x ${c.dim}d ${c.metric}`).join('\n')}`,
    );
    return 0;
  },
};

export const range: Command = {
  name: 'range',
  help: '  range DIR [--json]       print the recoverable range (sequence numbers and commit times)\n',
  options: {},
  async run({ positionals, json: asJson }) {
    const dir = positionals[0];
    if (!dir) throw new UsageError('range needs a store directory');
    const r = await recoverableRange(await existingStore(dir));
    console.log(asJson ? json(r) : `recoverable: seq ${r.from.seq} (${r.from.time.toISOString()}) .. seq ${r.to.seq} (${r.to.time.toISOString()})`);
    return 0;
  },
};

export const checkpoint: Command = {
  name: 'checkpoint',
  help: '  checkpoint DIR [--json]  write a checkpoint\n',
  options: {},
  async run({ positionals, json: asJson }) {
    const dir = positionals[0];
    if (!dir) throw new UsageError('checkpoint needs a store directory');
    const db = await open(await existingStore(dir), { create: false });
    try {
      const { seq } = await db.checkpoint();
      console.log(asJson ? json({ seq }) : `checkpoint at seq ${seq}`);
    } finally {
      await db.close();
    }
    return 0;
  },
};
