/**
 * Snapshot export and import: one zstd-compressed archive holding a snapshot and every base it
 * builds on (docs/format.md, "Snapshot archive"). Float-heavy files are byte-shuffled before
 * compression. Import verifies the archive's SHA-256, then every file's length and xxh3 against
 * its snapshot manifest, before anything becomes visible.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open as openFile, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve as resolvePath } from 'node:path';

import { CairnError, invalidArgument } from './errors.js';
import { LAYOUT } from './layout.js';
import { nativeBytes } from './native.js';
import { listSnapshots, type SnapshotInfo } from './restore.js';
import { zstd } from './zstd.js';

export const ARCHIVE_MAGIC = Buffer.from('CAIRNARC');
export const ARCHIVE_TRAILER_MAGIC = Buffer.from('CAIRNSHA');
export const ARCHIVE_VERSION = 1;
const CHUNK = 4 << 20;
const FLAG_SHUFFLED = 1;

/** Float-heavy files: checkpoint data, graphs and WAL segments. */
const shuffled = (path: string) => [LAYOUT.dataExt, LAYOUT.graphExt, LAYOUT.walExt].some((ext) => path.endsWith(ext));

async function yieldToLoop(): Promise<void> {
  await new Promise((r) => setImmediate(r));
}

/** How far an export or import is, in bytes. `totalBytes` is known before the first byte is
 *  counted and never changes; `bytes` only grows and never passes it. */
export interface ArchiveProgress {
  bytes: number;
  totalBytes: number;
}

export interface ExportOptions {
  /** The store (or directory of imported snapshots) holding the snapshot. */
  dir: string;
  id: string;
  file: string;
  /** zstd level (default 3). */
  level?: number;
  /** Byte-shuffle float-heavy files before compressing (default true). */
  shuffle?: boolean;
  /** Raw bytes of the snapshot files compressed so far, of all of them (sizes taken first). */
  onProgress?: (p: ArchiveProgress) => void;
}

export interface ExportResult {
  file: string;
  snapshots: string[];
  rawBytes: number;
  storedBytes: number;
  sha256: string;
}

/** A progress reporter that keeps `bytes` within 0..total and only moving forward. */
function progressReporter(total: number, onProgress: ((p: ArchiveProgress) => void) | undefined): (bytes: number) => void {
  let last = -1;
  return (bytes) => {
    const b = Math.min(total, Math.max(last, bytes, 0));
    if (b === last || !onProgress) return;
    last = b;
    onProgress({ bytes: b, totalBytes: total });
  };
}

function checkProgressOption(value: unknown): void {
  if (value !== undefined && typeof value !== 'function') throw invalidArgument('options.onProgress must be a function');
}

