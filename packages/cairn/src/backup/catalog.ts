/**
 * What backups the targets hold: every readable manifest, and the status of one backup
 * (completed, corrupted, in progress, failed). A backup without a manifest is not listed.
 */
import { CairnError, invalidArgument } from '../errors.js';
import { errorOf } from './failure.js';
import { diedHere, type Marker } from './markers.js';
import { type BackupMetadata, corruptedMetadata, decodeManifest, emptyMetadata, type ManifestBody, toMetadata } from './metadata.js';
import { type BackupSettings, isBackupId, sourceDirOf } from './settings.js';
import { BACKUPS_PREFIX, type BackupTarget, MANIFEST_NAME, manifestKey, markerKey } from './target.js';

export interface TargetManifests {
  manifests: ManifestBody[];
  corrupted: Array<{ id: string; error: CairnError }>;
  shas: Map<string, string>;
}

export async function readManifests(target: BackupTarget): Promise<TargetManifests> {
  const keys = (await target.list(BACKUPS_PREFIX)).filter((e) => e.key.endsWith(`/${MANIFEST_NAME}`));
  const manifests: ManifestBody[] = [];
  const corrupted: Array<{ id: string; error: CairnError }> = [];
  const shas = new Map<string, string>();
  for (const { key } of keys) {
    const id = key.slice(BACKUPS_PREFIX.length, -MANIFEST_NAME.length - 1);
    const buf = await target.get(key);
    if (!buf) continue;
    try {
      const { body, sha256 } = decodeManifest(`${target.url}/${key}`, buf);
      if (body.id !== id) throw new CairnError('CAIRN_CORRUPTION', `manifest ${target.url}/${key} is damaged: it names backup '${body.id}'`);
      manifests.push(body);
      shas.set(id, sha256);
    } catch (e) {
      corrupted.push({ id, error: errorOf(e) });
    }
  }
  return { manifests, corrupted, shas };
}

/** Every listed backup on every target, oldest first. */
export async function listBackups(settings: BackupSettings): Promise<BackupMetadata[]> {
  const out: BackupMetadata[] = [];
  const errors: string[] = [];
  for (const t of settings.targets) {
    let read: TargetManifests;
    try {
      read = await readManifests(t);
    } catch (e) {
      // One unreachable target does not hide the others' backups.
      errors.push(`${t.url}: ${errorOf(e).message}`);
      continue;
    }
    const { manifests, corrupted, shas } = read;
    for (const m of manifests) out.push(toMetadata(m, shas.get(m.id)!, t.url));
    for (const c of corrupted) out.push(corruptedMetadata(c.id, t.url, c.error));
  }
  if (errors.length === settings.targets.length) throw new CairnError('CAIRN_IO', `no target could be listed: ${errors.join('; ')}`);
  return out.sort((a, b) => a.timestamp.getTime() - b.timestamp.getTime() || a.id.localeCompare(b.id) || a.target.localeCompare(b.target));
}

/** The backup's metadata on the first target that knows it; `pending`: queued in this manager. */
export async function backupStatus(settings: BackupSettings, id: string, pending: (id: string) => boolean): Promise<BackupMetadata> {
  if (!isBackupId(id)) throw invalidArgument('id must be a backup id');
  if (pending(id)) return { ...emptyMetadata(id, 'full', sourceDirOf(settings), settings.targets[0]!.url, settings.clock.now()), status: 'pending' };
  for (const t of settings.targets) {
    const buf = await t.get(manifestKey(id));
    if (buf) {
      try {
        const { body, sha256 } = decodeManifest(`${t.url}/${manifestKey(id)}`, buf);
        return toMetadata(body, sha256, t.url);
      } catch (e) {
        return corruptedMetadata(id, t.url, errorOf(e));
      }
    }
    const mk = await t.get(markerKey(id));
    if (mk) {
      let m: Marker | undefined;
      try {
        m = JSON.parse(mk.toString('utf8')) as Marker;
      } catch {}
      const base = emptyMetadata(id, m?.kind ?? 'full', sourceDirOf(settings), t.url, m?.startedMs ?? 0);
      const dead = m && diedHere(m);
      return dead
        ? { ...base, status: 'failed', error: `interrupted: process ${m!.pid} died before the manifest was written` }
        : { ...base, status: 'in_progress' };
    }
  }
  throw notFound(settings, id);
}

export function notFound(settings: BackupSettings, id: string): CairnError {
  return new CairnError('CAIRN_NOT_FOUND', `backup '${id}' does not exist on ${settings.targets.map((t) => t.url).join(', ')}`);
}
