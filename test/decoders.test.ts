// The backup manifest decoder (packages/cairn/src/backup/metadata.ts) and the backup chunk
// decoder (backup/chunks.ts) survive random and mutated input: they return what was encoded, or
// throw their own clean error (CAIRN_CORRUPTION, ChunkError), never another exception, and a
// size field cannot make them allocate what it claims. The engine's decoders get the same
// treatment in crates/cairn-core/tests/decoders.rs.

import { createHash } from 'node:crypto';
import { CairnError } from 'cairndb';
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
// Internal module: the package does not export the manifest codec.
import { CHUNK_HEADER_BYTES, ChunkError, decodeChunk, encodeChunk } from '../packages/cairn/dist/backup/chunks.js';
import { chunkKeys } from '../packages/cairn/dist/backup/crypto.js';
import {
  decodeManifest,
  encodeManifest,
  MANIFEST_HEADER_BYTES,
  MANIFEST_MAGIC,
  MANIFEST_TRAILER_BYTES,
  type ManifestBody,
} from '../packages/cairn/dist/backup/metadata.js';

const RUNS = 2000;

const hex = (n: number) => fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: n, maxLength: n });
const text = fc.oneof(fc.string(), fc.string({ unit: 'grapheme' }), fc.string({ unit: 'binary' }));
const nullable = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: null });
const point = fc.record({ seq: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map(String), timeMs: fc.nat() });

const body: fc.Arbitrary<ManifestBody> = fc.record({
  format: fc.constant('cairn-backup' as const),
  version: fc.constant(1 as const),
  id: text,
  timestampMs: fc.nat(),
  source: text,
  kind: fc.constantFrom('full' as const, 'incremental' as const, 'differential' as const),
  base: nullable(text),
  compression: fc.record({ algorithm: fc.constant('zstd' as const), level: fc.integer({ min: 1, max: 19 }), shuffle: fc.constant(true as const) }),
  encryption: nullable(fc.record({ algorithm: fc.constant('aes-256-gcm' as const), keyId: hex(16) })),
  snapshot: nullable(text),
  range: nullable(fc.record({ from: point, to: point })),
  bytes: fc.record({ raw: fc.nat(), stored: fc.nat(), written: fc.nat(), read: fc.nat() }),
  durationMs: fc.nat(),
  files: fc.array(fc.record({ path: text, bytes: fc.nat(), xxh3: hex(16), mtimeMs: fc.nat(), chunks: fc.array(hex(64), { maxLength: 3 }) }), { maxLength: 4 }),
  chunks: fc.array(fc.tuple(hex(64), fc.tuple(fc.nat(), fc.nat())), { maxLength: 4 }).map((e) => Object.fromEntries(e) as Record<string, [number, number]>),
  chunksWritten: fc.nat(),
});

/** Frame `json` as a manifest: header, body, SHA-256 of the body (what encodeManifest does,
 *  for bodies it would never write). */
function framed(json: Buffer, lengthField = BigInt(json.length)): Buffer {
  const header = Buffer.alloc(MANIFEST_HEADER_BYTES);
  MANIFEST_MAGIC.copy(header, 0);
  header.writeUInt32LE(1, 8);
  header.writeBigUInt64LE(lengthField, 16);
  return Buffer.concat([header, json, createHash('sha256').update(json).digest()]);
}

/** Decode, requiring a clean outcome: the decoded body, or undefined after a CAIRN_CORRUPTION. */
function decodeOrCorruption(buf: Buffer): ManifestBody | undefined {
  try {
    const { body, sha256 } = decodeManifest('backups/x/MANIFEST', buf);
    expect(sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(body.format).toBe('cairn-backup');
    expect(Array.isArray(body.files)).toBe(true);
    return body;
  } catch (e) {
    expect(e, String(e)).toBeInstanceOf(CairnError);
    expect((e as CairnError).code).toBe('CAIRN_CORRUPTION');
    return undefined;
  }
}

const mutation = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('append' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 40 }) }),
  fc.record({
    kind: fc.constant('length' as const),
    value: fc.oneof(fc.constantFrom((1n << 64n) - 1n, 1n << 63n, 2n ** 53n + 1n, 0xffffffffn, 0n), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })),
  }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

