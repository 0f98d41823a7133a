/** The etcd a cluster drill starts: Debian's /usr/bin/etcd on free 127.0.0.1 ports, data in the
 *  scratch area, killed at the end. */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

import { CairnError } from '../errors.js';

export const ETCD_BINARY = '/usr/bin/etcd';

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', () => resolve()));
  const a = s.address();
  const port = a && typeof a === 'object' ? a.port : 0;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

export interface DrillEtcd {
  url: string;
  stop(): Promise<void>;
}

export async function startEtcd(dataDir: string): Promise<DrillEtcd> {
  if (!existsSync(ETCD_BINARY)) throw new CairnError('CAIRN_NOT_FOUND', `the cluster drill needs etcd at ${ETCD_BINARY} (Debian: apt-get install etcd-server)`);
  const client = await freePort();
  const peer = await freePort();
  const url = `http://127.0.0.1:${client}`;
  const peerUrl = `http://127.0.0.1:${peer}`;
  const args = ['--data-dir', dataDir, '--listen-client-urls', url, '--advertise-client-urls', url, '--listen-peer-urls', peerUrl];
  const p: ChildProcess = spawn(ETCD_BINARY, [...args, '--initial-advertise-peer-urls', peerUrl, '--initial-cluster', `default=${peerUrl}`], {
    stdio: 'ignore',
  });
  const stop = async () => {
    if (p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise<void>((resolve) => p.once('close', () => resolve()));
    p.kill('SIGKILL');
    await gone;
  };
  for (let i = 0; i < 150; i++) {
    const ok = await fetch(`${url}/v3/kv/range`, { method: 'POST', body: JSON.stringify({ key: 'AA==' }) }).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return { url, stop };
    await sleep(100);
  }
  await stop();
  throw new CairnError('CAIRN_IO', `etcd did not start on ${url} within 15 s`);
}
