/** The etcd a cluster drill starts (and the failover tests and bench reuse): Debian's
 *  /usr/bin/etcd on 127.0.0.1 ports, data in a scratch directory, killed at the end. */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

import { CairnError } from '../errors.js';
import { freePort } from './free-port.js';

export const ETCD_BINARY = '/usr/bin/etcd';

export interface DrillEtcd {
  url: string;
  /** The etcd child process (for SIGSTOP and the like). */
  process: ChildProcess;
  /** SIGKILL it and wait until it is gone. */
  stop(): Promise<void>;
}

/**
 * An etcd on loopback at the given client and peer ports, with its data in `dataDir` (fixed
 * ports, so the same data can be restarted on them). Resolves once it answers a range request
 * (at most 15 s); otherwise kills it and throws CAIRN_IO.
 */
export async function spawnEtcd(dataDir: string, client: number, peer: number): Promise<DrillEtcd> {
  if (!existsSync(ETCD_BINARY)) throw new CairnError('CAIRN_NOT_FOUND', `the cluster drill needs etcd at ${ETCD_BINARY} (Debian: apt-get install etcd-server)`);
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
    if (ok) return { url, process: p, stop };
    await sleep(100);
  }
  await stop();
  throw new CairnError('CAIRN_IO', `etcd did not start on ${url} within 15 s`);
}

/** An etcd on free loopback ports with its data in `dataDir`. */
export async function startEtcd(dataDir: string): Promise<DrillEtcd> {
  return spawnEtcd(dataDir, await freePort(), await freePort());
}
