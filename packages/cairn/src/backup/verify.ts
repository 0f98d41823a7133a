/**
 * Verify a backup: read back every chunk of it on every target that holds it, and reassemble
 * every file against its length and xxh3. Restore uses the same pass to write the files.
 */
import { type FileHandle, mkdir, open as openFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

import { invalidArgument } from '../errors.js';
import { nativeBytes } from '../native.js';
import { notFound } from './catalog.js';
import { ChunkDecoder, type Decoded } from './chunk-decoder.js';
import { CHUNK_NAME, WHOLE_FILE_BYTES } from './chunks.js';
import { errorOf } from './failure.js';
import { FlushBehind } from './flush-behind.js';
import { decodeManifest, type ManifestBody } from './metadata.js';
import { type BackupSettings, isBackupId } from './settings.js';
import { BACKUPS_PREFIX, type BackupTarget, CHUNKS_PREFIX, chunkKey, MANIFEST_NAME, MARKER_NAME, manifestKey } from './target.js';
import type { VerifyProblem, VerifyProblemKind, VerifyReport } from './types.js';

export interface TargetCheck {
  problems: VerifyProblem[];
  chunks: number;
  bytes: number;
  body?: ManifestBody;
}

/** A chunk object's size and what decoding it gave. */
interface Fetched {
  objectBytes: number;
  decoded: Decoded;
}

/** Chunks read and decoded ahead, and writes in flight, per file. */
const PIPELINE_DEPTH = 4;

/** Write all of `buf` at `position` (a short write continues where it stopped). */
async function writeFully(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  for (let done = 0; done < buf.length; ) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    if (bytesWritten <= 0) throw new Error(`write at offset ${position + done} wrote nothing`);
    done += bytesWritten;
  }
}

/** Await every write, in order; the first failure rejects. */
async function drain(writes: Promise<void>[]): Promise<void> {
  while (writes.length > 0) await writes.shift();
}

/** Bytes of a backup's files reassembled so far on one target, of the total its manifest lists. */
export type ByteProgress = (p: { target: string; bytes: number; totalBytes: number }) => void;

