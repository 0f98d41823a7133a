/**
 * Create a backup on every target. Per target: clean what interrupted runs left, put an
 * IN_PROGRESS marker, choose the base (incremental: the newest backup made with the same key;
 * differential: the newest full), reuse every unchanged file's chunks, upload only chunk names the
 * target lacks, then put the manifest.
 *
 * Invariants:
 * - Chunks first, manifest last: a backup exists (is listed) only once its manifest is written,
 *   and the manifest is written only after every chunk it names is durable in the target.
 * - Every manifest names every chunk of every file, so any backup restores alone from the chunk
 *   store; `base` records what the run compared against, never what a restore needs.
 * - A chunk object is never rewritten or deleted while a manifest names it.
 */
import { open as openFile, readFile } from 'node:fs/promises';

import { CairnError } from '../errors.js';
import { LAYOUT } from '../layout.js';
import { nativeBytes } from '../native.js';
import { Store } from '../store.js';
import { readManifests } from './catalog.js';
import { CHUNK_BYTES, encodeChunk, shufflable, WHOLE_FILE_BYTES } from './chunks.js';
import { chunkName } from './crypto.js';
import { errorOf } from './failure.js';
import { collectGarbage } from './garbage.js';
import { putMarker, readMarkers } from './markers.js';
import { type BackupKind, type BackupMetadata, encodeManifest, failedMetadata, type ManifestBody, type ManifestFile, toMetadata } from './metadata.js';
import type { BackupSettings } from './settings.js';
import { collectSource, lastWalRecord, type SourceContent, type SourceFile, trimPreallocatedTail } from './source.js';
import { type BackupTarget, CHUNKS_PREFIX, chunkKey, manifestKey, markerKey } from './target.js';
import type { BackupProgress, CreateResult, TargetResult } from './types.js';

/** Archived WAL segments: their path prefix inside a backup. */
const ARCHIVE_PREFIX = `${LAYOUT.archive}/`;

/** Back up the source to every target. Rejects only when every target failed. */
export async function createBackup(
  settings: BackupSettings,
  requested: BackupKind,
  wantedId: string | undefined,
  onProgress: ((p: BackupProgress) => void) | undefined,
): Promise<CreateResult> {
  const started = settings.clock.now();
  const wallStart = performance.now();
  let id = wantedId ?? `${compactTime(started)}-${requested}`;
  const existing = await Promise.all(settings.targets.map((t) => t.get(manifestKey(id)).catch(() => undefined)));
  if (existing.some((x) => x !== undefined)) {
    if (wantedId !== undefined) throw new CairnError('CAIRN_ALREADY_EXISTS', `backup '${id}' already exists`);
    id = `${id}-${process.pid}`;
  }
  let sourceDir: string;
  if (settings.source instanceof Store) {
    sourceDir = settings.source.dir;
    try {
      await settings.source.snapshot();
    } catch (e) {
      // No write since the last snapshot: that snapshot is current.
      if (!(e instanceof CairnError && e.code === 'CAIRN_ALREADY_EXISTS')) throw e;
    }
  } else sourceDir = settings.source;
  const content = await collectSource(sourceDir, settings.exclude);
  const settled = await Promise.allSettled(
    settings.targets.map((t) => createOn(settings, t, id, requested, sourceDir, content, started, wallStart, onProgress)),
  );
  const results: TargetResult[] = settled.map((s, i) => {
    const target = settings.targets[i]!.url;
    if (s.status === 'fulfilled') return { target, ok: true, metadata: s.value };
    const error = errorOf(s.reason);
    return { target, ok: false, error, metadata: failedMetadata(id, requested, sourceDir, target, started, performance.now() - wallStart, error) };
  });
  const first = results.find((r) => r.ok);
  if (!first) {
    const only = results.length === 1 ? (results[0] as { error: CairnError }).error : undefined;
    if (only) throw only;
    throw new CairnError(
      'CAIRN_IO',
      `backup '${id}' failed on every target: ${results.map((r) => `${r.target}: ${(r as { error: CairnError }).error.message}`).join('; ')}`,
    );
  }
  return { ...first.metadata, targets: results };
}

