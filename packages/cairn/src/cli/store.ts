/** Commands on a store as a whole: status, checkpoint. */
import { CairnError } from '../errors.js';
import { open } from '../store.js';
import type { Command } from './command.js';
import { json } from './output.js';

export const status: Command = {
  name: 'status',
  help: '  status DIR [--json]      open DIR, print collections, last sequence number and recovery report\n',
  options: {},
  async run({ positionals, json: asJson }) {
    const dir = positionals[0];
    if (!dir) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'status needs a store directory');
    const db = await open(dir);
    const out = { dir: db.dir, lastSeq: db.lastSeq, collections: db.collections(), recovery: db.recoveryReport };
    await db.close();
    console.log(
      asJson ? json(out) : `${out.dir}\nlast seq: ${out.lastSeq}\n${out.collections.map((c) => `  ${c.name}: ${c.count} x ${c.dim}d ${c.metric}`).join('\n')}`,
    );
    return 0;
  },
};

export const checkpoint: Command = {
  name: 'checkpoint',
  help: '  checkpoint DIR [--json]  write a checkpoint\n',
  options: {},
  async run({ positionals, json: asJson }) {
    const dir = positionals[0];
    if (!dir) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'checkpoint needs a store directory');
    const db = await open(dir);
    const { seq } = await db.checkpoint();
    await db.close();
    console.log(asJson ? json({ seq }) : `checkpoint at seq ${seq}`);
    return 0;
  },
};
