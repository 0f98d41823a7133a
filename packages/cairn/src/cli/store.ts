/** Commands on a store as a whole: status, range, checkpoint. None of them creates a store. */
import { inspectStore, type StoreInspection } from '../inspect.js';
import { recoverableRange } from '../restore.js';
import { open } from '../store.js';
import { type Command, existingSnapshotSource, existingStore, UsageError } from './command.js';
import { json, megabytes } from './output.js';

function iso(d: Date | null): string {
  return d ? d.toISOString() : '-';
}

function statusText(s: StoreInspection): string {
  const lines = [
    `${s.dir}${s.openElsewhere ? '  (open in another process)' : '  (not open)'}`,
    `last seq: ${s.lastSeq} (checkpoint at seq ${s.checkpointSeq}, ${iso(s.checkpointTime)}; ${s.walRecordsAfterCheckpoint} WAL records since)`,
    s.range
      ? `recoverable: seq ${s.range.from.seq} (${iso(s.range.from.time)}) .. seq ${s.range.to.seq} (${iso(s.range.to.time)})`
      : `recoverable: nothing (${s.rangeError})`,
    `collections (as of seq ${s.lastSeq}):${s.collections.length === 0 ? ' none' : ''}`,
    ...s.collections.map(
      (c) => `  ${c.name}: ${c.dim}d ${c.metric}, ${c.count} rows (${c.dataFiles} checkpoint file(s))${c.unreadable ? `, ${c.unreadable} UNREADABLE` : ''}`,
    ),
    `snapshots:${s.snapshots.length === 0 ? ' none' : ''}`,
    ...s.snapshots.map((x) => `  ${x.id}  seq ${x.seq}  ${iso(x.time)}  ${x.kind}${x.base ? ` on ${x.base}` : ''}  ${megabytes(x.bytes)}`),
    `disk: wal ${megabytes(s.disk.wal)}, archive ${megabytes(s.disk.archive)}, data ${megabytes(s.disk.data)}, graph ${megabytes(s.disk.graph)}, snapshots ${megabytes(s.disk.snapshots)} (hard links), quarantine ${megabytes(s.disk.quarantine)}`,
  ];
  const sc = s.lastScrub;
  lines.push(
    sc
      ? `last scrub: ${iso(sc.time)}${sc.repair ? ' (repair)' : ''}, ${sc.files} files, ${megabytes(sc.bytes)}, ${sc.corrupt} corrupt, ${sc.repaired} repaired, ${sc.unrepaired} unrepaired`
      : `last scrub: ${s.lastScrubError ? `unreadable (${s.lastScrubError})` : 'none recorded'}`,
  );
  if (s.quarantined > 0) lines.push(`quarantine: ${s.quarantined} damaged file(s) kept`);
  return lines.join('\n');
}

export const status: Command = {
  name: 'status',
  help:
    '  status DIR [--json]      collections with current counts, last seq, recoverable range, snapshots,\n' +
    '                           disk use and the last scrub; reads\n' +
    '                           without the lock, so it works while another process has DIR open\n',
  options: {},
  async run({ positionals, json: asJson }) {
    const dir = positionals[0];
    if (!dir) throw new UsageError('status needs a store directory');
    const s = await inspectStore(dir);
    console.log(asJson ? json(s) : statusText(s));
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
    const r = await recoverableRange(await existingSnapshotSource(dir));
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
