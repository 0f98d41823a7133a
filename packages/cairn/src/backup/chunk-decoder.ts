/**
 * Chunk decoding for verify and restore (zstd, unshuffle, SHA-256 against the chunk's name).
 * A large backup decodes on a pool of worker threads, so that decoding uses every core while
 * the JS thread only moves buffers between reads and writes; a small one decodes inline, where
 * starting threads would cost more than it saves. Both run the same `decodeChunk`.
 */
import { availableParallelism } from 'node:os';

import type { Piscina } from 'piscina';

import { fromNative } from '../errors.js';
import { lazyRequire } from '../lazy-require.js';
import { CHUNK_BYTES, ChunkError, type ChunkProblem, decodeChunk } from './chunks.js';
import type { ChunkKeys } from './crypto.js';

/** Backups whose files total at least this many bytes decode on worker threads. */
export const POOL_MIN_BYTES = 4 * CHUNK_BYTES;
/** Idle pool threads exit after this long; piscina unrefs them, so they never keep a process alive. */
const POOL_IDLE_MS = 10_000;
/** Decoding is CPU-bound: a thread per core, at most 4. More threads than cores only cost their
 *  start (a verify of a 100k x 128 store's backup in a fresh process: 326-364 ms with 2 threads
 *  on 2 cores, 383-436 ms with 4). */
const MAX_THREADS = Math.min(4, availableParallelism());

export type Decoded = { raw: Buffer } | { problem: ChunkProblem; message: string };

export interface DecodeTask {
  name: string;
  object: Uint8Array;
  keys: ChunkKeys | null;
  expectRawBytes: number | undefined;
}

/** Decode one chunk; damage is a result, anything else (a missing zstd binding) throws. */
export function decodeTask(task: DecodeTask): Decoded {
  const buf = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);
  // Structured cloning turns Buffers into plain Uint8Arrays.
  const keys = task.keys && { aes: buf(task.keys.aes), naming: buf(task.keys.naming), keyId: task.keys.keyId };
  try {
    return { raw: decodeChunk(task.name, buf(task.object), keys, task.expectRawBytes) };
  } catch (e) {
    if (e instanceof ChunkError) return { problem: e.problem, message: e.message };
    throw e;
  }
}

/** A buffer that is the whole of its ArrayBuffer, so it can be moved to another thread (small
 *  Buffers share a pool slab, which must never be transferred). */
export function ownBuffer(u: Uint8Array): Uint8Array {
  return u.byteOffset === 0 && u.byteLength === u.buffer.byteLength && u.byteLength >= 4096 ? u : new Uint8Array(u);
}

let pool: Piscina | null = null;
const piscina = lazyRequire<typeof import('piscina')>('piscina');

function decoderPool(): Piscina {
  pool ??= new (piscina().Piscina)({
    filename: new URL('./chunk-decode-worker.js', import.meta.url).href,
    minThreads: 0,
    maxThreads: MAX_THREADS,
    idleTimeout: POOL_IDLE_MS,
  });
  return pool;
}

export class ChunkDecoder {
  readonly #pool: Piscina | null;

  /** `totalBytes`: the backup's file bytes, which decide between the pool and inline. */
  constructor(totalBytes: number) {
    this.#pool = totalBytes >= POOL_MIN_BYTES ? decoderPool() : null;
  }

  /** Decode `object`; with the pool it is moved to the worker and must not be used after. */
  async decode(name: string, object: Buffer, keys: ChunkKeys | null, expectRawBytes: number | undefined): Promise<Decoded> {
    if (!this.#pool) return decodeTask({ name, object, keys, expectRawBytes });
    const moved = ownBuffer(object);
    const task: DecodeTask = { name, object: moved, keys, expectRawBytes };
    // The raw bytes come back as a moved Uint8Array; damage as { problem, message }.
    let r: Uint8Array | { problem: ChunkProblem; message: string };
    try {
      r = await this.#pool.run(task, { transferList: [moved.buffer as ArrayBuffer] });
    } catch (e) {
      throw fromNative(e);
    }
    return r instanceof Uint8Array ? { raw: Buffer.from(r.buffer, r.byteOffset, r.byteLength) } : r;
  }
}
