/**
 * Retention: keep a backup while it is among the newest `count` or younger than `days` (by the
 * manager's clock), always the newest, and every base a kept backup names (transitively). A
 * deleted backup loses its manifest; then chunks that no remaining manifest names are deleted.
 */
import { readManifests } from './catalog.js';
import { collectGarbage } from './garbage.js';
import type { BackupSettings } from './settings.js';
import { type BackupTarget, manifestKey } from './target.js';
import type { PruneResult } from './types.js';

const DAY_MS = 86_400_000;

export async function pruneTargets(settings: BackupSettings): Promise<PruneResult[]> {
  const out: PruneResult[] = [];
  for (const t of settings.targets) out.push(await pruneTarget(settings, t));
  return out;
}

async function pruneTarget(settings: BackupSettings, t: BackupTarget): Promise<PruneResult> {
  const { manifests } = await readManifests(t);
  const all = manifests.sort((a, b) => a.timestampMs - b.timestampMs || a.id.localeCompare(b.id));
  const now = settings.clock.now();
  const { days, count } = settings.retention;
  const keep = new Set<string>();
  all.forEach((m, i) => {
    const byCount = count !== undefined && i >= all.length - count;
    const byAge = days !== undefined && now - m.timestampMs < days * DAY_MS;
    const noPolicy = days === undefined && count === undefined;
    if (byCount || byAge || noPolicy || i === all.length - 1) keep.add(m.id);
  });
  // A kept incremental or differential keeps its base, and that base its own.
  const byId = new Map(all.map((m) => [m.id, m]));
  for (const id of [...keep]) {
    for (let cur = byId.get(id); cur?.base && !keep.has(cur.base); cur = byId.get(cur.base)) keep.add(cur.base);
  }
  const deleted: string[] = [];
  for (const m of all) {
    if (keep.has(m.id)) continue;
    await t.delete(manifestKey(m.id));
    deleted.push(m.id);
  }
  const gc = await collectGarbage(t, settings.clock);
  return { target: t.url, kept: all.filter((m) => keep.has(m.id)).map((m) => m.id), deleted, ...gc };
}
