/** `cairn scrub`: verify every file of a store, optionally repair; exit 1 while damage remains. */
import { scrub as scrubStore } from '../scrub/directory.js';
import type { ScrubProgress, ScrubReport } from '../scrub/index.js';
import { type Command, existingStore, UsageError } from './command.js';
import { json, megabytes } from './output.js';
import { withByteBar } from './progress.js';

export const scrub: Command = {
  name: 'scrub',
  help:
    '  scrub DIR [--repair] [--throttle MBps] [--concurrency N] [--json]\n' +
    '                           verify every file against its checksums; with --repair, quarantine\n' +
    '                           damaged files and replace them; exit status 1 if damage remains\n',
  options: {
    repair: { type: 'boolean', default: false },
    throttle: { type: 'string' },
    concurrency: { type: 'string' },
  },
  async run(args) {
    const asJson = args.json;
    const dir = args.positionals[0];
    if (!dir) throw new UsageError('scrub needs a store directory');
    const throttleArg = args.string('throttle');
    const throttle = throttleArg === undefined ? undefined : Number(throttleArg);
    if (throttle !== undefined && !(throttle > 0)) throw new UsageError('--throttle must be a positive number of MB/s');
    const concurrencyArg = args.string('concurrency');
    const concurrency = concurrencyArg === undefined ? undefined : Number(concurrencyArg);
    if (concurrency !== undefined && !(Number.isInteger(concurrency) && concurrency >= 1)) throw new UsageError('--concurrency must be a positive integer');
    const abort = new AbortController();
    const onSigint = () => abort.abort();
    process.once('SIGINT', onSigint);
    let report: ScrubReport;
    const store = await existingStore(dir);
    try {
      report = await withByteBar('scrub', !asJson, (bar) =>
        scrubStore(store, {
          repair: args.flag('repair'),
          ...(throttle !== undefined ? { throttleMBps: throttle } : {}),
          ...(concurrency !== undefined ? { concurrency } : {}),
          signal: abort.signal,
          onProgress: (p: ScrubProgress) => bar(p.bytes, p.totalBytes, `${p.files}/${p.totalFiles} files`),
        }),
      );
    } finally {
      process.off('SIGINT', onSigint);
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
      for (const u of report.unreadableRecords)
        console.log(`  UNREADABLE record '${u.id}' of collection ${u.collection} (${u.file} @${u.offset}): ${u.reason}`);
      if (report.corrupt.length === 0 && report.unreadableRecords.length === 0) console.log('no damage found');
    }
    return report.unrepaired.length > 0 || report.unreadableRecords.length > 0 ? 1 : 0;
  },
};
