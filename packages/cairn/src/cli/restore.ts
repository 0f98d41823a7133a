/** Point-in-time restore of a store into a new directory, and the --seq/--time target it takes. */
import { restore as restoreStore } from '../restore.js';
import { type Command, type CommandArgs, existingSnapshotSource, type OptionSpecs, UsageError } from './command.js';
import { json } from './output.js';
import { withByteBar } from './progress.js';

/** --seq N | --time ISO: how far a restore goes (both restore commands take them). */
export const RESTORE_TARGET_OPTIONS: OptionSpecs = { seq: { type: 'string' }, time: { type: 'string' } };

export function restoreTarget(args: CommandArgs): { seq: bigint } | { time: Date } | undefined {
  const seq = args.string('seq');
  const time = args.string('time');
  if (seq !== undefined && time !== undefined) throw new UsageError('give --seq or --time, not both');
  if (seq !== undefined) {
    if (!/^\d+$/.test(seq)) throw new UsageError('--seq must be a non-negative integer');
    return { seq: BigInt(seq) };
  }
  if (time !== undefined) {
    const t = new Date(time);
    if (Number.isNaN(t.getTime())) throw new UsageError('--time must be an ISO date');
    return { time: t };
  }
  return undefined;
}

export const restore: Command = {
  name: 'restore',
  help:
    '  restore SOURCE TARGET [--seq N | --time ISO] [--json]\n' +
    '                           point-in-time restore into a new directory (works while SOURCE is in use;\n' +
    '                           SOURCE may be a directory that snapshot-import filled)\n',
  options: RESTORE_TARGET_OPTIONS,
  async run(args) {
    const asJson = args.json;
    const [source, target] = args.positionals;
    if (!source || !target) throw new UsageError('restore needs SOURCE and TARGET directories');
    const to = restoreTarget(args);
    const from = await existingSnapshotSource(source);
    const result = await withByteBar('restore', !asJson, (bar) =>
      restoreStore({ source: from, target, ...(to ? { to } : {}), onProgress: (p) => bar(p.bytes, p.totalBytes) }),
    );
    console.log(
      asJson
        ? json(result)
        : `restored ${source} at seq ${result.seq} (${result.time.toISOString()}) into ${target}${result.snapshot ? ` from snapshot ${result.snapshot}` : ''}, replayed ${result.replayedRecords} WAL records`,
    );
    return 0;
  },
};
