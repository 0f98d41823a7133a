/**
 * BackupManager: verified, compressed, optionally encrypted backups of a store to one or more
 * targets, with retention, schedules and restore (docs/format.md, "Backups").
 *
 * Invariants:
 * - Chunks first, manifest last: a backup exists (is listed) only once its manifest is written,
 *   and the manifest is written only after every chunk it names is durable in the target.
 * - Every manifest names every chunk of every file, so any backup restores alone from the chunk
 *   store; `base` records what the run compared against, never what a restore needs.
 * - A chunk object is never rewritten or deleted while a manifest names it.
 */
import { hostname } from 'node:os';
import { type FileHandle, mkdir, mkdtemp, open as openFile, readdir, readFile, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve as resolvePath } from 'node:path';

import { CairnError, invalidArgument } from '../errors.js';
import { nativeBytes } from '../native.js';
import { restore as restoreStore, type RestoreResult, type RestoreTo } from '../restore.js';
import { Store } from '../store.js';
import { checkKnownKeys, checkPlainObject, checkPositiveInt, isPlainObject } from '../validate.js';
import { CHUNK_BYTES, CHUNK_NAME, ChunkError, decodeChunk, encodeChunk, shufflable } from './chunks.js';
import { type Cron, parseCron } from './cron.js';
import { type ChunkKeys, chunkKeys, chunkName, parseKey } from './crypto.js';
import {
  type BackupKind,
  type BackupMetadata,
  decodeManifest,
  encodeManifest,
  type ManifestBody,
  type ManifestFile,
  toMetadata,
} from './metadata.js';
import { collectSource, lastWalRecord, type SourceContent, type SourceFile, trimPreallocatedTail } from './source.js';
import {
  BACKUPS_PREFIX,
  type BackupTarget,
  CHUNKS_PREFIX,
  chunkKey,
  MANIFEST_NAME,
  manifestKey,
  MARKER_NAME,
  markerKey,
  parseTargetUrl,
} from './target.js';
import { FileTarget, processAlive } from './target-file.js';
import type {
  BackupClock,
  BackupExclude,
  BackupManagerOptions,
  BackupProgress,
  CreateResult,
  PruneResult,
  S3Settings,
  ScheduleHandle,
  ScheduleOptions,
  TargetResult,
  VerifyProblem,
  VerifyProblemKind,
  VerifyReport,
} from './types.js';

export const systemClock: BackupClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

interface Marker {
  id: string;
  kind: BackupKind;
  pid: number;
  host: string;
  startedMs: number;
}

const KINDS: readonly BackupKind[] = ['full', 'incremental', 'differential'];
const EXCLUDES: readonly BackupExclude[] = ['wal', 'live-wal'];
const ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const DAY_MS = 86_400_000;
/** Files up to this size are read and checked whole; larger ones stream in chunks. */
const WHOLE_FILE_BYTES = 256 << 20;
/** An IN_PROGRESS marker of another host counts as dead after this long. */
const FOREIGN_MARKER_TTL_MS = 24 * 3_600_000;

function errorOf(e: unknown): CairnError {
  if (e instanceof CairnError) return e;
  const err = e as NodeJS.ErrnoException;
  return new CairnError(err?.code ? 'CAIRN_IO' : 'CAIRN_INTERNAL', err instanceof Error ? err.message : String(e), { cause: e });
}

async function mapLimit<T>(items: readonly T[], limit: number, f: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await f(items[next++]!);
  });
  await Promise.all(workers);
}

function compactTime(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.(\d{3})Z$/, '$1Z');
}

export class BackupManager {
  readonly #source: string | Store;
  readonly #targets: BackupTarget[];
  readonly #retention: { days?: number; count?: number };
  readonly #level: number;
  readonly #keys: ChunkKeys | null;
  readonly #exclude: ReadonlySet<string>;
  readonly #clock: BackupClock;
  readonly #concurrency: number;
  /** create and prune run one at a time per manager. */
  #queue: Promise<unknown> = Promise.resolve();
  #pending = new Set<string>();

