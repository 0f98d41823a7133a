// The backup manifest decoder (packages/cairn/src/backup/metadata.ts) survives random and
// mutated input: it returns the body that was encoded, or throws a CAIRN_CORRUPTION CairnError,
// never another exception. The engine's decoders get the same treatment in
// crates/cairn-core/tests/decoders.rs.
import fc from 'fast-check';
import { CairnError } from 'cairn';
import { describe, expect, test } from 'vitest';

// Internal module: the package does not export the manifest codec.
import {
  MANIFEST_HEADER_BYTES,
  MANIFEST_MAGIC,
  MANIFEST_TRAILER_BYTES,
  type ManifestBody,
  decodeManifest,
  encodeManifest,
} from '../packages/cairn/dist/backup/metadata.js';
import { createHash } from 'node:crypto';

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
