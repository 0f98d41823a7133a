#!/usr/bin/env node
import { parseArgs } from 'node:util';

import { runDemo } from './demo.js';
import { CairnError } from './errors.js';
import { open } from './store.js';

const USAGE = `usage: cairn <command> [options]

commands:
  status DIR [--json]      open DIR, print collections, last sequence number and recovery report
  checkpoint DIR [--json]  write a checkpoint
  demo [--dir DIR] [--json]  ingest, query, SIGKILL a writer mid-stream, recover and verify
`;

function json(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2);
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: { json: { type: 'boolean', default: false }, dir: { type: 'string' } },
  });
  const asJson = values.json === true;
  switch (command) {
    case 'status': {
      const dir = positionals[0];
      if (!dir) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'status needs a store directory');
      const db = await open(dir);
      const out = { dir: db.dir, lastSeq: db.lastSeq, collections: db.collections(), recovery: db.recoveryReport };
      await db.close();
      console.log(asJson ? json(out) : `${out.dir}\nlast seq: ${out.lastSeq}\n${out.collections.map((c) => `  ${c.name}: ${c.count} x ${c.dim}d ${c.metric}`).join('\n')}`);
      return 0;
    }
    case 'checkpoint': {
      const dir = positionals[0];
      if (!dir) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'checkpoint needs a store directory');
      const db = await open(dir);
      const { seq } = await db.checkpoint();
      await db.close();
      console.log(asJson ? json({ seq }) : `checkpoint at seq ${seq}`);
      return 0;
    }
    case 'demo':
      return runDemo({ dir: values.dir, json: asJson });
    default:
      process.stderr.write(USAGE);
      return command === undefined || command === 'help' || command === '--help' ? 0 : 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    if (e instanceof CairnError) process.stderr.write(`cairn: ${e.code}: ${e.message}\n`);
    else process.stderr.write(`cairn: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
