#!/usr/bin/env node
import { parseArgs } from 'node:util';

import { runDemo } from './demo.js';
import { CairnError } from './errors.js';
import { listSnapshots, restore } from './recovery.js';
import { open } from './store.js';

const USAGE = `usage: cairn <command> [options]

commands:
  status DIR [--json]      open DIR, print collections, last sequence number and recovery report
  checkpoint DIR [--json]  write a checkpoint
  snapshot DIR [--incremental] [--json]   checkpoint and snapshot DIR
  snapshots DIR [--json]                  list complete snapshots
  restore SOURCE TARGET [--seq N | --time ISO] [--json]
                           point-in-time restore into a new directory (works while SOURCE is in use)
  demo [--dir DIR] [--json]  ingest, query, SIGKILL a writer mid-stream, recover and verify
`;

/** On a terminal, show elapsed time while a long operation runs; silent otherwise. */
async function withProgress<T>(label: string, enabled: boolean, work: Promise<T>): Promise<T> {
  if (!enabled || !process.stderr.isTTY) return work;
  const start = Date.now();
  const frames = ['|', '/', '-', '\\'];
  let i = 0;
  const timer = setInterval(() => {
    process.stderr.write(`\r${frames[i++ % frames.length]} ${label} ${((Date.now() - start) / 1000).toFixed(1)}s`);
  }, 100);
  try {
    return await work;
  } finally {
    clearInterval(timer);
    process.stderr.write(`\r${' '.repeat(label.length + 12)}\r`);
  }
}

function json(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2);
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      json: { type: 'boolean', default: false },
      dir: { type: 'string' },
      incremental: { type: 'boolean', default: false },
      seq: { type: 'string' },
      time: { type: 'string' },
    },
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
    case 'snapshot': {
      const dir = positionals[0];
      if (!dir) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'snapshot needs a store directory');
      const db = await open(dir);
      try {
        const info = await withProgress('snapshot', !asJson, db.snapshot({ incremental: values.incremental === true }));
        console.log(asJson ? json(info) : `snapshot ${info.id}: seq ${info.seq}, ${info.kind}${info.base ? ` on ${info.base}` : ''}, ${info.bytes} bytes`);
      } finally {
        await db.close();
      }
      return 0;
    }
    case 'snapshots': {
      const dir = positionals[0];
      if (!dir) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'snapshots needs a store directory');
      const list = await listSnapshots(dir);
      if (asJson) console.log(json(list.map(({ files: _files, ...rest }) => rest)));
      else for (const s of list) console.log(`${s.id}  seq ${s.seq}  ${s.time.toISOString()}  ${s.kind}${s.base ? ` (base ${s.base})` : ''}  ${s.bytes} bytes`);
      return 0;
    }
    case 'restore': {
      const [source, target] = positionals;
      if (!source || !target) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'restore needs SOURCE and TARGET directories');
      if (values.seq !== undefined && values.time !== undefined) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'give --seq or --time, not both');
      let to: { seq: bigint } | { time: Date } | undefined;
      if (values.seq !== undefined) {
        if (!/^\d+$/.test(values.seq)) throw new CairnError('CAIRN_INVALID_ARGUMENT', '--seq must be a non-negative integer');
        to = { seq: BigInt(values.seq) };
      } else if (values.time !== undefined) {
        const t = new Date(values.time);
        if (Number.isNaN(t.getTime())) throw new CairnError('CAIRN_INVALID_ARGUMENT', '--time must be an ISO date');
        to = { time: t };
      }
      const result = await withProgress('restore', !asJson, restore({ source, target, ...(to ? { to } : {}) }));
      console.log(asJson ? json(result) : `restored ${source} at seq ${result.seq} (${result.time.toISOString()}) into ${target}${result.snapshot ? ` from snapshot ${result.snapshot}` : ''}, replayed ${result.replayedRecords} WAL records`);
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
