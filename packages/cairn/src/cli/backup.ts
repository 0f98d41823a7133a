/** Backup commands: back up, list, verify, and restore a backup. */
import { BackupManager } from '../backup/manager.js';
import type { BackupKind } from '../backup/metadata.js';
import type { CreateResult } from '../backup/types.js';
import { type Command, existingStore, UsageError } from './command.js';
import { cliText, json } from './output.js';
import { withByteBar } from './progress.js';
import { RESTORE_TARGET_OPTIONS, restoreTarget } from './restore.js';

/** The environment the backup commands read, for the help page. */
export const BACKUP_ENVIRONMENT =
  '\nbackups: CAIRN_BACKUP_KEY (64 hex digits) encrypts and decrypts; CAIRN_S3_ENDPOINT points s3:// at\n' +
  'an S3-compatible server (credentials from the usual AWS_* variables).\n';

function backupManager(source: string, targets: string[]): BackupManager {
  const key = process.env.CAIRN_BACKUP_KEY;
  return new BackupManager({ source, target: targets.length === 1 ? targets[0]! : targets, ...(key ? { encryption: { key } } : {}) });
}

export const backup: Command = {
  name: 'backup',
  help:
    '  backup DIR --to URL [--to URL...] [--kind full|incremental|differential] [--json]\n' +
    '                           back up DIR to file:///path or s3://bucket/prefix\n',
  options: { to: { type: 'string', multiple: true }, kind: { type: 'string' } },
  async run(args) {
    const asJson = args.json;
    const dir = args.positionals[0];
    const targets = args.strings('to') ?? [];
    if (!dir || targets.length === 0) throw new UsageError('backup needs a store directory and --to URL');
    const backups = backupManager(await existingStore(dir), targets);
    try {
      const m: CreateResult = await withByteBar('backup', !asJson, (bar) =>
        backups.create({
          kind: (args.string('kind') ?? 'full') as BackupKind,
          onProgress: (p) => bar(p.bytes, p.totalBytes, `${p.files}/${p.totalFiles} files ${p.target}`),
        }),
      );
      if (asJson) console.log(json(m));
      else {
        for (const t of m.targets) {
          if (t.ok) {
            const b = t.metadata;
            console.log(
              `${t.target}: backup ${b.id} (${b.kind}${b.base ? ` on ${b.base}` : ''}) ${b.files} files, ${b.bytes.raw} bytes raw, ${b.bytes.stored} stored, ${b.bytes.written} written now`,
            );
          } else console.log(`${t.target}: FAILED: ${t.error.code}: ${t.error.message}`);
        }
      }
      return m.targets.every((t) => t.ok) ? 0 : 1;
    } finally {
      await backups.close();
    }
  },
};

export const backups: Command = {
  name: 'backups',
  help: '  backups URL [--json]     list the backups in a target\n',
  options: {},
  async run({ positionals, json: asJson }) {
    const url = positionals[0];
    if (!url) throw new UsageError('backups needs a target URL');
    const manager = backupManager('.', [url]);
    try {
      const list = await manager.list();
      if (asJson) console.log(json(list));
      else {
        for (const b of list) {
          console.log(
            `${b.id}  ${b.status}  ${b.kind}${b.base ? ` (base ${b.base})` : ''}  ${b.timestamp.toISOString()}  ${b.bytes.raw} bytes raw, ${b.bytes.stored} stored${b.range ? `  seq ${b.range.from.seq}..${b.range.to.seq}` : ''}${b.error ? `  ${b.error}` : ''}`,
          );
        }
      }
    } finally {
      await manager.close();
    }
    return 0;
  },
};

export const verify: Command = {
  name: 'verify',
  help: '  verify URL ID [--json]   read back every chunk of a backup; exit 1 if anything is wrong\n',
  options: {},
  async run({ positionals, json: asJson }) {
    const [url, id] = positionals;
    if (!url || !id) throw new UsageError('verify needs a target URL and a backup id');
    const manager = backupManager('.', [url]);
    try {
      const report = await withByteBar('verify', !asJson, (bar) => manager.verify(id, { onProgress: (p) => bar(p.bytes, p.totalBytes, p.target) }));
      if (asJson) console.log(json(report));
      else {
        for (const t of report.targets) {
          const problems = report.problems.filter((p) => p.target === t.target);
          // Without the right key nothing was read, so nothing is known to be damaged.
          const keyOnly = problems.length > 0 && problems.every((p) => p.kind === 'key');
          const state = t.ok ? 'ok' : keyOnly ? 'NOT VERIFIED (encrypted: set CAIRN_BACKUP_KEY to the key it was made with)' : 'DAMAGED';
          console.log(`${t.target}: ${state}, ${t.chunks} chunks, ${t.bytes} bytes read`);
        }
        for (const p of report.problems) console.log(`  ${p.kind}: ${cliText(p.message)}`);
      }
      return report.ok ? 0 : 1;
    } finally {
      await manager.close();
    }
  },
};

export const restoreBackup: Command = {
  name: 'restore-backup',
  help: '  restore-backup URL ID TARGET [--seq N | --time ISO] [--json]\n' + '                           verify, then restore a backup into a new directory\n',
  options: RESTORE_TARGET_OPTIONS,
  async run(args) {
    const asJson = args.json;
    const [url, id, target] = args.positionals;
    if (!url || !id || !target) throw new UsageError('restore-backup needs a target URL, a backup id and a directory');
    const to = restoreTarget(args);
    const manager = backupManager('.', [url]);
    try {
      const r = await withByteBar('restore-backup', !asJson, (bar) =>
        manager.restore(id, target, { ...(to ? { to } : {}), onProgress: (p) => bar(p.bytes, p.totalBytes, `${p.phase} ${p.target}`) }),
      );
      console.log(
        asJson
          ? json(r)
          : `restored backup ${id} from ${r.from} at seq ${r.seq} (${r.time.toISOString()}) into ${target}, replayed ${r.replayedRecords} WAL records`,
      );
    } finally {
      await manager.close();
    }
    return 0;
  },
};