function mutate(buf: Buffer, m: Mutation): Buffer {
  const out = Buffer.from(buf);
  if (out.length === 0 && m.kind !== 'append') return out;
  switch (m.kind) {
    case 'flip':
      out[m.at % out.length]! ^= 1 << m.bit;
      return out;
    case 'set':
      out[m.at % out.length] = m.value;
      return out;
    case 'truncate':
      return out.subarray(0, m.at % out.length);
    case 'append':
      return Buffer.concat([out, Buffer.from(m.bytes)]);
    case 'length':
      if (out.length >= MANIFEST_HEADER_BYTES) out.writeBigUInt64LE(m.value, 16);
      return out;
  }
}

describe('backup manifest decoder', () => {
  test('encode then decode is the identity', () => {
    fc.assert(
      fc.property(body, (b) => {
        const { bytes, sha256 } = encodeManifest(b);
        expect(decodeManifest('m', bytes)).toEqual({ body: b, sha256 });
      }),
      { numRuns: RUNS },
    );
  });

  test('random bytes give a corruption error', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (raw) => {
        expect(decodeOrCorruption(Buffer.from(raw))).toBeUndefined();
      }),
      { numRuns: RUNS },
    );
  });

  test('random bytes after a valid header give a corruption error or a checked body', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.boolean(), (raw, rightLength) => {
        const header = Buffer.alloc(MANIFEST_HEADER_BYTES);
        MANIFEST_MAGIC.copy(header, 0);
        header.writeUInt32LE(1, 8);
        header.writeBigUInt64LE(BigInt(rightLength ? Math.max(0, raw.length - MANIFEST_TRAILER_BYTES) : raw.length), 16);
        decodeOrCorruption(Buffer.concat([header, Buffer.from(raw)]));
      }),
      { numRuns: RUNS },
    );
  });

  test('any JSON value or byte string as a correctly framed body gives a corruption error or a checked body', () => {
    const json = fc.oneof(
      fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? 'null')),
      body.map((b) => Buffer.from(JSON.stringify({ ...b, files: {} }))),
      fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
      fc.constantFrom('null', '"cairn-backup"', '[]', '0', 'true', '{"format":"cairn-backup","version":1}').map((s) => Buffer.from(s)),
    );
    fc.assert(
      fc.property(json, (j) => {
        decodeOrCorruption(framed(j));
      }),
      { numRuns: RUNS },
    );
  });

  test('mutated manifests decode to the original body or give a corruption error', () => {
    fc.assert(
      fc.property(body, fc.array(mutation, { minLength: 1, maxLength: 3 }), (b, ms) => {
        let buf = encodeManifest(b).bytes;
        for (const m of ms) buf = mutate(buf, m);
        const got = decodeOrCorruption(buf);
        // The SHA-256 covers the body: whatever decodes is what was written.
        if (got !== undefined) expect(got).toEqual(b);
      }),
      { numRuns: RUNS },
    );
  });

  test('a length field near 2^64 is rejected without reading that much', () => {
    const good = encodeManifest(fc.sample(body, { numRuns: 1, seed: 7 })[0]!).bytes;
    for (const len of [(1n << 64n) - 1n, (1n << 64n) - 56n, 1n << 63n, 2n ** 53n, 2n ** 53n + 1n, 0xffffffffn]) {
      const buf = Buffer.from(good);
      buf.writeBigUInt64LE(len, 16);
      expect(decodeOrCorruption(buf)).toBeUndefined();
    }
  });
});

