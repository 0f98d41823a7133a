/**
 * Snapshot export and import: one zstd-compressed archive holding a snapshot and every base it
 * builds on (docs/format.md, "Snapshot archive"). Float-heavy files are byte-shuffled before
 * compression. Import verifies the archive's SHA-256, then every file's length and xxh3 against
 * its snapshot manifest, before anything becomes visible.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open as openFile, readFile, rename, rm, writeFile } from 'node:fs/promises';
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

export interface ExportOptions {
  /** The store (or directory of imported snapshots) holding the snapshot. */
  dir: string;
  id: string;
  file: string;
  /** zstd level (default 3). */
  level?: number;
  /** Byte-shuffle float-heavy files before compressing (default true). */
  shuffle?: boolean;
}

export interface ExportResult {
  file: string;
  snapshots: string[];
  rawBytes: number;
  storedBytes: number;
  sha256: string;
}

/** Write the snapshot `id` and its base chain to one archive, atomically (temp file, fsync, rename). */
export async function exportSnapshot(options: ExportOptions): Promise<ExportResult> {
  const level = options.level ?? 3;
  if (!Number.isInteger(level) || level < 1 || level > 19) throw invalidArgument('options.level must be an integer from 1 to 19');
  const dir = resolvePath(options.dir);
  const all = await listSnapshots(dir);
  const byId = new Map(all.map((s) => [s.id, s]));
  const chain: SnapshotInfo[] = [];
  for (let cur = byId.get(options.id); cur; cur = cur.base ? byId.get(cur.base) : undefined) {
    chain.unshift(cur);
    if (cur.base && !byId.has(cur.base)) throw new CairnError('CAIRN_NOT_FOUND', `snapshot '${cur.base}' (base of '${cur.id}') is missing`);
  }
  if (chain.length === 0) throw new CairnError('CAIRN_NOT_FOUND', `snapshot '${options.id}' does not exist`);
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
    let entries = 0;
    for (const snap of chain) {
      for (const rel of [...snap.files.map((f) => f.path), LAYOUT.snapshotManifest]) {
        const path = `${snap.id}/${rel}`;
        const raw = await readFile(join(dir, LAYOUT.snapshots, path));
        rawBytes += raw.length;
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
          await yieldToLoop();
        }
        entries++;
      }
    }
    const trailer = Buffer.alloc(8 + 4 + 32);
    ARCHIVE_TRAILER_MAGIC.copy(trailer, 0);
    trailer.writeUInt32LE(entries, 8);
    const digest = hash.digest();
    digest.copy(trailer, 12);
    await out.write(trailer);
    storedBytes += trailer.length;
    await out.sync();
    await out.close();
    await rename(tmp, file);
    // durability: the rename must survive a power cut before the export is reported done.
    const d = await openFile(dirname(file), 'r');
    await d.sync();
    await d.close();
    return { file, snapshots: chain.map((s) => s.id), rawBytes, storedBytes, sha256: digest.toString('hex') };
  } catch (e) {
    await out.close().catch(() => {});
    await rm(tmp, { force: true });
    throw e;
  }
}

export interface ImportResult {
  snapshots: string[];
}

function damaged(file: string, offset: number, why: string): CairnError {
  return new CairnError('CAIRN_CORRUPTION', `corruption in ${file} at offset ${offset}: ${why}`, { file, offset });
}

/**
 * Unpack an archive into `dir/snapshots/`, verifying everything first. `dir` may be a store or
 * a new directory; `restore({ source: dir, ... })` then works from it.
 */
export async function importSnapshot(options: { file: string; dir: string }): Promise<ImportResult> {
  const file = resolvePath(options.file);
  const buf = await readFile(file);
  if (buf.length < 16 + 44 || !buf.subarray(0, 8).equals(ARCHIVE_MAGIC)) throw damaged(file, 0, 'not a Cairn snapshot archive');
  if (buf.readUInt32LE(8) !== ARCHIVE_VERSION) throw damaged(file, 8, `unsupported archive version ${buf.readUInt32LE(8)}`);
  const trailerAt = buf.length - 44;
  if (!buf.subarray(trailerAt, trailerAt + 8).equals(ARCHIVE_TRAILER_MAGIC)) throw damaged(file, trailerAt, 'archive trailer missing (truncated?)');
  const digest = createHash('sha256').update(buf.subarray(0, trailerAt)).digest();
  if (!digest.equals(buf.subarray(trailerAt + 12, trailerAt + 44))) throw damaged(file, trailerAt, 'archive SHA-256 mismatch');
  const entries = buf.readUInt32LE(trailerAt + 8);
  const files = new Map<string, Buffer>();
  let o = 16;
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
      if (path.includes('..') || path.startsWith('/')) throw damaged(file, entryAt, `unsafe path '${path}'`);
      const parts: Buffer[] = [];
      for (let c = 0; c < chunks; c++) {
        const partLen = buf.readUInt32LE(o);
        const packedLen = buf.readUInt32LE(o + 4);
        const part = zstd().decompress(buf.subarray(o + 8, o + 8 + packedLen));
        if (part.length !== partLen) throw damaged(file, o, `chunk of '${path}' decompressed to the wrong length`);
        parts.push(part);
        o += 8 + packedLen;
        await yieldToLoop();
      }
      const body = Buffer.concat(parts);
      const raw = flags & FLAG_SHUFFLED ? nativeBytes.unshuffle4(body) : body;
      if (raw.length !== rawLen || nativeBytes.xxh3Hex(raw) !== sum) throw damaged(file, entryAt, `file '${path}' fails its checksum`);
      files.set(path, raw);
    }
  } catch (e) {
    if (e instanceof CairnError) throw e;
    throw damaged(file, o, `archive structure is damaged (${e instanceof Error ? e.message : String(e)})`);
  }
  // Every file a snapshot manifest lists must be there with the listed checksum.
  const ids = [...new Set([...files.keys()].map((p) => p.split('/')[0]!))];
  const root = join(resolvePath(options.dir), LAYOUT.snapshots);
  await mkdir(root, { recursive: true });
  const imported: string[] = [];
  for (const id of ids) {
    if (existsSync(join(root, id))) continue;
    const tmp = join(root, `${id}.import${LAYOUT.tmpSuffix}`);
    await rm(tmp, { recursive: true, force: true });
    for (const [path, data] of files) {
      if (!path.startsWith(`${id}/`)) continue;
      const dest = join(tmp, path.slice(id.length + 1));
      await mkdir(dirname(dest), { recursive: true });
      await writeFile(dest, data, { flush: true });
    }
    await rename(tmp, join(root, id));
    imported.push(id);
  }
  // Re-read through the engine's own parser: a snapshot manifest that does not match its files
  // is reported now, not at restore time.
  const listed = await listSnapshots(options.dir);
  for (const id of ids) {
    const s = listed.find((x) => x.id === id);
    if (!s) throw damaged(file, 0, `snapshot '${id}' has no valid manifest in the archive`);
    for (const f of s.files) {
      const data = files.get(`${id}/${f.path}`);
      if (!data || data.length !== f.bytes || nativeBytes.xxh3Hex(data) !== f.xxh3)
        throw damaged(file, 0, `snapshot '${id}' file '${f.path}' is missing or differs from its manifest`);
    }
  }
  const d = await openFile(root, 'r');
  await d.sync();
  await d.close();
  return { snapshots: imported };
}
