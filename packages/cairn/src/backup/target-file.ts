/**
 * A backup target in a local directory. Every object is written as `<key>.tmp-<pid>`, fsynced,
 * renamed into place, and the directory fsynced, so an object is either complete or absent.
 */
import { mkdir, open as openFile, readdir, readFile, rename, rm, rmdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';

import { CairnError } from '../errors.js';
import type { BackupTarget, TargetEntry } from './target.js';

const TMP = /\.tmp-\d+$/;

async function fsyncDir(dir: string): Promise<void> {
  const d = await openFile(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

export class FileTarget implements BackupTarget {
  readonly url: string;
  readonly root: string;

  constructor(url: string, root: string) {
    this.url = url;
    this.root = root;
  }

  #path(key: string): string {
    if (key.split('/').some((p) => p === '..' || p === '.' || p === '')) throw new CairnError('CAIRN_INTERNAL', `unsafe target key '${key}'`);
    return join(this.root, key);
  }

  async list(prefix: string): Promise<TargetEntry[]> {
    const base = this.#path(prefix.replace(/\/$/, ''));
    let names: string[];
    try {
      names = (await readdir(base, { recursive: true })) as string[];
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new CairnError('CAIRN_IO', `cannot list ${base}: ${(e as Error).message}`, { cause: e });
    }
    const out: TargetEntry[] = [];
    for (const name of names) {
      if (TMP.test(name)) continue;
      try {
        const s = await stat(join(base, name));
        if (s.isFile()) out.push({ key: `${prefix}${name.split('\\').join('/')}`, size: s.size });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
    return out;
  }

  async get(key: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.#path(key));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new CairnError('CAIRN_IO', `cannot read ${this.#path(key)}: ${(e as Error).message}`, { cause: e });
    }
  }

  async put(key: string, data: Buffer): Promise<void> {
    const path = this.#path(key);
    const dir = dirname(path);
    await mkdir(dir, { recursive: true });
    const tmp = `${path}.tmp-${process.pid}`;
    const f = await openFile(tmp, 'w');
    try {
      await f.writeFile(data);
      await f.sync();
    } finally {
      await f.close();
    }
    await rename(tmp, path);
    // durability: the rename must reach the disk before the object counts as written.
    await fsyncDir(dir);
  }

  async delete(key: string): Promise<void> {
    const path = this.#path(key);
    await rm(path, { force: true });
    // An empty backup directory goes with its last object.
    if (key.startsWith('backups/')) await rmdir(dirname(path)).catch(() => {});
  }

  async cleanDebris(): Promise<void> {
    for (const sub of ['chunks', 'backups']) {
      let names: string[];
      try {
        names = (await readdir(join(this.root, sub), { recursive: true })) as string[];
      } catch {
        continue;
      }
      for (const n of names) {
        const m = /\.tmp-(\d+)$/.exec(n);
        if (m && !processAlive(Number(m[1]))) await rm(join(this.root, sub, n), { force: true });
      }
    }
  }

  async close(): Promise<void> {}
}

export function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
