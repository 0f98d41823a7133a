/** Snapshot archives: export a snapshot (with its bases) to one file, import one. */
import { existsSync } from 'node:fs';

import { exportSnapshot, importSnapshot } from '../archive.js';
import { CairnError } from '../errors.js';
import { type Command, existingSnapshotSource, snapshotDestination, UsageError } from './command.js';
import { json, megabytes } from './output.js';
import { withByteBar } from './progress.js';

export const snapshotExport: Command = {
  name: 'snapshot-export',
  help:
    '  snapshot-export DIR ID FILE [--level N] [--json]\n' +
    '                           write snapshot ID of DIR and every base it needs to one archive FILE\n',
  options: { level: { type: 'string' } },
  async run(args) {
    const [dir, id, file] = args.positionals;
    if (!dir || !id || !file) throw new UsageError('snapshot-export needs a store directory, a snapshot id and an archive file');
    const levelArg = args.string('level');
    const level = levelArg === undefined ? undefined : Number(levelArg);
    if (level !== undefined && !(Number.isInteger(level) && level >= 1 && level <= 19)) throw new UsageError('--level must be an integer from 1 to 19');
    const source = await existingSnapshotSource(dir);
    if (existsSync(file)) throw new CairnError('CAIRN_ALREADY_EXISTS', `${file} already exists; remove it or give another FILE`, { file });
    const r = await withByteBar('snapshot-export', !args.json, (bar) =>
      exportSnapshot({ dir: source, id, file, ...(level !== undefined ? { level } : {}), onProgress: (p) => bar(p.bytes, p.totalBytes) }),
    );
    console.log(
      args.json
        ? json(r)
        : `exported ${r.snapshots.join(', ')} to ${r.file}: ${megabytes(r.rawBytes)} raw, ${megabytes(r.storedBytes)} stored, sha256 ${r.sha256}`,
    );
    return 0;
  },
};

export const snapshotImport: Command = {
  name: 'snapshot-import',
  help:
    '  snapshot-import FILE DIR [--json]\n' +
    '                           verify an archive, then add its snapshots to DIR (a store, or a new\n' +
    '                           directory that restore then reads); nothing is added if it is damaged\n',
  options: {},
  async run(args) {
    const [file, dir] = args.positionals;
    if (!file || !dir) throw new UsageError('snapshot-import needs an archive file and a directory');
    if (!existsSync(file)) throw new CairnError('CAIRN_NOT_FOUND', `no archive at ${file} (the path does not exist)`, { file });
    const into = await snapshotDestination(dir);
    const r = await withByteBar('snapshot-import', !args.json, (bar) => importSnapshot({ file, dir: into, onProgress: (p) => bar(p.bytes, p.totalBytes) }));
    const added = r.snapshots.length === 0 ? `nothing new: DIR already holds every snapshot in ${file}` : `imported ${r.snapshots.join(', ')} into ${dir}`;
    console.log(args.json ? json({ ...r, message: added }) : added);
    return 0;
  },
};