/** Read back every chunk of the backup on every target holding it; report each problem. */
export async function verifyBackup(settings: BackupSettings, id: string, onProgress?: ByteProgress): Promise<VerifyReport> {
  if (!isBackupId(id)) throw invalidArgument('id must be a backup id');
  const report: VerifyReport = { id, ok: true, problems: [], targets: [] };
  let found = false;
  for (const t of settings.targets) {
    let r: TargetCheck | undefined;
    try {
      r = await checkOnTarget(settings, t, id, null, onProgress);
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
  if (!found && report.problems.length === 0) throw notFound(settings, id);
  report.ok = report.problems.length === 0;
  return report;
}

/**
 * Check one target's copy of a backup. With `out`, also write its files under `out` as they are
 * checked, each fdatasynced (a restore links them into the store it builds); the caller
 * discards `out` when problems are reported. Returns undefined when the target does not hold it.
 */
export async function checkOnTarget(
  settings: BackupSettings,
  t: BackupTarget,
  id: string,
  out: string | null,
  onProgress?: ByteProgress,
): Promise<TargetCheck | undefined> {
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
    if (!settings.keys) {
      add('key', `backup '${id}' is encrypted (key id ${body.encryption.keyId}); options.encryption.key is required`);
      return { problems, chunks: 0, bytes: 0, body };
    }
    if (body.encryption.keyId !== settings.keys.keyId) {
      add('key', `wrong encryption key for backup '${id}': the key's id is ${settings.keys.keyId}, the backup was made with key id ${body.encryption.keyId}`);
      return { problems, chunks: 0, bytes: 0, body };
    }
  }
  const keys = body.encryption ? settings.keys : null;
  const chunkObjects = (await t.list(CHUNKS_PREFIX)).filter((e) => !CHUNK_NAME.test(e.key.slice(CHUNKS_PREFIX.length)));
  for (const e of chunkObjects) add('extra', `unexpected object '${e.key}' in the chunk store: not a chunk name`);
  // Each chunk once; a file is checked whole (length and xxh3) as its chunks are read.
  const bad = new Set<string>();
  let bytes = 0;
  let count = 0;
  const checked = new Set<string>();
  // Progress counts each file's reassembled bytes up to the size the manifest records, so it
  // never passes the total (a damaged file that reassembles longer is a problem, not progress).
  const totalBytes = body.files.reduce((n, f) => n + f.bytes, 0);
  let filesBefore = 0;
  const report = (fileBytes: number) => onProgress?.({ target: t.url, bytes: filesBefore + fileBytes, totalBytes });
  report(0);
  const decoder = new ChunkDecoder(totalBytes);
  for (const f of body.files) {
    // Small files are checked whole against their xxh3; a large one streams chunk by chunk
    // (each chunk proven by its SHA-256), and restore() checks its xxh3 as it copies it.
    const whole = f.bytes <= WHOLE_FILE_BYTES;
    const parts: Buffer[] = [];
    let length = 0;
    let fileBad = false;
    let sink: FileHandle | undefined;
    let flush: FlushBehind | undefined;
    if (out !== null && problems.length === 0) {
      const dest = join(out, ...f.path.split('/'));
      await mkdir(dirname(dest), { recursive: true });
      sink = await openFile(dest, 'w');
      flush = new FlushBehind(sink);
    }
    // Pipelined: the next chunks are read and decoded (on worker threads for a large backup)
    // while this one is written; writes are positional, so their order does not matter, and run
    // on the libuv pool. At most PIPELINE_DEPTH of each are in flight, so memory stays bounded
    // whatever the file's size.
    const inFlight: Array<Promise<Fetched | undefined> | undefined> = [];
    const start = (i: number) => {
      const c = f.chunks[i];
      if (c === undefined || inFlight[i] !== undefined || bad.has(c)) return;
      const p = t.get(chunkKey(c)).then(async (obj) => {
        if (!obj) return undefined;
        const objectBytes = obj.length;
        return { objectBytes, decoded: await decoder.decode(c, obj, keys, body.chunks[c]?.[0]) };
      });
      p.catch(() => {}); // rethrown where it is awaited
      inFlight[i] = p;
    };
    const writes: Promise<void>[] = [];
    try {
      for (let i = 0; i < f.chunks.length; i++) {
        const c = f.chunks[i] as string;
        for (let k = i; k < i + PIPELINE_DEPTH; k++) start(k);
        if (bad.has(c)) {
          fileBad = true;
          continue;
        }
        const got = await (inFlight[i] as Promise<Fetched | undefined>);
        inFlight[i] = undefined;
        if (!got) {
          bad.add(c);
          fileBad = true;
          add('missing', `chunk ${c} (of '${f.path}') is missing from ${t.url}`);
          continue;
        }
        if (!('raw' in got.decoded)) {
          bad.add(c);
          fileBad = true;
          add(got.decoded.problem, `${got.decoded.message} (file '${f.path}')`);
          continue;
        }
        const raw = got.decoded.raw;
        if (!checked.has(c)) {
          checked.add(c);
          count++;
          bytes += got.objectBytes;
        }
        const position = length;
        length += raw.length;
        if (whole) parts.push(raw);
        if (sink && !fileBad) {
          if (writes.length >= PIPELINE_DEPTH) await writes.shift();
          writes.push(writeFully(sink, raw, position));
          flush?.wrote(raw.length);
        }
        report(Math.min(length, f.bytes));
      }
      await drain(writes);
      if (flush && !fileBad) await flush.finish();
    } finally {
      await Promise.allSettled([...writes, ...inFlight]);
      await flush?.settled();
      await sink?.close();
    }
    filesBefore += f.bytes;
    report(0);
    if (fileBad) continue;
    if (length !== f.bytes || (whole && nativeBytes.xxh3Hex(Buffer.concat(parts)) !== f.xxh3)) {
      add('file', `file '${f.path}' reassembles to ${length} bytes with a different xxh3 than the manifest records (${f.bytes} bytes, xxh3 ${f.xxh3})`);
    }
  }
  return { problems, chunks: count, bytes, body };
}