describe('backup chunk decoder', () => {
  const keys = chunkKeys(Buffer.alloc(32, 9));
  // Float-like data (shuffled) and repetitive data (compresses well), up to a few KiB.
  const raw = fc.oneof(
    fc.uint8Array({ minLength: 1, maxLength: 3000 }).map((a) => Buffer.from(a)),
    fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 5000 })).map(([b, n]) => Buffer.alloc(n, b)),
  );
  const options = fc.record({ level: fc.integer({ min: 1, max: 5 }), shuffle: fc.boolean(), encrypted: fc.boolean() });

  /** Decode, requiring a clean outcome: the raw bytes, or undefined after a ChunkError. */
  function decodeOrChunkError(name: string, object: Buffer, encrypted: boolean, rawBytes?: number): Buffer | undefined {
    try {
      return decodeChunk(name, object, encrypted ? keys : null, rawBytes);
    } catch (e) {
      expect(e, String(e)).toBeInstanceOf(ChunkError);
      return undefined;
    }
  }

  test('encode then decode is the identity', () => {
    fc.assert(
      fc.property(raw, options, (r, o) => {
        const { name, object } = encodeChunk(r, { level: o.level, shuffle: o.shuffle, keys: o.encrypted ? keys : null });
        expect(decodeChunk(name, object, o.encrypted ? keys : null, r.length)).toEqual(r);
      }),
      { numRuns: RUNS / 4 },
    );
  });

  test('chunks of every content-size width round-trip, up to a full 4 MiB piece', () => {
    // zstd stores the content size in 1, 2, 4 (or 8) bytes depending on it.
    for (const n of [1, 255, 256, 65_791, 65_792, 1 << 20, 4 << 20]) {
      const r = Buffer.alloc(n);
      for (let i = 0; i < n; i++) r[i] = (i * 2654435761) >>> 24;
      for (const shuffle of [false, true]) {
        const { name, object } = encodeChunk(r, { level: 1, shuffle, keys: null });
        expect(decodeChunk(name, object, null, n).equals(r), `${n} bytes`).toBe(true);
      }
    }
  });

  test('random bytes give a chunk error', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), hex(64), fc.boolean(), (bytes, name, encrypted) => {
        expect(decodeOrChunkError(name, Buffer.from(bytes), encrypted)).toBeUndefined();
      }),
      { numRuns: RUNS },
    );
  });

  test('mutated chunks decode to the original bytes or give a chunk error', () => {
    const header = fc.record({ at: fc.integer({ min: 8, max: CHUNK_HEADER_BYTES - 1 }), value: fc.integer({ min: 0, max: 255 }) });
    fc.assert(
      fc.property(
        raw,
        options,
        fc.array(
          fc.oneof(
            mutation,
            header.map((h) => ({ kind: 'set' as const, ...h })),
          ),
          { minLength: 1, maxLength: 3 },
        ),
        (r, o, ms) => {
          const { name, object } = encodeChunk(r, { level: o.level, shuffle: o.shuffle, keys: o.encrypted ? keys : null });
          let buf = object;
          for (const m of ms) buf = m.kind === 'length' ? buf : mutate(buf, m);
          const got = decodeOrChunkError(name, buf, o.encrypted);
          // The name is the hash of the raw bytes: whatever decodes is what was written.
          if (got !== undefined) expect(got).toEqual(r);
        },
      ),
      { numRuns: RUNS / 2 },
    );
  });

  /** A chunk whose one zstd frame declares `declared` content bytes (RFC 8878: single-segment
   *  frame, 8-byte content size, one raw block holding `content`), with its header's raw
   *  length set to `rawLen` and its name matching `content`. */
  function craftedChunk(declared: bigint, content: Buffer, rawLen: number, trailing = Buffer.alloc(0)): { name: string; object: Buffer } {
    const frameHeader = Buffer.alloc(13);
    frameHeader.writeUInt32LE(0xfd2fb528, 0);
    frameHeader[4] = 0xe0; // content size in 8 bytes, single segment
    frameHeader.writeBigUInt64LE(declared, 5);
    const block = Buffer.alloc(3);
    block.writeUIntLE(1 | (content.length << 3), 0, 3); // last block, raw
    const payload = Buffer.concat([frameHeader, block, content, trailing]);
    const { name, object } = encodeChunk(content, { level: 1, shuffle: false, keys: null });
    const header = Buffer.from(object.subarray(0, CHUNK_HEADER_BYTES));
    header.writeUInt32LE(rawLen, 12);
    header.writeUInt32LE(payload.length, 16);
    return { name, object: Buffer.concat([header, payload]) };
  }

  test('a hand-made frame that declares its content size exactly decodes', () => {
    const content = Buffer.from('cairn chunk content');
    const { name, object } = craftedChunk(BigInt(content.length), content, content.length);
    expect(decodeChunk(name, object, null)).toEqual(content);
  });

  test('a frame declaring gigabytes is refused before decompressing', () => {
    const content = Buffer.from('x');
    const second = craftedChunk(1n << 32n, content, 1).object.subarray(CHUNK_HEADER_BYTES);
    const cases = [
      craftedChunk(1n << 32n, content, 1),
      craftedChunk(1n << 32n, content, 2 ** 32 - 1),
      craftedChunk((1n << 40n) + 1n, content, 1),
      craftedChunk((1n << 64n) - 1n, content, 1),
      // A valid frame followed by one that declares 4 GiB: zstd sums every frame's size.
      craftedChunk(1n, content, 1, second),
    ];
    for (const { name, object } of cases) {
      let error: unknown;
      try {
        decodeChunk(name, object, null);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(ChunkError);
      // Refused by the frame check, before zstd is asked to decode anything.
      expect((error as ChunkError).message).toMatch(/zstd frame/);
    }
  });
});
