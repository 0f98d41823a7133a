/** Snapshot commands: take one, list them. */
import { CairnError } from '../errors.js';
import { listSnapshots, type SnapshotInfo } from '../restore.js';
import { open } from '../store.js';
import { type Command, existingSnapshotSource, existingStore, UsageError } from './command.js';
import { json } from './output.js';
import { withByteBar } from './progress.js';

export const snapshot: Command = {
  name: 'snapshot',
  help: '  snapshot DIR [--incremental] [--json]   checkpoint and snapshot DIR\n',
  options: { incremental: { type: 'boolean', default: false } },
  async run(args) {
    const asJson = args.json;
    const dir = args.positionals[0];
    if (!dir) throw new UsageError('snapshot needs a store directory');
    const db = await open(await existingStore(dir), { create: false });
    try {
      let info: SnapshotInfo;
      try {
        info = await withByteBar('snapshot', !asJson, (bar) =>
          db.snapshot({ incremental: args.flag('incremental'), onProgress: (p) => bar(p.bytes, p.totalBytes) }),
        );
      } catch (e) {
        // The engine refuses a second snapshot of the same kind at the same seq: nothing to do.
        if (!(e instanceof CairnError && e.code === 'CAIRN_ALREADY_EXISTS')) throw e;
        const message = `nothing new to snapshot: no write since the last snapshot (seq ${db.lastSeq})`;
        console.log(asJson ? json({ snapshot: null, seq: db.lastSeq, message }) : message);
        return 0;
      }
      console.log(asJson ? json(info) : `snapshot ${info.id}: seq ${info.seq}, ${info.kind}${info.base ? ` on ${info.base}` : ''}, ${info.bytes} bytes`);
    } finally {
      await db.close();
    }
    return 0;
  },
};

export const snapshots: Command = {
  name: 'snapshots',
  help: '  snapshots DIR [--json]                  list complete snapshots\n',
  options: {},
  async run({ positionals, json: asJson }) {
    const dir = positionals[0];
    if (!dir) throw new UsageError('snapshots needs a store directory');
    const list = await listSnapshots(await existingSnapshotSource(dir));
    if (asJson) console.log(json(list.map(({ files: _files, ...rest }) => rest)));
    else for (const s of list) console.log(`${s.id}  seq ${s.seq}  ${s.time.toISOString()}  ${s.kind}${s.base ? ` (base ${s.base})` : ''}  ${s.bytes} bytes`);
    return 0;
  },
};
