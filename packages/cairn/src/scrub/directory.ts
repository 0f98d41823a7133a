/** `scrub(dir)`: scrub a store directory from outside, whatever state it is in. */
import { resolve } from 'node:path';

import { CairnError } from '../errors.js';
import { open } from '../store.js';
import { parseScrubOptions, runScrub, type ScrubOptions, type ScrubReport } from './index.js';

/**
 * Scrub the store in `dir`.
 * - If it opens here, it is opened, scrubbed as `db.scrub()` does (repairs may rebuild from
 *   the engine) and closed.
 * - If another process has it open (`CAIRN_LOCKED`), it is checked read-only, skipping the WAL
 *   segment being written; `repair` is refused, since that process owns the files.
 * - If it cannot be opened because it is damaged, it is checked offline and repaired from
 *   identical copies only (a snapshot or another live name of the file).
 */
export async function scrub(dir: string, options: ScrubOptions = {}): Promise<ScrubReport> {
  if (typeof dir !== 'string' || dir.length === 0) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'dir must be a non-empty string');
  const opts = parseScrubOptions(options);
  let db;
  try {
    db = await open(dir);
  } catch (e) {
    if (!(e instanceof CairnError)) throw e;
    if (e.code === 'CAIRN_LOCKED') {
      if (opts.repair) throw new CairnError('CAIRN_LOCKED', `${e.message}; repair it from the process that has it open (db.scrub({ repair: true }))`);
      return runScrub({ dir: resolve(dir), writerElsewhere: true }, opts);
    }
    if (e.code === 'CAIRN_CORRUPTION' || e.code === 'CAIRN_IO') return runScrub({ dir: resolve(dir) }, opts);
    throw e;
  }
  try {
    return await db.scrub(options);
  } finally {
    await db.close();
  }
}
