/** `scrub(dir)`: scrub a store directory from outside, whatever state it is in. */
import { resolve } from 'node:path';

import { CairnError } from '../errors.js';
import { LAYOUT } from '../layout.js';
import { open, type RecoveryReport, type Store } from '../store.js';
import { parseScrubOptions, runScrub, type ScrubOptions, type ScrubReport } from './index.js';
import { writeLastScrub } from './result.js';

/**
 * Scrub the store in `dir`. It never creates one: a missing path or empty directory rejects with
 * `CAIRN_NOT_FOUND`, a directory of other files with `CAIRN_NOT_A_STORE`.
 * - It is first opened with `absolute-consistency`, which changes nothing when it finds damage.
 *   If that works, it is scrubbed as `db.scrub()` does (repairs may rebuild from the engine)
 *   and closed.
 * - If another process has it open (`CAIRN_LOCKED`), it is checked read-only, skipping the WAL
 *   segment being written; `repair` is refused, since that process owns the files.
 * - If it is damaged and `repair` is off, it is checked offline, read-only.
 * - If it is damaged and `repair` is on, it is opened with the default recovery, which rebuilds
 *   damaged checkpoint records from the WAL (or marks them unreadable), quarantines the files
 *   and checkpoints; what that open found and did is merged into the report, and the scrub
 *   goes on as `db.scrub({ repair: true })`. If even that open fails, the store is checked
 *   offline and repaired from identical copies only (a snapshot or another live name).
 */
export async function scrub(dir: string, options: ScrubOptions = {}): Promise<ScrubReport> {
  if (typeof dir !== 'string' || dir.length === 0) throw new CairnError('CAIRN_INVALID_ARGUMENT', 'dir must be a non-empty string');
  const opts = parseScrubOptions(options);
  let db: Store;
  let repairedOnOpen: RecoveryReport | null = null;
  try {
    db = await open(dir, { create: false, recovery: 'absolute-consistency' });
  } catch (e) {
    if (!(e instanceof CairnError)) throw e;
    if (e.code === 'CAIRN_LOCKED') {
      if (opts.repair) throw new CairnError('CAIRN_LOCKED', `${e.message}; repair it from the process that has it open (db.scrub({ repair: true }))`);
      return runScrub({ dir: resolve(dir), writerElsewhere: true }, opts);
    }
    if (e.code !== 'CAIRN_CORRUPTION' && e.code !== 'CAIRN_IO') throw e;
    if (!opts.repair) return runScrub({ dir: resolve(dir) }, opts);
    try {
      db = await open(dir, { create: false });
      repairedOnOpen = db.recoveryReport;
    } catch (e2) {
      if (e2 instanceof CairnError && (e2.code === 'CAIRN_CORRUPTION' || e2.code === 'CAIRN_IO')) return runScrub({ dir: resolve(dir) }, opts);
      throw e2;
    }
  }
  try {
    const report = await db.scrub(options);
    if (repairedOnOpen) {
      mergeOpenRepairs(report, repairedOnOpen);
      writeLastScrub(resolve(dir), report, opts.repair);
    }
    return report;
  } finally {
    await db.close();
  }
}

/** Add what a repairing open found and did (damaged checkpoint records, the files it replaced)
 *  to the scrub report, as if the scrub had found and repaired them. */
function mergeOpenRepairs(report: ScrubReport, rr: RecoveryReport): void {
  const replaced = new Map(rr.quarantined.map((q) => [q.file, q.kept]));
  const rebuilt = new Map<string, number>();
  for (const r of rr.repairedRecords) {
    report.corrupt.push({
      file: r.file,
      offset: r.offset,
      kind: 'checksum',
      collection: r.collection,
      id: r.id,
      detail: `record checksum mismatch; rebuilt from ${r.from}`,
    });
    rebuilt.set(r.file, (rebuilt.get(r.file) ?? 0) + 1);
  }
  const lost = new Map<string, number>();
  for (const u of rr.unreadableRecords) {
    if (!replaced.has(u.file)) continue; // marked by an earlier open: listed in unreadableRecords
    report.corrupt.push({ file: u.file, offset: u.offset, kind: 'checksum', collection: u.collection, id: u.id, detail: u.reason });
    lost.set(u.file, (lost.get(u.file) ?? 0) + 1);
  }
  if (rr.manifestRestored) report.corrupt.push({ file: LAYOUT.manifest, offset: 0, kind: 'checksum', detail: rr.manifestRestored });
  for (const [file, kept] of replaced) {
    const from =
      file === LAYOUT.manifest ? LAYOUT.manifestCopy : `open: ${rebuilt.get(file) ?? 0} record(s) rebuilt from the WAL, ${lost.get(file) ?? 0} unreadable`;
    report.repaired.push({ file, from, quarantined: kept });
  }
  report.corrupt.sort((a, b) => (a.file === b.file ? a.offset - b.offset : a.file < b.file ? -1 : 1));
}
