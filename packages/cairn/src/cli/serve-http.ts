/**
 * `cairn serve-http DIR --http HOST:PORT [--token-file F]`: open a store and serve its
 * metrics, health, status and dashboard until SIGINT or SIGTERM, then close it cleanly.
 * (To be folded into `cairn serve` beside replication.)
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { CairnError } from '../errors.js';
import { LAYOUT } from '../layout.js';
import { open } from '../store.js';
import type { Command } from './command.js';

export const serveHttp: Command = {
  name: 'serve-http',
  help: '  serve-http DIR --http HOST:PORT [--token-file F] [--json]\n                           serve /metrics, /health, /status and a dashboard at / until interrupted\n',
  options: { http: { type: 'string' }, 'token-file': { type: 'string' } },
  async run({ positionals, json: asJson, string }) {
    const dir = positionals[0];
    if (!dir) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'serve-http needs a store directory');
    // Serving never creates a store.
    if (!existsSync(join(dir, LAYOUT.manifest))) throw new CairnError('CAIRN_NOT_FOUND', `${dir} is not a Cairn store`);
    const listen = string('http');
    if (!listen) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'serve-http needs --http HOST:PORT');
    const tokenFile = string('token-file');
    const token = tokenFile === undefined ? undefined : readFileSync(tokenFile, 'utf8').trim();
    const db = await open(dir);
    try {
      const server = await db.serveHttp({ listen, ...(token === undefined ? {} : { token }) });
      // One line, so that a supervisor can read it before the command ends.
      console.log(asJson ? JSON.stringify({ url: server.url, dir: db.dir }) : `serving ${db.dir} at ${server.url}`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
    } finally {
      await db.close();
    }
    return 0;
  },
};
