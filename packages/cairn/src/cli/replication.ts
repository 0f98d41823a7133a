/** Commands that run until SIGINT/SIGTERM: serve (a primary and/or the HTTP endpoints), replicate (replica). */
import { BackupManager } from '../backup/manager.js';
import { openReplica } from '../replication/replica.js';
import type { WriteConcernLevel } from '../replication/types.js';
import { open } from '../store.js';
import { type Command, existingStore, UsageError } from './command.js';
import { commaList, need, readToken, untilSignal } from './daemon.js';
import { json } from './output.js';

export const serve: Command = {
  name: 'serve',
  help:
    '  serve DIR [--replication HOST:PORT --replicas n2,n3 --token-file F] [--node-id ID] [--w local|majority|all]\n' +
    '            [--http HOST:PORT [--http-token-file F] [--backup-target URL...]]\n' +
    '                           serve DIR to replicas and/or its metrics, health, status and dashboard over HTTP;\n' +
    "                           /status lists each --backup-target's catalog (CAIRN_BACKUP_KEY, CAIRN_S3_ENDPOINT)\n" +
    '                           until SIGINT/SIGTERM (port 0: any free port)\n',
  options: {
    replication: { type: 'string' },
    replicas: { type: 'string' },
    'token-file': { type: 'string' },
    'node-id': { type: 'string' },
    w: { type: 'string' },
    http: { type: 'string' },
    'http-token-file': { type: 'string' },
    'backup-target': { type: 'string', multiple: true },
  },
  async run(args) {
    const dir = args.positionals[0];
    if (!dir) throw new UsageError('serve needs a store directory');
    const listen = args.string('replication');
    const httpListen = args.string('http');
    if (listen === undefined && httpListen === undefined) {
      throw new UsageError('serve needs --replication HOST:PORT or --http HOST:PORT (or both)');
    }
    const replication =
      listen === undefined
        ? undefined
        : {
            listen,
            replicas: commaList(need(args, 'serve', 'replicas')),
            token: readToken(need(args, 'serve', 'token-file')),
          };
    const httpTokenFile = args.string('http-token-file');
    const httpToken = httpTokenFile === undefined ? undefined : readToken(httpTokenFile, '--http-token-file').trim();
    const backupTargets = args.strings('backup-target') ?? [];
    if (backupTargets.length > 0 && httpListen === undefined) throw new UsageError('--backup-target needs --http HOST:PORT');
    const nodeId = args.string('node-id');
    const w = args.string('w') as WriteConcernLevel | undefined;
    await existingStore(dir);
    const db = await open(dir, nodeId === undefined ? { create: false } : { create: false, nodeId });
    const key = process.env.CAIRN_BACKUP_KEY;
    const catalogs = backupTargets.length === 0 ? null : new BackupManager({ source: db.dir, target: backupTargets, ...(key ? { encryption: { key } } : {}) });
    try {
      const out: Record<string, unknown> = { dir: db.dir, nodeId: db.nodeId, lastSeq: db.lastSeq };
      if (replication) {
        const server = await db.serveReplication({ ...replication, ...(w === undefined ? {} : { writeConcern: { w } }) });
        out.serving = server.address;
        if (!args.json) console.log(`serving replication of ${db.dir} on ${server.address} (node ${db.nodeId}, seq ${db.lastSeq})`);
      }
      if (httpListen !== undefined) {
        const http = await db.serveHttp({
          listen: httpListen,
          ...(httpToken === undefined ? {} : { token: httpToken }),
          ...(catalogs ? { backups: catalogs } : {}),
        });
        out.url = http.url;
        if (!args.json) console.log(`serving metrics, health, status and the dashboard of ${db.dir} at ${http.url}`);
      }
      // One line in --json, so that a supervisor can read it before the command ends.
      if (args.json) console.log(JSON.stringify(out, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)));
      const signal = await untilSignal();
      if (!args.json) console.log(`${signal}: closing`);
    } finally {
      await catalogs?.close();
      await db.close();
    }
    return 0;
  },
};

export const replicate: Command = {
  name: 'replicate',
  help:
    '  replicate DIR --primary HOST:PORT --token-file F --node-id ID [--forward-writes]\n' +
    '                           follow a primary into DIR (created if missing or empty) until SIGINT/SIGTERM\n',
  options: {
    primary: { type: 'string' },
    'token-file': { type: 'string' },
    'node-id': { type: 'string' },
    'forward-writes': { type: 'boolean', default: false },
  },
  async run(args) {
    const dir = args.positionals[0];
    if (!dir) throw new UsageError('replicate needs a store directory');
    const primary = need(args, 'replicate', 'primary');
    const token = readToken(need(args, 'replicate', 'token-file'));
    const nodeId = need(args, 'replicate', 'node-id');
    const r = await openReplica(dir, { nodeId, primary, token, forwardWrites: args.flag('forward-writes') });
    try {
      console.log(args.json ? json({ replicating: primary, nodeId, lastSeq: r.lastSeq }) : `replica ${nodeId} of ${primary} in ${dir} (seq ${r.lastSeq})`);
      const signal = await untilSignal();
      if (!args.json) console.log(`${signal}: closing at seq ${r.lastSeq}`);
    } finally {
      await r.close();
    }
    return 0;
  },
};