async function createOn(
  settings: BackupSettings,
  target: BackupTarget,
  id: string,
  requested: BackupKind,
  sourceDir: string,
  content: SourceContent,
  started: number,
  wallStart: number,
  onProgress: ((p: BackupProgress) => void) | undefined,
): Promise<BackupMetadata> {
  await cleanDebris(settings, target);
  await putMarker(target, id, requested, started);
  try {
    const present = new Map((await target.list(CHUNKS_PREFIX)).map((e) => [e.key.slice(CHUNKS_PREFIX.length), e.size]));
    const { manifests } = await readManifests(target);
    const keyId = settings.keys?.keyId ?? null;
    const sameKey = (m: ManifestBody) => (m.encryption?.keyId ?? null) === keyId;
    const completed = manifests.filter(sameKey).sort((a, b) => a.timestampMs - b.timestampMs || a.id.localeCompare(b.id));
    let kind = requested;
    let base: ManifestBody | undefined;
    if (kind === 'incremental') base = completed.at(-1);
    else if (kind === 'differential') base = completed.filter((m) => m.kind === 'full').at(-1);
    // Nothing to compare against: the run is a full backup, and says so.
    if (kind !== 'full' && !base) kind = 'full';
    const baseFiles = new Map((base?.files ?? []).map((f) => [f.path, f]));
    // A newer snapshot links the same immutable data files under a new snapshot id.
    const baseByContent = new Map((base?.files ?? []).map((f) => [contentKey(f.path, f.bytes, f.xxh3), f]));

    const chunks: Record<string, [number, number]> = {};
    const files: ManifestFile[] = [];
    let read = 0;
    let written = 0;
    let chunksWritten = 0;
    let rangeTo: { seq: bigint; timeMs: number } | null = null;
    const walLast = new Map<string, { seq: bigint; timeMs: number } | null>();
    const totalBytes = content.files.reduce((n, f) => n + f.bytes, 0);
    let doneBytes = 0;
    const progress = (f: SourceFile) => {
      doneBytes += f.bytes;
      onProgress?.({ target: target.url, files: files.length, totalFiles: content.files.length, bytes: doneBytes, totalBytes });
    };
    for (const f of content.files) {
      const prev = baseFiles.get(f.path) ?? (f.xxh3 !== undefined ? baseByContent.get(contentKey(f.path, f.bytes, f.xxh3)) : undefined);
      if (prev && base && unchanged(f, prev) && prev.chunks.every((c) => present.has(c) && base!.chunks[c])) {
        files.push({ ...prev, path: f.path, mtimeMs: f.mtimeMs });
        for (const c of prev.chunks) chunks[c] = [base.chunks[c]![0], present.get(c)!];
        progress(f);
        continue;
      }
      const upload = async (pieces: Buffer[]): Promise<string[]> => {
        const names: string[] = [];
        const todo = new Map<string, Buffer>();
        for (const part of pieces) {
          const name = chunkName(part, settings.keys);
          names.push(name);
          if (present.has(name)) chunks[name] = [part.length, present.get(name)!];
          else todo.set(name, part);
        }
        await mapLimit([...todo], settings.concurrency, async ([name, part]) => {
          const { object } = encodeChunk(part, { level: settings.level, shuffle: shufflable(f.path), keys: settings.keys });
          await target.put(chunkKey(name), object);
          present.set(name, object.length);
          chunks[name] = [part.length, object.length];
          written += object.length;
          chunksWritten++;
        });
        return names;
      };
      if (f.bytes > WHOLE_FILE_BYTES && f.xxh3 !== undefined) {
        // A large immutable snapshot file streams; its xxh3 is the snapshot manifest's, which
        // restore() checks as it copies the file.
        const names: string[] = [];
        const fh = await openFile(f.from, 'r');
        try {
          const batch = CHUNK_BYTES * settings.concurrency;
          for (let at = 0; at < f.bytes; at += batch) {
            const len = Math.min(batch, f.bytes - at);
            const buf = Buffer.allocUnsafe(len);
            const { bytesRead } = await fh.read(buf, 0, len, at);
            if (bytesRead !== len) throw new CairnError('CAIRN_IO', `source file ${f.from} is shorter than its snapshot manifest says (${f.bytes} bytes)`);
            const pieces: Buffer[] = [];
            for (let o = 0; o < len; o += CHUNK_BYTES) pieces.push(buf.subarray(o, Math.min(len, o + CHUNK_BYTES)));
            names.push(...(await upload(pieces)));
          }
        } finally {
          await fh.close();
        }
        read += f.bytes;
        files.push({ path: f.path, bytes: f.bytes, xxh3: f.xxh3, mtimeMs: f.mtimeMs, chunks: names });
        progress(f);
        continue;
      }
      let raw = await readSource(f);
      if (!f.immutable && f.path.endsWith(LAYOUT.walExt)) raw = trimPreallocatedTail(raw);
      read += raw.length;
      const xxh3 = nativeBytes.xxh3Hex(raw);
      if (f.xxh3 !== undefined && f.xxh3 !== xxh3) {
        throw new CairnError('CAIRN_CORRUPTION', `source file ${f.from} fails its checksum (xxh3 ${xxh3}, its snapshot manifest says ${f.xxh3}); run scrub`, {
          file: f.from,
          offset: 0,
        });
      }
      if (f.path.endsWith(LAYOUT.walExt) && f.path.startsWith(ARCHIVE_PREFIX)) walLast.set(f.path, lastWalRecord(raw, null));
      const pieces: Buffer[] = [];
      for (let at = 0; at < raw.length; at += CHUNK_BYTES) pieces.push(raw.subarray(at, at + CHUNK_BYTES));
      const names = await upload(pieces);
      files.push({ path: f.path, bytes: raw.length, xxh3, mtimeMs: f.mtimeMs, chunks: names });
      progress(f);
    }
    for (const f of files) {
      if (!f.path.startsWith(ARCHIVE_PREFIX)) continue;
      const last = walLast.has(f.path) ? walLast.get(f.path)! : walFromBase(f);
      if (last && (!rangeTo || last.seq > rangeTo.seq)) rangeTo = last;
      (f as ManifestFile & { walLast?: { seq: string; timeMs: number } | null }).walLast = last ? { seq: last.seq.toString(), timeMs: last.timeMs } : null;
    }
    const snap = content.snapshot;
    const from = snap ? { seq: snap.seq.toString(), timeMs: snap.time.getTime() } : { seq: '0', timeMs: 0 };
    const to = rangeTo && (!snap || rangeTo.seq > snap.seq) ? { seq: rangeTo.seq.toString(), timeMs: rangeTo.timeMs } : from;
    const body: ManifestBody = {
      format: 'cairn-backup',
      version: 1,
      id,
      timestampMs: started,
      source: sourceDir,
      kind,
      base: kind === 'full' ? null : base!.id,
      compression: { algorithm: 'zstd', level: settings.level, shuffle: true },
      encryption: settings.keys ? { algorithm: 'aes-256-gcm', keyId: settings.keys.keyId } : null,
      snapshot: snap?.id ?? null,
      range: snap || rangeTo ? { from, to } : null,
      bytes: {
        raw: files.reduce((n, f) => n + f.bytes, 0),
        stored: Object.values(chunks).reduce((n, c) => n + c[1], 0),
        written,
        read,
      },
      durationMs: Math.round(performance.now() - wallStart),
      files,
      chunks,
      chunksWritten,
    };
    // Ordering: every chunk above is durable; the manifest goes last, atomically.
    const { bytes, sha256 } = encodeManifest(body);
    await target.put(manifestKey(id), bytes);
    await target.delete(markerKey(id));
    return toMetadata(body, sha256, target.url);
  } catch (e) {
    // The chunks stay until the next prune collects them; the marker goes now.
    await target.delete(markerKey(id)).catch(() => {});
    throw e;
  }
}

