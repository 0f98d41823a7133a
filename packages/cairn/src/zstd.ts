/**
 * zstd for backups and snapshot archives, loaded on first use. `zstd-napi` compiles its binding
 * in an install script, and npm 11 warns about (and a stricter setup refuses) install scripts
 * that were not approved. Opening stores, queries, snapshots and restores need no zstd; only the
 * operations that compress fail, with `CAIRN_UNAVAILABLE` naming the fix, instead of the whole
 * package failing to import or a missing binding being mistaken for damaged data.
 */
import { createRequire } from 'node:module';

import { CairnError } from './errors.js';

type Zstd = typeof import('zstd-napi');

let loaded: Zstd | null = null;

export function zstd(): Zstd {
  if (loaded) return loaded;
  try {
    loaded = createRequire(import.meta.url)('zstd-napi') as Zstd;
    return loaded;
  } catch (e) {
    throw new CairnError(
      'CAIRN_UNAVAILABLE',
      'zstd-napi, which backups and snapshot archives compress with, has no built binding (its install script did not run): ' +
        'in your app run `npm install-scripts approve zstd-napi && npm rebuild zstd-napi` (npm 11), or `npm rebuild zstd-napi` ' +
        `(it needs a C++ compiler and python3). Cause: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`,
      { cause: e },
    );
  }
}
