/**
 * IN_PROGRESS markers. A run puts one before its first chunk and deletes it once its manifest is
 * written (or it fails), so garbage collection leaves chunks alone while any live run may still
 * name them. A marker is debris once its process is gone (this host), or after a day (another
 * host, whose processes cannot be seen).
 */
import { hostname } from 'node:os';

import type { BackupKind } from './metadata.js';
import { BACKUPS_PREFIX, type BackupTarget, MARKER_NAME, markerKey } from './target.js';
import { processAlive } from './target-file.js';
import type { BackupClock } from './types.js';

export interface Marker {
  id: string;
  kind: BackupKind;
  pid: number;
  host: string;
  startedMs: number;
}

/** An IN_PROGRESS marker of another host counts as dead after this long. */
const FOREIGN_MARKER_TTL_MS = 24 * 3_600_000;

export async function putMarker(target: BackupTarget, id: string, kind: BackupKind, startedMs: number): Promise<void> {
  const marker: Marker = { id, kind, pid: process.pid, host: hostname(), startedMs };
  await target.put(markerKey(id), Buffer.from(JSON.stringify(marker)));
}

/** Every marker on the target, and those of them whose run is dead. */
export async function readMarkers(target: BackupTarget, clock: BackupClock): Promise<{ markers: Marker[]; stale: Marker[] }> {
  const keys = (await target.list(BACKUPS_PREFIX)).filter((e) => e.key.endsWith(`/${MARKER_NAME}`));
  const markers: Marker[] = [];
  const stale: Marker[] = [];
  for (const { key } of keys) {
    const buf = await target.get(key);
    if (!buf) continue;
    let m: Marker;
    try {
      m = JSON.parse(buf.toString('utf8')) as Marker;
    } catch {
      m = { id: key.slice(BACKUPS_PREFIX.length, -MARKER_NAME.length - 1), kind: 'full', pid: -1, host: '', startedMs: 0 };
    }
    markers.push(m);
    const dead = m.host === hostname() ? !processAlive(m.pid) : clock.now() - m.startedMs > FOREIGN_MARKER_TTL_MS;
    if (dead) stale.push(m);
  }
  return { markers, stale };
}

/** Whether the marker's run died on this host (another host's runs cannot be seen). */
export function diedHere(m: Marker): boolean {
  return m.host === hostname() && !processAlive(m.pid);
}