/**
 * Remove what interrupted runs left: markers of dead runs (and their backups' directories when
 * no manifest made it), temp objects, and then chunks no manifest names.
 */
async function cleanDebris(settings: BackupSettings, target: BackupTarget): Promise<void> {
  await target.cleanDebris();
  const { markers, stale } = await readMarkers(target, settings.clock);
  for (const m of stale) await target.delete(markerKey(m.id));
  if (stale.length > 0 && markers.length === stale.length) await collectGarbage(target, settings.clock).catch(() => {});
}

async function mapLimit<T>(items: readonly T[], limit: number, f: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await f(items[next++]!);
  });
  await Promise.all(workers);
}

function compactTime(ms: number): string {
  return new Date(ms)
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.(\d{3})Z$/, '$1Z');
}

const SNAPSHOT_FILE = new RegExp(`^${LAYOUT.snapshots}/[^/]+/(.+)$`);

/** A snapshot file by its path inside the snapshot, size and xxh3; other files by path only. */
function contentKey(path: string, bytes: number, xxh3: string): string {
  const m = SNAPSHOT_FILE.exec(path);
  return m ? `${m[1]}\0${bytes}\0${xxh3}` : `${path}\0${bytes}\0${xxh3}`;
}

function unchanged(f: SourceFile, prev: ManifestFile): boolean {
  if (prev.bytes !== f.bytes) return false;
  if (f.xxh3 !== undefined) return prev.xxh3 === f.xxh3;
  // Snapshot SNAPSHOT files and archived segments never change once they exist.
  return f.immutable && prev.mtimeMs === f.mtimeMs;
}

function walFromBase(f: ManifestFile): { seq: bigint; timeMs: number } | null {
  const w = (f as ManifestFile & { walLast?: { seq: string; timeMs: number } | null }).walLast;
  return w ? { seq: BigInt(w.seq), timeMs: w.timeMs } : null;
}

async function readSource(f: SourceFile): Promise<Buffer> {
  try {
    return await readFile(f.from);
  } catch (e) {
    // A checkpoint archived the live segment meanwhile.
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && f.alt) return readFile(f.alt);
    throw e;
  }
}