/** Write the snapshot `id` and its base chain to one archive, atomically (temp file, fsync, rename). */
export async function exportSnapshot(options: ExportOptions): Promise<ExportResult> {
  const level = options.level ?? 3;
  if (!Number.isInteger(level) || level < 1 || level > 19) throw invalidArgument('options.level must be an integer from 1 to 19');
  checkProgressOption(options.onProgress);
  const dir = resolvePath(options.dir);
  const all = await listSnapshots(dir);
  const byId = new Map(all.map((s) => [s.id, s]));
  const chain: SnapshotInfo[] = [];
  for (let cur = byId.get(options.id); cur; cur = cur.base ? byId.get(cur.base) : undefined) {
    chain.unshift(cur);
    if (cur.base && !byId.has(cur.base)) throw new CairnError('CAIRN_NOT_FOUND', `snapshot '${cur.base}' (base of '${cur.id}') is missing`);
  }
  if (chain.length === 0) throw new CairnError('CAIRN_NOT_FOUND', `snapshot '${options.id}' does not exist`);
  // Every file's size before the first byte is read: the progress total. Snapshot files are
  // immutable; a size that differs at read time is only clamped in the progress.
  const sources: Array<{ rel: string; path: string }> = [];
  let total = 0;
  for (const snap of chain) {
    for (const rel of [...snap.files.map((f) => f.path), LAYOUT.snapshotManifest]) {
      const path = `${snap.id}/${rel}`;
      total += (await stat(join(dir, LAYOUT.snapshots, path))).size;
      sources.push({ rel, path });
    }
  }
  const report = progressReporter(total, options.onProgress);
  report(0);
  const file = resolvePath(options.file);
  const tmp = `${file}.tmp`;
  const out = await openFile(tmp, 'w');
  const hash = createHash('sha256');
  let storedBytes = 0;
  let rawBytes = 0;
  const write = async (b: Buffer) => {
    hash.update(b);
    await out.write(b);
    storedBytes += b.length;
  };
  try {
    const header = Buffer.alloc(16);
    ARCHIVE_MAGIC.copy(header, 0);
    header.writeUInt32LE(ARCHIVE_VERSION, 8);
    await write(header);
    for (const { rel, path } of sources) {
      const raw = await readFile(join(dir, LAYOUT.snapshots, path));
      const doShuffle = options.shuffle !== false && shuffled(rel);
      const body = doShuffle ? nativeBytes.shuffle4(raw) : raw;
      const name = Buffer.from(path);
      const h = Buffer.alloc(2 + name.length + 8 + 8 + 1 + 4);
      let o = h.writeUInt16LE(name.length, 0);
      o += name.copy(h, o);
      o = h.writeBigUInt64LE(BigInt(raw.length), o);
      o += Buffer.from(nativeBytes.xxh3Hex(raw), 'hex').copy(h, o);
      o = h.writeUInt8(doShuffle ? FLAG_SHUFFLED : 0, o);
      h.writeUInt32LE(Math.ceil(body.length / CHUNK), o);
      await write(h);
      for (let at = 0; at < body.length; at += CHUNK) {
        const part = body.subarray(at, at + CHUNK);
        const packed = zstd().compress(part, { compressionLevel: level });
        const lens = Buffer.alloc(8);
        lens.writeUInt32LE(part.length, 0);
        lens.writeUInt32LE(packed.length, 4);
        await write(lens);
        await write(packed);
        report(rawBytes + at + part.length);
        await yieldToLoop();
      }
      rawBytes += raw.length;
      report(rawBytes);
    }
    const trailer = Buffer.alloc(8 + 4 + 32);
    ARCHIVE_TRAILER_MAGIC.copy(trailer, 0);
    trailer.writeUInt32LE(sources.length, 8);
    const digest = hash.digest();
    digest.copy(trailer, 12);
    await out.write(trailer);
    storedBytes += trailer.length;
    await out.sync();
    await out.close();
    await rename(tmp, file);
    // durability: the rename must survive a power cut before the export is reported done.
    await fsyncDir(dirname(file));
    report(total);
    return { file, snapshots: chain.map((s) => s.id), rawBytes, storedBytes, sha256: digest.toString('hex') };
  } catch (e) {
    await out.close().catch(() => {});
    await rm(tmp, { force: true });
    throw e;
  }
}

export interface ImportOptions {
  file: string;
  /** A store or a new directory; the snapshots go to its `snapshots/`. */
  dir: string;
  /** Archive bytes read and verified so far, of the archive's size. */
  onProgress?: (p: ArchiveProgress) => void;
}

export interface ImportResult {
  snapshots: string[];
}

function damaged(file: string, offset: number, why: string): CairnError {
  return new CairnError('CAIRN_CORRUPTION', `corruption in ${file} at offset ${offset}: ${why}`, { file, offset });
}

