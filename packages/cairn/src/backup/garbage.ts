/**
 * Garbage collection of the chunk store: delete chunks that no manifest names. Skipped while a
 * manifest is damaged (its chunks are unknown) or a live run may be uploading chunks that its
 * manifest, not yet written, will name.
 */
import { readManifests } from './catalog.js';
import { CHUNK_NAME } from './chunks.js';
import { readMarkers } from './markers.js';
import { type BackupTarget, CHUNKS_PREFIX } from './target.js';
import type { BackupClock, PruneResult } from './types.js';

export type GarbageResult = Pick<PruneResult, 'chunksDeleted' | 'bytesFreed' | 'gcSkipped'>;

export async function collectGarbage(t: BackupTarget, clock: BackupClock): Promise<GarbageResult> {
  const { manifests, corrupted } = await readManifests(t);
  if (corrupted.length > 0) {
    return { chunksDeleted: 0, bytesFreed: 0, gcSkipped: `damaged manifest(s) ${corrupted.map((c) => c.id).join(', ')}: their chunks are unknown` };
  }
  const { markers, stale } = await readMarkers(t, clock);
  if (markers.length > stale.length) return { chunksDeleted: 0, bytesFreed: 0, gcSkipped: 'a backup is in progress' };
  const referenced = new Set<string>();
  for (const m of manifests) for (const c of Object.keys(m.chunks)) referenced.add(c);
  let chunksDeleted = 0;
  let bytesFreed = 0;
  for (const e of await t.list(CHUNKS_PREFIX)) {
    const name = e.key.slice(CHUNKS_PREFIX.length);
    if (!CHUNK_NAME.test(name) || referenced.has(name)) continue;
    await t.delete(e.key);
    chunksDeleted++;
    bytesFreed += e.size;
  }
  return { chunksDeleted, bytesFreed, gcSkipped: null };
}
