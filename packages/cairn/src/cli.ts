#!/usr/bin/env node
import { parseArgs } from 'node:util';

import { BackupManager } from './backup/manager.js';
import type { BackupProgress } from './backup/types.js';
import type { BackupKind } from './backup/metadata.js';
import { runDemo } from './demo.js';
import { CairnError } from './errors.js';
import { listSnapshots, restore } from './restore.js';
import { scrub } from './scrub/directory.js';
import type { ScrubProgress } from './scrub/index.js';
import { open } from './store.js';

const USAGE = `usage: cairn <command> [options]

commands:
  status DIR [--json]      open DIR, print collections, last sequence number and recovery report
  checkpoint DIR [--json]  write a checkpoint
  snapshot DIR [--incremental] [--json]   checkpoint and snapshot DIR
  snapshots DIR [--json]                  list complete snapshots
  restore SOURCE TARGET [--seq N | --time ISO] [--json]
                           point-in-time restore into a new directory (works while SOURCE is in use)

backups: CAIRN_BACKUP_KEY (64 hex digits) encrypts and decrypts; CAIRN_S3_ENDPOINT points s3:// at
an S3-compatible server (credentials from the usual AWS_* variables).
  scrub DIR [--repair] [--throttle MBps] [--concurrency N] [--json]
                           verify every file against its checksums; with --repair, quarantine
                           damaged files and replace them; exit status 1 if damage remains
  backup DIR --to URL [--to URL...] [--kind full|incremental|differential] [--json]
                           back up DIR to file:///path or s3://bucket/prefix
  backups URL [--json]     list the backups in a target
  verify URL ID [--json]   read back every chunk of a backup; exit 1 if anything is wrong
  restore-backup URL ID TARGET [--seq N | --time ISO] [--json]
                           verify, then restore a backup into a new directory
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

function megabytes(n: number): string {
  return `${(n / 1e6).toFixed(1)} MB`;
}

/** One status line on a terminal: bytes read of the total, rate and ETA (timed from the first
 *  report, so opening the store does not count). */
function scrubProgressLine(): (p: ScrubProgress) => void {
  let width = 0;
  let started = 0;
  return (p) => {
    started ||= Date.now() - 200;
    const secs = (Date.now() - started) / 1000;
    const rate = secs > 0 ? p.bytes / secs : 0;
    const left = Math.max(0, p.totalBytes - p.bytes);
    const eta = rate > 0 ? `${Math.ceil(left / rate)}s` : '?';
    const pct = p.totalBytes > 0 ? Math.min(100, Math.floor((100 * p.bytes) / p.totalBytes)) : 100;
    const line = `scrub ${megabytes(p.bytes)} / ${megabytes(p.totalBytes)} (${pct}%)  ${p.files}/${p.totalFiles} files  ${megabytes(rate)}/s  ETA ${eta}`;
    process.stderr.write(`\r${line.padEnd(width)}`);
    width = line.length;
  };
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
      repair: { type: 'boolean', default: false },
      throttle: { type: 'string' },
      concurrency: { type: 'string' },
      to: { type: 'string', multiple: true },
      kind: { type: 'string' },
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
    case 'backup': {
      const dir = positionals[0];
      const targets = values.to ?? [];
      if (!dir || targets.length === 0) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'backup needs a store directory and --to URL');
      const backups = backupManager(dir, targets);
      try {
        const bar = progressBar(!asJson);
        let m;
        try {
          m = await backups.create({ kind: (values.kind ?? 'full') as BackupKind, onProgress: bar.update });
        } finally {
          bar.done();
        }
        if (asJson) console.log(json(m));
        else {
          for (const t of m.targets) {
            if (t.ok) {
              const b = t.metadata;
              console.log(`${t.target}: backup ${b.id} (${b.kind}${b.base ? ` on ${b.base}` : ''}) ${b.files} files, ${b.bytes.raw} bytes raw, ${b.bytes.stored} stored, ${b.bytes.written} written now`);
            } else console.log(`${t.target}: FAILED: ${t.error.code}: ${t.error.message}`);
          }
        }
        return m.targets.every((t) => t.ok) ? 0 : 1;
      } finally {
        await backups.close();
      }
    }
    case 'backups': {
      const url = positionals[0];
      if (!url) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'backups needs a target URL');
      const backups = backupManager('.', [url]);
      try {
        const list = await backups.list();
        if (asJson) console.log(json(list));
        else for (const b of list) console.log(`${b.id}  ${b.status}  ${b.kind}${b.base ? ` (base ${b.base})` : ''}  ${b.timestamp.toISOString()}  ${b.bytes.raw} bytes raw, ${b.bytes.stored} stored${b.range ? `  seq ${b.range.from.seq}..${b.range.to.seq}` : ''}${b.error ? `  ${b.error}` : ''}`);
      } finally {
        await backups.close();
      }
      return 0;
    }
    case 'verify': {
      const [url, id] = positionals;
      if (!url || !id) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'verify needs a target URL and a backup id');
      const backups = backupManager('.', [url]);
      try {
        const report = await withProgress('verify', !asJson, backups.verify(id));
        if (asJson) console.log(json(report));
        else {
          for (const t of report.targets) console.log(`${t.target}: ${t.ok ? 'ok' : 'DAMAGED'}, ${t.chunks} chunks, ${t.bytes} bytes read`);
          for (const p of report.problems) console.log(`  ${p.kind}: ${p.message}`);
        }
        return report.ok ? 0 : 1;
      } finally {
        await backups.close();
      }
    }
    case 'restore-backup': {
      const [url, id, target] = positionals;
      if (!url || !id || !target) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'restore-backup needs a target URL, a backup id and a directory');
      const to = restoreTarget(values.seq, values.time);
      const backups = backupManager('.', [url]);
      try {
        const r = await withProgress('restore', !asJson, backups.restore(id, target, to ? { to } : {}));
        console.log(asJson ? json(r) : `restored backup ${id} from ${r.from} at seq ${r.seq} (${r.time.toISOString()}) into ${target}, replayed ${r.replayedRecords} WAL records`);
      } finally {
        await backups.close();
      }
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
    case 'scrub': {
      const dir = positionals[0];
      if (!dir) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'scrub needs a store directory');
      const throttle = values.throttle === undefined ? undefined : Number(values.throttle);
      if (throttle !== undefined && !(throttle > 0)) throw new CairnError('CAIRN_INVALID_ARGUMENT', '--throttle must be a positive number of MB/s');
      const concurrency = values.concurrency === undefined ? undefined : Number(values.concurrency);
      if (concurrency !== undefined && !(Number.isInteger(concurrency) && concurrency >= 1)) throw new CairnError('CAIRN_INVALID_ARGUMENT', '--concurrency must be a positive integer');
      const tty = !asJson && process.stderr.isTTY;
      const abort = new AbortController();
      const onSigint = () => abort.abort();
      process.once('SIGINT', onSigint);
      let report;
      try {
        report = await scrub(dir, {
          repair: values.repair === true,
          ...(throttle !== undefined ? { throttleMBps: throttle } : {}),
          ...(concurrency !== undefined ? { concurrency } : {}),
          signal: abort.signal,
          ...(tty ? { onProgress: scrubProgressLine() } : {}),
        });
      } finally {
        process.off('SIGINT', onSigint);
        if (tty) process.stderr.write('\n');
      }
      if (asJson) console.log(json(report));
      else {
        console.log(`${report.files} files, ${megabytes(report.bytes)} verified in ${(report.durationMs / 1000).toFixed(1)}s`);
        for (const c of report.corrupt) {
          const where = [c.collection && `collection ${c.collection}`, c.id && `record '${c.id}'`].filter(Boolean).join(', ');
          console.log(`  ${c.kind.toUpperCase()} ${c.file} @${c.offset}${where ? ` (${where})` : ''}: ${c.detail}`);
        }
        for (const r of report.repaired) console.log(`  repaired ${r.file} from ${r.from}${r.quarantined ? `; damaged copy kept as ${r.quarantined}` : ''}`);
        for (const u of report.unrepaired) console.log(`  NOT repaired ${u.file}: ${u.reason}`);
        for (const u of report.unreadableRecords) console.log(`  UNREADABLE record '${u.id}' of collection ${u.collection} (${u.file} @${u.offset}): ${u.reason}`);
        if (report.corrupt.length === 0 && report.unreadableRecords.length === 0) console.log('no damage found');
      }
      return report.unrepaired.length > 0 || report.unreadableRecords.length > 0 ? 1 : 0;
    }
    case 'demo':
      return runDemo({ dir: values.dir, json: asJson });
    default:
      process.stderr.write(USAGE);
      return command === undefined || command === 'help' || command === '--help' ? 0 : 2;
  }
}

function restoreTarget(seq: string | undefined, time: string | undefined): { seq: bigint } | { time: Date } | undefined {
  if (seq !== undefined && time !== undefined) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'give --seq or --time, not both');
  if (seq !== undefined) {
    if (!/^\d+$/.test(seq)) throw new CairnError('CAIRN_INVALID_ARGUMENT', '--seq must be a non-negative integer');
    return { seq: BigInt(seq) };
  }
  if (time !== undefined) {
    const t = new Date(time);
    if (Number.isNaN(t.getTime())) throw new CairnError('CAIRN_INVALID_ARGUMENT', '--time must be an ISO date');
    return { time: t };
  }
  return undefined;
}

/** On a terminal, a bar of the bytes a backup has taken, per target; silent otherwise. */
function progressBar(enabled: boolean): { update: (p: BackupProgress) => void; done: () => void } {
  const on = enabled && process.stderr.isTTY;
  let shown = false;
  return {
    update(p) {
      if (!on) return;
      const frac = p.totalBytes === 0 ? 1 : p.bytes / p.totalBytes;
      const width = 30;
      const fill = Math.round(frac * width);
      process.stderr.write(`\r[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${(frac * 100).toFixed(0)}% ${p.files}/${p.totalFiles} files ${(p.bytes / 2 ** 20).toFixed(1)}/${(p.totalBytes / 2 ** 20).toFixed(1)} MB ${p.target}`);
      shown = true;
    },
    done() {
      if (shown) process.stderr.write('\n');
    },
  };
}

function backupManager(source: string, targets: string[]): BackupManager {
  const key = process.env.CAIRN_BACKUP_KEY;
  return new BackupManager({ source, target: targets.length === 1 ? targets[0]! : targets, ...(key ? { encryption: { key } } : {}) });
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    if (e instanceof CairnError) process.stderr.write(`cairn: ${e.code}: ${e.message}\n`);
    else process.stderr.write(`cairn: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
