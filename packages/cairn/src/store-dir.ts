/**
 * Whether a directory holds a Cairn store, decided from the names the engine gives its files
 * (`layout()` from the binding), so that `open()` never turns a mistyped path or a directory of
 * unrelated files into a store.
 */
import { readdir, stat } from 'node:fs/promises';

import { CairnError } from './errors.js';
import { LAYOUT } from './layout.js';

export type StoreDirState = 'missing' | 'empty' | 'store';

/** The entries whose presence marks a directory as a store: the manifest (or its copy) and the WAL
 *  directory, which the engine creates before anything else is acknowledged. */
const STORE_MARKERS: readonly string[] = [LAYOUT.manifest, LAYOUT.manifestCopy, LAYOUT.wal];

/**
 * `missing` (no such path), `empty` (an empty directory) or `store`; rejects with
 * `CAIRN_NOT_A_STORE` for a file, or a non-empty directory without a store's files.
 */
export async function storeDirState(dir: string): Promise<StoreDirState> {
  let isDir: boolean;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw new CairnError('CAIRN_IO', `cannot read ${dir}: ${(e as Error).message}`, { file: dir, cause: e });
  }
  if (!isDir) throw new CairnError('CAIRN_NOT_A_STORE', `${dir} is not a directory, so not a Cairn store`, { file: dir });
  const entries = await readdir(dir);
  if (entries.length === 0) return 'empty';
  if (entries.some((e) => STORE_MARKERS.includes(e))) return 'store';
  throw new CairnError(
    'CAIRN_NOT_A_STORE',
    `${dir} is not a Cairn store (it holds other files and no ${LAYOUT.manifest} or ${LAYOUT.wal}/); a new store needs a missing or empty directory`,
    { file: dir },
  );
}

/**
 * Checks `dir` before an open: a store opens; a missing or empty directory is created into only
 * when `create` is true (`CAIRN_NOT_FOUND` otherwise); anything else is `CAIRN_NOT_A_STORE`.
 */
export async function checkStoreDir(dir: string, create: boolean): Promise<void> {
  const state = await storeDirState(dir);
  if (state === 'store' || create) return;
  throw new CairnError(
    'CAIRN_NOT_FOUND',
    state === 'missing' ? `no store at ${dir} (the path does not exist)` : `no store at ${dir} (the directory is empty)`,
    {
      file: dir,
    },
  );
}