  constructor(options: BackupManagerOptions) {
    const o = checkPlainObject('options', options);
    checkKnownKeys('options', o, ['source', 'target', 'retention', 'compression', 'encryption', 'exclude', 'clock', 'concurrency', 's3']);
    if (o.source instanceof Store) this.#source = o.source;
    else if (typeof o.source === 'string' && o.source !== '') this.#source = resolvePath(o.source);
    else throw invalidArgument('options.source must be a store directory path or a Store');
    const urls = Array.isArray(o.target) ? o.target : [o.target];
    if (urls.length === 0) throw invalidArgument('options.target must name at least one target');
    const s3 = o.s3 === undefined ? undefined : (checkPlainObject('options.s3', o.s3) as S3Settings);
    if (s3) checkKnownKeys('options.s3', s3, ['endpoint', 'region', 'credentials', 'forcePathStyle']);
    const seen = new Set<string>();
    this.#targets = urls.map((u, i) => {
      const field = Array.isArray(o.target) ? `options.target[${i}]` : 'options.target';
      const parsed = parseTargetUrl(field, u);
      if (seen.has(parsed.url)) throw invalidArgument(`${field} repeats '${parsed.url}'`);
      seen.add(parsed.url);
      if (parsed.kind === 'file') return new FileTarget(parsed.url, resolvePath(parsed.path));
      return lazyS3(parsed.url, parsed.bucket, parsed.prefix, s3);
    });
    this.#retention = {};
    if (o.retention !== undefined) {
      const r = checkPlainObject('options.retention', o.retention);
      checkKnownKeys('options.retention', r, ['days', 'count']);
      if (r.days !== undefined) this.#retention.days = checkPositiveInt('options.retention.days', r.days);
      if (r.count !== undefined) this.#retention.count = checkPositiveInt('options.retention.count', r.count);
    }
    this.#level = 3;
    if (o.compression !== undefined) {
      const c = checkPlainObject('options.compression', o.compression);
      checkKnownKeys('options.compression', c, ['level']);
      if (c.level !== undefined) this.#level = checkPositiveInt('options.compression.level', c.level, 19);
    }
    this.#keys = null;
    if (o.encryption !== undefined) {
      const e = checkPlainObject('options.encryption', o.encryption);
      checkKnownKeys('options.encryption', e, ['key']);
      this.#keys = chunkKeys(parseKey('options.encryption.key', e.key));
    }
    const exclude = o.exclude ?? [];
    if (!Array.isArray(exclude)) throw invalidArgument(`options.exclude must be an array of ${EXCLUDES.map((x) => `'${x}'`).join(', ')}`);
    exclude.forEach((x, i) => {
      if (!EXCLUDES.includes(x as BackupExclude)) throw invalidArgument(`options.exclude[${i}] must be one of ${EXCLUDES.map((v) => `'${v}'`).join(', ')}`);
    });
    this.#exclude = new Set(exclude as string[]);
    if (o.clock !== undefined) {
      const c = o.clock as Partial<BackupClock>;
      if (typeof c.now !== 'function' || typeof c.setTimeout !== 'function' || typeof c.clearTimeout !== 'function') {
        throw invalidArgument('options.clock must have now(), setTimeout(fn, ms) and clearTimeout(handle)');
      }
    }
    this.#clock = (o.clock as BackupClock | undefined) ?? systemClock;
    this.#concurrency = o.concurrency === undefined ? 4 : checkPositiveInt('options.concurrency', o.concurrency, 64);
  }

  get targets(): string[] {
    return this.#targets.map((t) => t.url);
  }

  #exclusive<T>(f: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(f, f);
    this.#queue = run.catch(() => {});
    return run;
  }

  // -------------------------------------------------------------------------------------------
  // create

  /** Back up the source to every target. Rejects only when every target failed. */
  async create(options: { kind?: BackupKind; id?: string; onProgress?: (p: BackupProgress) => void } = {}): Promise<CreateResult> {
    const o = checkPlainObject('options', options);
    checkKnownKeys('options', o, ['kind', 'id', 'onProgress']);
    if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw invalidArgument('options.onProgress must be a function');
    const kind = o.kind === undefined ? 'full' : o.kind;
    if (!KINDS.includes(kind as BackupKind)) throw invalidArgument(`options.kind must be one of ${KINDS.map((k) => `'${k}'`).join(', ')}`);
    if (o.id !== undefined && (typeof o.id !== 'string' || !ID.test(o.id))) {
      throw invalidArgument('options.id must be 1-128 characters of letters, digits, ".", "_" or "-", starting with a letter or digit');
    }
    const pendingKey = (o.id as string | undefined) ?? `#${this.#pending.size}-${this.#clock.now()}`;
    this.#pending.add(pendingKey);
    return this.#exclusive(async () => {
      this.#pending.delete(pendingKey);
      return this.#create(kind as BackupKind, o.id as string | undefined, o.onProgress as ((p: BackupProgress) => void) | undefined);
    });
  }

  async #create(requested: BackupKind, wantedId: string | undefined, onProgress: ((p: BackupProgress) => void) | undefined): Promise<CreateResult> {
    const started = this.#clock.now();
    const wallStart = performance.now();
    let id = wantedId ?? `${compactTime(started)}-${requested}`;
    const existing = await Promise.all(this.#targets.map((t) => t.get(manifestKey(id)).catch(() => undefined)));
    if (existing.some((x) => x !== undefined)) {
      if (wantedId !== undefined) throw new CairnError('CAIRN_ALREADY_EXISTS', `backup '${id}' already exists`);
      id = `${id}-${process.pid}`;
    }
    let sourceDir: string;
    if (this.#source instanceof Store) {
      sourceDir = this.#source.dir;
      try {
        await this.#source.snapshot();
      } catch (e) {
        // No write since the last snapshot: that snapshot is current.
        if (!(e instanceof CairnError && e.code === 'CAIRN_ALREADY_EXISTS')) throw e;
      }
    } else sourceDir = this.#source;
    const content = await collectSource(sourceDir, this.#exclude);
    const settled = await Promise.allSettled(this.#targets.map((t) => this.#createOn(t, id, requested, sourceDir, content, started, wallStart, onProgress)));
    const results: TargetResult[] = settled.map((s, i) => {
      const target = this.#targets[i]!.url;
      if (s.status === 'fulfilled') return { target, ok: true, metadata: s.value };
      const error = errorOf(s.reason);
      return { target, ok: false, error, metadata: failedMetadata(id, requested, sourceDir, target, started, performance.now() - wallStart, error) };
    });
    const first = results.find((r) => r.ok);
    if (!first) {
      const only = results.length === 1 ? (results[0] as { error: CairnError }).error : undefined;
      if (only) throw only;
      throw new CairnError('CAIRN_IO', `backup '${id}' failed on every target: ${results.map((r) => `${r.target}: ${(r as { error: CairnError }).error.message}`).join('; ')}`);
    }
    return { ...first.metadata, targets: results };
  }

  async #createOn(
    target: BackupTarget,
    id: string,
    requested: BackupKind,
    sourceDir: string,
    content: SourceContent,
    started: number,
    wallStart: number,
    onProgress: ((p: BackupProgress) => void) | undefined,
  ): Promise<BackupMetadata> {
    await this.#cleanDebris(target);
    const marker: Marker = { id, kind: requested, pid: process.pid, host: hostname(), startedMs: started };
    await target.put(markerKey(id), Buffer.from(JSON.stringify(marker)));
    try {
      const present = new Map((await target.list(CHUNKS_PREFIX)).map((e) => [e.key.slice(CHUNKS_PREFIX.length), e.size]));
      const { manifests } = await this.#readManifests(target);
      const keyId = this.#keys?.keyId ?? null;
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
            const name = chunkName(part, this.#keys);
            names.push(name);
            if (present.has(name)) chunks[name] = [part.length, present.get(name)!];
            else todo.set(name, part);
          }
          await mapLimit([...todo], this.#concurrency, async ([name, part]) => {
            const { object } = encodeChunk(part, { level: this.#level, shuffle: shufflable(f.path), keys: this.#keys });
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
            const batch = CHUNK_BYTES * this.#concurrency;
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
        if (!f.immutable && f.path.endsWith('.wal')) raw = trimPreallocatedTail(raw);
        read += raw.length;
        const xxh3 = nativeBytes.xxh3Hex(raw);
        if (f.xxh3 !== undefined && f.xxh3 !== xxh3) {
          throw new CairnError('CAIRN_CORRUPTION', `source file ${f.from} fails its checksum (xxh3 ${xxh3}, its snapshot manifest says ${f.xxh3}); run scrub`, { file: f.from, offset: 0 });
        }
        if (f.path.endsWith('.wal') && f.path.startsWith('wal-archive/')) walLast.set(f.path, lastWalRecord(raw, null));
        const pieces: Buffer[] = [];
        for (let at = 0; at < raw.length; at += CHUNK_BYTES) pieces.push(raw.subarray(at, at + CHUNK_BYTES));
        const names = await upload(pieces);
        files.push({ path: f.path, bytes: raw.length, xxh3, mtimeMs: f.mtimeMs, chunks: names });
        progress(f);
      }
      for (const f of files) {
        if (!f.path.startsWith('wal-archive/')) continue;
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
        compression: { algorithm: 'zstd', level: this.#level, shuffle: true },
        encryption: this.#keys ? { algorithm: 'aes-256-gcm', keyId: this.#keys.keyId } : null,
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
  async #cleanDebris(target: BackupTarget): Promise<void> {
    await target.cleanDebris();
    const { markers, stale } = await this.#markers(target);
    for (const m of stale) await target.delete(markerKey(m.id));
    if (stale.length > 0 && markers.length === stale.length) await this.#collectGarbage(target).catch(() => {});
  }

  async #markers(target: BackupTarget): Promise<{ markers: Marker[]; stale: Marker[] }> {
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
      // A marker is debris once its process is gone (this host), or after a day (another host).
      const dead = m.host === hostname() ? !processAlive(m.pid) : this.#clock.now() - m.startedMs > FOREIGN_MARKER_TTL_MS;
      if (dead) stale.push(m);
    }
    return { markers, stale };
  }

  // -------------------------------------------------------------------------------------------
  // list, status

  async #readManifests(target: BackupTarget): Promise<{ manifests: ManifestBody[]; corrupted: Array<{ id: string; error: CairnError }>; shas: Map<string, string> }> {
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

  /** Every listed backup on every target, oldest first. A backup without a manifest is not listed. */
  async list(): Promise<BackupMetadata[]> {
    const out: BackupMetadata[] = [];
    const errors: string[] = [];
    for (const t of this.#targets) {
      let read;
      try {
        read = await this.#readManifests(t);
      } catch (e) {
        // One unreachable target does not hide the others' backups.
        errors.push(`${t.url}: ${errorOf(e).message}`);
        continue;
      }
      const { manifests, corrupted, shas } = read;
      for (const m of manifests) out.push(toMetadata(m, shas.get(m.id)!, t.url));
      for (const c of corrupted) out.push(corruptedMetadata(c.id, t.url, c.error));
    }
    if (errors.length === this.#targets.length) throw new CairnError('CAIRN_IO', `no target could be listed: ${errors.join('; ')}`);
    return out.sort((a, b) => a.timestamp.getTime() - b.timestamp.getTime() || a.id.localeCompare(b.id) || a.target.localeCompare(b.target));
  }

  /** The backup's metadata on the first target that knows it: completed, corrupted, in progress or failed. */
  async status(id: string): Promise<BackupMetadata> {
    if (typeof id !== 'string' || !ID.test(id)) throw invalidArgument('id must be a backup id');
    if (this.#pending.has(id)) return { ...emptyMetadata(id, 'full', this.#sourceDir(), this.#targets[0]!.url, this.#clock.now()), status: 'pending' };
    for (const t of this.#targets) {
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
        const base = emptyMetadata(id, m?.kind ?? 'full', this.#sourceDir(), t.url, m?.startedMs ?? 0);
        const dead = m && m.host === hostname() && !processAlive(m.pid);
        return dead ? { ...base, status: 'failed', error: `interrupted: process ${m!.pid} died before the manifest was written` } : { ...base, status: 'in_progress' };
      }
    }
    throw new CairnError('CAIRN_NOT_FOUND', `backup '${id}' does not exist on ${this.targets.join(', ')}`);
  }

  #sourceDir(): string {
    return this.#source instanceof Store ? this.#source.dir : this.#source;
  }

  // -------------------------------------------------------------------------------------------
  // verify, restore

  /** Read back every chunk of the backup on every target holding it; report each problem. */
  async verify(id: string): Promise<VerifyReport> {
    if (typeof id !== 'string' || !ID.test(id)) throw invalidArgument('id must be a backup id');
    const report: VerifyReport = { id, ok: true, problems: [], targets: [] };
    let found = false;
    for (const t of this.#targets) {
      let r;
      try {
        r = await this.#verifyOn(t, id, null);
      } catch (e) {
        report.problems.push({ target: t.url, kind: 'target', message: `target ${t.url} could not be read: ${errorOf(e).message}` });
        report.targets.push({ target: t.url, ok: false, chunks: 0, bytes: 0 });
        continue;
      }
      if (!r) continue;
      found = true;
      report.problems.push(...r.problems);
      report.targets.push({ target: t.url, ok: r.problems.length === 0, chunks: r.chunks, bytes: r.bytes });
    }
    if (!found && report.problems.length === 0) throw new CairnError('CAIRN_NOT_FOUND', `backup '${id}' does not exist on ${this.targets.join(', ')}`);
    report.ok = report.problems.length === 0;
    return report;
  }

  /**
   * Check one target's copy of a backup. With `out`, also write its files under `out` (only
   * call that after a clean check). Returns undefined when the target does not hold it.
   */
  async #verifyOn(
    t: BackupTarget,
    id: string,
    out: string | null,
  ): Promise<{ problems: VerifyProblem[]; chunks: number; bytes: number; body?: ManifestBody } | undefined> {
    const problems: VerifyProblem[] = [];
    const add = (kind: VerifyProblemKind, message: string) => problems.push({ target: t.url, kind, message });
    const entries = await t.list(`${BACKUPS_PREFIX}${id}/`);
    if (entries.length === 0) return undefined;
    for (const e of entries) {
      const name = e.key.slice(BACKUPS_PREFIX.length + id.length + 1);
      if (name !== MANIFEST_NAME && name !== MARKER_NAME) add('extra', `unexpected file '${e.key}' in backup '${id}': the manifest does not name it`);
    }
    const buf = await t.get(manifestKey(id));
    if (!buf) {
      add('manifest', `backup '${id}' has no manifest: it never completed`);
      return { problems, chunks: 0, bytes: 0 };
    }
    let body: ManifestBody;
    try {
      body = decodeManifest(`${t.url}/${manifestKey(id)}`, buf).body;
    } catch (e) {
      add('manifest', errorOf(e).message);
      return { problems, chunks: 0, bytes: 0 };
    }
    if (body.encryption) {
      if (!this.#keys) {
        add('key', `backup '${id}' is encrypted (key id ${body.encryption.keyId}); options.encryption.key is required`);
        return { problems, chunks: 0, bytes: 0, body };
      }
      if (body.encryption.keyId !== this.#keys.keyId) {
        add('key', `wrong encryption key for backup '${id}': the key's id is ${this.#keys.keyId}, the backup was made with key id ${body.encryption.keyId}`);
        return { problems, chunks: 0, bytes: 0, body };
      }
    }
    const keys = body.encryption ? this.#keys : null;
    const chunkObjects = (await t.list(CHUNKS_PREFIX)).filter((e) => !CHUNK_NAME.test(e.key.slice(CHUNKS_PREFIX.length)));
    for (const e of chunkObjects) add('extra', `unexpected object '${e.key}' in the chunk store: not a chunk name`);
    // Each chunk once; a file is checked whole (length and xxh3) as its chunks are read.
    const bad = new Set<string>();
    let bytes = 0;
    let count = 0;
    const checked = new Set<string>();
    for (const f of body.files) {
      // Small files are checked whole against their xxh3; a large one streams chunk by chunk
      // (each chunk proven by its SHA-256), and restore() checks its xxh3 as it copies it.
      const whole = f.bytes <= WHOLE_FILE_BYTES;
      const parts: Buffer[] = [];
      let length = 0;
      let fileBad = false;
      let sink: FileHandle | undefined;
      if (out !== null && problems.length === 0) {
        const dest = join(out, ...f.path.split('/'));
        await mkdir(dirname(dest), { recursive: true });
        sink = await openFile(dest, 'w');
      }
      try {
        for (const c of f.chunks) {
          if (bad.has(c)) {
            fileBad = true;
            continue;
          }
          const obj = await t.get(chunkKey(c));
          if (!obj) {
            bad.add(c);
            fileBad = true;
            add('missing', `chunk ${c} (of '${f.path}') is missing from ${t.url}`);
            continue;
          }
          let raw: Buffer;
          try {
            raw = decodeChunk(c, obj, keys, body.chunks[c]?.[0]);
          } catch (e) {
            bad.add(c);
            fileBad = true;
            if (e instanceof ChunkError) add(e.problem, `${e.message} (file '${f.path}')`);
            else throw e;
            continue;
          }
          if (!checked.has(c)) {
            checked.add(c);
            count++;
            bytes += obj.length;
          }
          length += raw.length;
          if (whole) parts.push(raw);
          if (sink && !fileBad) await sink.write(raw);
        }
      } finally {
        await sink?.close();
      }
      if (fileBad) continue;
      if (length !== f.bytes || (whole && nativeBytes.xxh3Hex(Buffer.concat(parts)) !== f.xxh3)) {
        add('file', `file '${f.path}' reassembles to ${length} bytes with a different xxh3 than the manifest records (${f.bytes} bytes, xxh3 ${f.xxh3})`);
      }
    }
    return { problems, chunks: count, bytes, body };
  }

  /**
   * Restore backup `id` as of `to` (default: the newest record it holds) into `targetDir`, which
   * must not exist or be empty. Everything is verified before anything is written; a damaged
   * copy on one target falls back to the next target that holds the backup.
   */
  async restore(id: string, targetDir: string, options: { to?: RestoreTo } = {}): Promise<RestoreResult & { backup: string; from: string }> {
    if (typeof id !== 'string' || !ID.test(id)) throw invalidArgument('id must be a backup id');
    if (typeof targetDir !== 'string' || targetDir === '') throw invalidArgument('targetDir must be a directory path');
    const o = checkPlainObject('options', options);
    checkKnownKeys('options', o, ['to']);
    const to = o.to as RestoreTo | undefined;
    const target = resolvePath(targetDir);
    try {
      const s = await stat(target);
      if (!s.isDirectory()) throw invalidArgument(`targetDir ${target} exists and is not a directory; restore never overwrites`);
      if ((await readdir(target)).length > 0) throw invalidArgument(`targetDir ${target} is not empty; restore never overwrites`);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    const failures: VerifyProblem[] = [];
    for (const t of this.#targets) {
      let checked;
      try {
        checked = await this.#verifyOn(t, id, null);
      } catch (e) {
        failures.push({ target: t.url, kind: 'target', message: `could not be read: ${errorOf(e).message}` });
        continue;
      }
      if (!checked) continue;
      if (checked.problems.length > 0) {
        failures.push(...checked.problems);
        continue;
      }
      const body = checked.body!;
      if (to !== undefined) checkReachable(id, body, to);
      await mkdir(dirname(target), { recursive: true });
      const tmp = await mkdtemp(join(dirname(target), `.${basename(target)}.cairn-backup-`));
      try {
        await mkdir(join(tmp, 'snapshots'), { recursive: true });
        const again = await this.#verifyOn(t, id, tmp);
        if (!again || again.problems.length > 0) {
          failures.push(...(again?.problems ?? []));
          continue;
        }
        const r = await restoreStore({ source: tmp, target, ...(to !== undefined ? { to } : {}) });
        return { ...r, backup: id, from: t.url };
      } finally {
        await rm(tmp, { recursive: true, force: true });
      }
    }
    if (failures.length === 0) throw new CairnError('CAIRN_NOT_FOUND', `backup '${id}' does not exist on ${this.targets.join(', ')}`);
    const message = `backup '${id}' cannot be restored, nothing was written: ${failures.map((p) => `${p.target}: ${p.message}`).join('; ')}`;
    if (failures.every((p) => p.kind === 'key')) throw invalidArgument(message);
    throw new CairnError('CAIRN_CORRUPTION', message);
  }

  // -------------------------------------------------------------------------------------------
  // retention

  /**
   * Apply the retention policy on every target: keep a backup while it is among the newest
   * `count` or younger than `days` (by the clock), always the newest, and every base a kept
   * backup names (transitively). A deleted backup loses its manifest; then chunks that no
   * remaining manifest names are deleted.
   */
  async prune(): Promise<PruneResult[]> {
    return this.#exclusive(async () => {
      const out: PruneResult[] = [];
      for (const t of this.#targets) out.push(await this.#pruneOn(t));
      return out;
    });
  }

  async #pruneOn(t: BackupTarget): Promise<PruneResult> {
    const { manifests } = await this.#readManifests(t);
    const all = manifests.sort((a, b) => a.timestampMs - b.timestampMs || a.id.localeCompare(b.id));
    const now = this.#clock.now();
    const { days, count } = this.#retention;
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
    const gc = await this.#collectGarbage(t);
    return { target: t.url, kept: all.filter((m) => keep.has(m.id)).map((m) => m.id), deleted, ...gc };
  }

  /** Delete chunks that no manifest names; skipped while another run may be uploading. */
  async #collectGarbage(t: BackupTarget): Promise<{ chunksDeleted: number; bytesFreed: number; gcSkipped: string | null }> {
    const { manifests, corrupted } = await this.#readManifests(t);
    if (corrupted.length > 0) {
      return { chunksDeleted: 0, bytesFreed: 0, gcSkipped: `damaged manifest(s) ${corrupted.map((c) => c.id).join(', ')}: their chunks are unknown` };
    }
    const { markers, stale } = await this.#markers(t);
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

  // -------------------------------------------------------------------------------------------
  // schedule

  /**
   * Run a backup (then prune) whenever the cron expression matches (minute resolution, local
   * time, the manager's clock). A run still going when the next one is due makes that one skip.
   */
  schedule(cron: string, options: ScheduleOptions = {}): ScheduleHandle {
    const spec: Cron = parseCron(cron);
    const o = checkPlainObject('options', options);
    checkKnownKeys('options', o, ['kind', 'prune', 'onBackup', 'onError']);
    const kind = o.kind === undefined ? 'full' : o.kind;
    if (!KINDS.includes(kind as BackupKind)) throw invalidArgument(`options.kind must be one of ${KINDS.map((k) => `'${k}'`).join(', ')}`);
    const clock = this.#clock;
    let timer: unknown;
    let next: Date | null = null;
    let running = false;
    let stopped = false;
    const arm = (after: number) => {
      if (stopped) return;
      next = spec.next(new Date(after));
      const at = next.getTime();
      timer = clock.setTimeout(() => fire(at), Math.max(0, at - clock.now()));
    };
    const fire = (at: number) => {
      if (stopped) return;
      arm(Math.max(at, clock.now()));
      if (running) return;
      running = true;
      void (async () => {
        try {
          const result = await this.create({ kind: kind as BackupKind });
          if (o.prune !== false) await this.prune();
          (o.onBackup as ScheduleOptions['onBackup'])?.(result);
        } catch (e) {
          (o.onError as ScheduleOptions['onError'])?.(e);
        } finally {
          running = false;
        }
      })();
    };
    arm(clock.now());
    return {
      stop() {
        stopped = true;
        next = null;
        if (timer !== undefined) clock.clearTimeout(timer);
      },
      get next() {
        return next;
      },
    };
  }

  /** Release target clients (S3 sockets). */
  async close(): Promise<void> {
    await Promise.all(this.#targets.map((t) => t.close()));
  }
}

/** A snapshot file by its path inside the snapshot, size and xxh3; other files by path only. */
function contentKey(path: string, bytes: number, xxh3: string): string {
  const m = /^snapshots\/[^/]+\/(.+)$/.exec(path);
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
    if (ms < range.from.timeMs && from > 0n) throw invalidArgument(`options.to: time ${new Date(ms).toISOString()} is before what backup '${id}' holds: ${desc}`);
  } else throw bad();
}

function emptyMetadata(id: string, kind: BackupKind, source: string, target: string, timestamp: number): BackupMetadata {
  return {
    id,
    timestamp: new Date(timestamp),
    source,
    target,
    kind,
    base: null,
    files: 0,
    bytes: { raw: 0, stored: 0, written: 0, read: 0 },
    chunks: { total: 0, written: 0 },
    sha256: '',
    compression: { algorithm: 'zstd', level: 0, shuffle: true },
    encryption: null,
    snapshot: null,
    range: null,
    status: 'pending',
    duration: 0,
    error: null,
  };
}

function failedMetadata(id: string, kind: BackupKind, source: string, target: string, started: number, duration: number, error: CairnError): BackupMetadata {
  return { ...emptyMetadata(id, kind, source, target, started), status: 'failed', duration: Math.round(duration), error: `${error.code}: ${error.message}` };
}

function corruptedMetadata(id: string, target: string, error: CairnError): BackupMetadata {
  return { ...emptyMetadata(id, 'full', '', target, 0), status: 'corrupted', error: error.message };
}

/** The S3 client loads only when an s3:// target is used. */
function lazyS3(url: string, bucket: string, prefix: string, settings: S3Settings | undefined): BackupTarget {
  let real: Promise<BackupTarget> | undefined;
  const get = () => (real ??= import('./target-s3.js').then((m) => new m.S3Target(url, bucket, prefix, settings)));
  return {
    url,
    list: async (p) => (await get()).list(p),
    get: async (k) => (await get()).get(k),
    put: async (k, d) => (await get()).put(k, d),
    delete: async (k) => (await get()).delete(k),
    cleanDebris: async () => (await get()).cleanDebris(),
    close: async () => {
      if (real) await (await real).close();
    },
  };
}