async function fsyncDir(dir: string): Promise<void> {
  const d = await openFile(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

/**
 * Unpack an archive into `dir/snapshots/`. One pass over the archive decompresses each file,
 * checks its length and xxh3 and writes it under a temporary directory name; only when the
 * SHA-256 over the whole archive holds are the snapshot directories renamed into place, so a
 * damaged archive leaves nothing visible. `dir` may be a store or a new directory;
 * `restore({ source: dir, ... })` then works from it.
 */
export async function importSnapshot(options: ImportOptions): Promise<ImportResult> {
  checkProgressOption(options.onProgress);
  const file = resolvePath(options.file);
  const buf = await readFile(file);
  const report = progressReporter(buf.length, options.onProgress);
  report(0);
  if (buf.length < 16 + 44 || !buf.subarray(0, 8).equals(ARCHIVE_MAGIC)) throw damaged(file, 0, 'not a Cairn snapshot archive');
  if (buf.readUInt32LE(8) !== ARCHIVE_VERSION) throw damaged(file, 8, `unsupported archive version ${buf.readUInt32LE(8)}`);
  const trailerAt = buf.length - 44;
  if (!buf.subarray(trailerAt, trailerAt + 8).equals(ARCHIVE_TRAILER_MAGIC)) throw damaged(file, trailerAt, 'archive trailer missing (truncated?)');
  const entries = buf.readUInt32LE(trailerAt + 8);
  const root = join(resolvePath(options.dir), LAYOUT.snapshots);
  await mkdir(root, { recursive: true });
  /** Length and xxh3 of every file read, for the manifest check after the rename. */
  const sums = new Map<string, { bytes: number; xxh3: string }>();
  /** Snapshot id -> its temporary directory, for the snapshots this import adds. */
  const staged = new Map<string, string>();
  const skipped = new Set<string>();
  /** Directories files were written to (below the temporary ones). */
  const written = new Set<string>();
  const hash = createHash('sha256');
  let hashed = 0;
  let o = 16;
  try {
    try {
      for (let i = 0; i < entries; i++) {
        const nameLen = buf.readUInt16LE(o);
        const path = buf.subarray(o + 2, o + 2 + nameLen).toString();
        o += 2 + nameLen;
        const rawLen = Number(buf.readBigUInt64LE(o));
        const sum = buf.subarray(o + 8, o + 16).toString('hex');
        const flags = buf.readUInt8(o + 16);
        const chunks = buf.readUInt32LE(o + 17);
        const entryAt = o;
        o += 21;
        const id = path.split('/')[0]!;
        if (path.includes('..') || path.startsWith('/') || id === '' || id === path) throw damaged(file, entryAt, `unsafe path '${path}'`);
        const parts: Buffer[] = [];
        for (let c = 0; c < chunks; c++) {
          const partLen = buf.readUInt32LE(o);
          const packedLen = buf.readUInt32LE(o + 4);
          if (o + 8 + packedLen > trailerAt) throw damaged(file, o, `chunk of '${path}' runs past the trailer`);
          const part = zstd().decompress(buf.subarray(o + 8, o + 8 + packedLen));
          if (part.length !== partLen) throw damaged(file, o, `chunk of '${path}' decompressed to the wrong length`);
          parts.push(part);
          o += 8 + packedLen;
          hash.update(buf.subarray(hashed, o));
          hashed = o;
          report(o);
          await yieldToLoop();
        }
        const body = Buffer.concat(parts);
        const raw = flags & FLAG_SHUFFLED ? nativeBytes.unshuffle4(body) : body;
        if (raw.length !== rawLen || nativeBytes.xxh3Hex(raw) !== sum) throw damaged(file, entryAt, `file '${path}' fails its checksum`);
        sums.set(path, { bytes: raw.length, xxh3: sum });
        if (!staged.has(id) && !skipped.has(id)) {
          if (existsSync(join(root, id))) skipped.add(id);
          else {
            const tmp = join(root, `${id}.import${LAYOUT.tmpSuffix}`);
            await rm(tmp, { recursive: true, force: true });
            staged.set(id, tmp);
          }
        }
        const tmp = staged.get(id);
        if (tmp !== undefined) {
          const dest = join(tmp, path.slice(id.length + 1));
          await mkdir(dirname(dest), { recursive: true });
          await writeFile(dest, raw, { flush: true });
          written.add(dirname(dest));
        }
      }
    } catch (e) {
      if (e instanceof CairnError) throw e;
      throw damaged(file, o, `archive structure is damaged (${e instanceof Error ? e.message : String(e)})`);
    }
    if (o !== trailerAt) throw damaged(file, o, 'the entries do not end at the trailer');
    hash.update(buf.subarray(hashed, trailerAt));
    if (!hash.digest().equals(buf.subarray(trailerAt + 12, trailerAt + 44))) throw damaged(file, trailerAt, 'archive SHA-256 mismatch');
    // durability: the files' names (and their directories') must be durable before a snapshot
    // directory is published by its rename.
    for (const d of written) await fsyncDir(d);
    for (const tmp of staged.values()) await fsyncDir(tmp);
  } catch (e) {
    for (const tmp of staged.values()) await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  const imported: string[] = [];
  for (const [id, tmp] of staged) {
    await rename(tmp, join(root, id));
    imported.push(id);
  }
  // durability: the renames publish the snapshots.
  await fsyncDir(root);
  // Re-read through the engine's own parser: a snapshot manifest that does not match its files
  // is reported now, not at restore time.
  const ids = [...new Set([...sums.keys()].map((p) => p.split('/')[0]!))];
  const listed = await listSnapshots(options.dir);
  for (const id of ids) {
    const s = listed.find((x) => x.id === id);
    if (!s) throw damaged(file, 0, `snapshot '${id}' has no valid manifest in the archive`);
    for (const f of s.files) {
      const got = sums.get(`${id}/${f.path}`);
      if (!got || got.bytes !== f.bytes || got.xxh3 !== f.xxh3)
        throw damaged(file, 0, `snapshot '${id}' file '${f.path}' is missing or differs from its manifest`);
    }
  }
  report(buf.length);
  return { snapshots: imported };
}
