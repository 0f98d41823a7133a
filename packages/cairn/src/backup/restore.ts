/**
 * Restore a backup: read one target's copy once, verifying each chunk and file while writing it
 * into a temp directory beside the target (in the layout the store restore reads), then restore
 * from there; the store restore links the verified files into the target rather than copying
 * them again. Nothing is written to the target before the copy has verified; a damaged copy
 * (the temp directory is discarded) falls back to the next target.
 */
import { mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve as resolvePath } from 'node:path';

import { CairnError, invalidArgument } from '../errors.js';
import { LAYOUT } from '../layout.js';
import { type RestoreResult, type RestoreTo, restore as restoreStore } from '../restore.js';
import { checkKnownKeys, checkPlainObject, isPlainObject } from '../validate.js';
import { notFound } from './catalog.js';
import { errorOf } from './failure.js';
import { decodeManifest, type ManifestBody } from './metadata.js';
import { type BackupSettings, isBackupId } from './settings.js';
import { manifestKey } from './target.js';
import type { VerifyProblem } from './types.js';
import { checkOnTarget, type TargetCheck } from './verify.js';

/** Bytes of the backup's files read once, verified and written out (`write`), then restored
 *  from them (`restore`: the point-in-time restore's own progress), on one target. */
export type RestoreProgress = (p: { phase: 'write' | 'restore'; target: string; bytes: number; totalBytes: number }) => void;

export async function restoreBackup(
  settings: BackupSettings,
  id: string,
  targetDir: string,
  options: { to?: RestoreTo; onProgress?: RestoreProgress },
): Promise<RestoreResult & { backup: string; from: string }> {
  if (!isBackupId(id)) throw invalidArgument('id must be a backup id');
  if (typeof targetDir !== 'string' || targetDir === '') throw invalidArgument('targetDir must be a directory path');
  const o = checkPlainObject('options', options);
  checkKnownKeys('options', o, ['to', 'onProgress']);
  const to = o.to as RestoreTo | undefined;
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw invalidArgument('options.onProgress must be a function');
  const onProgress = o.onProgress as RestoreProgress | undefined;
  const phase = (p: 'write' | 'restore') =>
    onProgress ? (x: { target: string; bytes: number; totalBytes: number }) => onProgress({ phase: p, ...x }) : undefined;
  const target = resolvePath(targetDir);
  try {
    const s = await stat(target);
    if (!s.isDirectory()) throw invalidArgument(`targetDir ${target} exists and is not a directory; restore never overwrites`);
    if ((await readdir(target)).length > 0) throw invalidArgument(`targetDir ${target} is not empty; restore never overwrites`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const failures: VerifyProblem[] = [];
  for (const t of settings.targets) {
    if (to !== undefined) {
      // The manifest alone says whether `to` is reachable: refuse before reading any chunk.
      let manifest: Buffer | undefined;
      try {
        manifest = await t.get(manifestKey(id));
      } catch (e) {
        failures.push({ target: t.url, kind: 'target', message: `could not be read: ${errorOf(e).message}` });
        continue;
      }
      if (manifest) {
        let body: ManifestBody | undefined;
        try {
          body = decodeManifest(`${t.url}/${manifestKey(id)}`, manifest).body;
        } catch {
          // A damaged manifest is reported by the check below.
        }
        if (body) checkReachable(id, body, to);
      }
    }
    await mkdir(dirname(target), { recursive: true });
    const tmp = await mkdtemp(join(dirname(target), `.${basename(target)}.cairn-backup-`));
    try {
      await mkdir(join(tmp, LAYOUT.snapshots), { recursive: true });
      let checked: TargetCheck | undefined;
      try {
        checked = await checkOnTarget(settings, t, id, tmp, phase('write'));
      } catch (e) {
        failures.push({ target: t.url, kind: 'target', message: `could not be read: ${errorOf(e).message}` });
        continue;
      }
      if (!checked) continue;
      if (checked.problems.length > 0) {
        failures.push(...checked.problems);
        continue;
      }
      const restoring = phase('restore');
      const r = await restoreStore({
        source: tmp,
        target,
        ...(to !== undefined ? { to } : {}),
        ...(restoring ? { onProgress: (p: { bytes: number; totalBytes: number }) => restoring({ target: t.url, ...p }) } : {}),
      });
      return { ...r, backup: id, from: t.url };
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }
  if (failures.length === 0) throw notFound(settings, id);
  const message = `backup '${id}' cannot be restored, nothing was written: ${failures.map((p) => `${p.target}: ${p.message}`).join('; ')}`;
  if (failures.every((p) => p.kind === 'key')) throw invalidArgument(message);
  throw new CairnError('CAIRN_CORRUPTION', message);
}

/** A `to` outside what the backup holds is refused before anything is written. */
function checkReachable(id: string, body: ManifestBody, to: RestoreTo): void {
  const bad = () => invalidArgument('options.to must be an object with seq or time');
  if (!isPlainObject(to)) throw bad();
  const range = body.range;
  if (!range) throw invalidArgument(`backup '${id}' holds nothing to restore`);
  const from = BigInt(range.from.seq);
  const last = BigInt(range.to.seq);
  const desc = `seq ${from}..${last} (time ${new Date(range.from.timeMs).toISOString()}..${new Date(range.to.timeMs).toISOString()})`;
  if ('seq' in to) {
    const s = typeof to.seq === 'bigint' ? to.seq : typeof to.seq === 'number' && Number.isSafeInteger(to.seq) ? BigInt(to.seq) : null;
    if (s === null) throw invalidArgument('options.to.seq must be a non-negative integer or bigint');
    if (s < from || s > last) throw invalidArgument(`options.to: seq ${s} is outside what backup '${id}' holds: ${desc}`);
  } else if ('time' in to) {
    const ms = to.time instanceof Date ? to.time.getTime() : to.time;
    if (typeof ms !== 'number' || !Number.isFinite(ms)) throw invalidArgument('options.to.time must be a valid Date or epoch milliseconds');
    if (ms < range.from.timeMs && from > 0n)
      throw invalidArgument(`options.to: time ${new Date(ms).toISOString()} is before what backup '${id}' holds: ${desc}`);
  } else throw bad();
}
