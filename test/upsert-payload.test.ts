// The direct upsert encoder (packages/cairn/src/upsert-payload.ts), which `Collection.upsert`
// uses, writes byte for byte the payload that `encodeBatch` writes for the same records (the
// path of `db.batch` and transactions): both record forms, every alignment of a vector in the
// buffer, growth past its first estimate, and a build nested inside another one's metadata.
// Flat metadata objects are serialized straight into the payload (`encode.ts`, `writeFlatJson`);
// `encodeBatch` gets `JSON.stringify`'s text, so equal bytes mean the same JSON text.

import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
// Internal modules: the package does not export its payload encoders.
import { type EncodedOp, encodeBatch } from '../packages/cairn/dist/encode.js';
import { encodeUpserts, forEachUpsert } from '../packages/cairn/dist/records.js';
import { UpsertPayload } from '../packages/cairn/dist/upsert-payload.js';

const RUNS = 300;

function viaOps(collection: string, dim: number, records: unknown): Buffer {
  const ops: EncodedOp[] = [];
  encodeUpserts('records', collection, dim, records, ops);
  return Buffer.from(encodeBatch(ops));
}

function direct(collection: string, dim: number, records: unknown, expected: number): Buffer {
  const payload = new UpsertPayload(collection, dim, expected);
  forEachUpsert('records', dim, records, payload.add);
  return Buffer.from(payload.finish());
}

/** Byte equality; a mismatch names its first differing offset (toEqual on megabytes is slow). */
function expectSameBytes(got: Buffer, want: Buffer): void {
  if (got.equals(want)) return;
  let at = 0;
  while (at < Math.min(got.length, want.length) && got[at] === want[at]) at++;
  expect({ length: got.length, firstDifference: at }).toEqual({ length: want.length, firstDifference: -1 });
}

const name = fc.oneof(
  fc.string({ unit: fc.constantFrom(...'abcxyz0123456789-_'), minLength: 1, maxLength: 40 }),
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }).filter((s) => !/[/\\\0]/.test(s) && s !== '.' && s !== '..'),
);
// Every kind of flat value, and what the direct writer leaves to JSON.stringify: keys and
// strings needing escapes (quotes, backslashes, control characters, lone surrogates, non-ASCII),
// integer-like keys (ordered first), non-int32 numbers, -0, and text past its reserve.
const anyUnit = fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c));
const metaKey = fc.oneof(fc.string({ maxLength: 8 }), fc.nat(99).map(String), fc.string({ unit: anyUnit, maxLength: 4 }));
const metaValue = fc.oneof(
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.constantFrom(-0, 0x7fffffff, -0x80000000, 2 ** 53, null, true, false),
  fc.string({ unit: 'grapheme', maxLength: 30 }),
  fc.string({ unit: anyUnit, maxLength: 6 }),
  fc.string({ minLength: 500, maxLength: 700 }),
);
const metadata = fc.option(fc.dictionary(metaKey, metaValue, { maxKeys: 6 }), { nil: undefined });

describe('direct upsert payload', () => {
  test('matches encodeBatch for records and their columnar form', () => {
    fc.assert(
      fc.property(
        name,
        fc.integer({ min: 1, max: 9 }),
        fc.uniqueArray(name, { minLength: 1, maxLength: 60 }),
        fc.array(metadata, { minLength: 60, maxLength: 60 }),
        fc.boolean(),
        fc.integer({ min: 1, max: 200 }),
        (collection, dim, ids, metas, asNumbers, expected) => {
          const vectors = Float32Array.from({ length: ids.length * dim }, (_, j) => Math.fround(Math.sin(j + ids.length) * 1e3));
          const records = ids.map((id, i) => {
            const v = vectors.subarray(i * dim, (i + 1) * dim);
            return { id, vector: asNumbers ? Array.from(v) : v, ...(metas[i] === undefined ? {} : { metadata: metas[i] }) };
          });
          const want = viaOps(collection, dim, records);
          expectSameBytes(direct(collection, dim, records, expected), want);
          const columnar = { ids, vectors, metadata: ids.map((_, i) => metas[i]) };
          expectSameBytes(direct(collection, dim, columnar, expected), want);
          expectSameBytes(viaOps(collection, dim, columnar), want);
        },
      ),
      { numRuns: RUNS },
    );
  });

  test('an enumerable key on Object.prototype is not written into flat metadata', () => {
    const dim = 2;
    const records = Array.from({ length: 40 }, (_, i) => ({ id: `p${i}`, vector: new Float32Array(dim).fill(i), metadata: { i, tag: 'x' } }));
    const proto = Object.prototype as Record<string, unknown>;
    proto.injected = 'no';
    try {
      const got = direct('c', dim, records, records.length);
      expectSameBytes(got, viaOps('c', dim, records));
      expect(got.includes('injected')).toBe(false);
      expect(got.includes('{"i":39,"tag":"x"}')).toBe(true);
    } finally {
      delete proto.injected;
    }
  });

  test('a payload larger than the reused buffer grows, and stays exact', () => {
    const dim = 1024;
    const n = 5000; // 20 MiB of vectors: past the 16 MiB scratch buffer.
    const vectors = Float32Array.from({ length: n * dim }, (_, j) => j % 977);
    const records = Array.from({ length: n }, (_, i) => ({ id: `id-${i}`, vector: vectors.subarray(i * dim, (i + 1) * dim), metadata: { i } }));
    expectSameBytes(direct('big', dim, records, 1), viaOps('big', dim, records));
  });

  test('a payload built inside another one (a metadata getter) leaves the outer one intact', () => {
    const dim = 4;
    const inner: Buffer[] = [];
    const bulk = (tag: string, n: number) => Array.from({ length: n }, (_, i) => ({ id: `${tag}${i}`, vector: new Float32Array(dim).fill(i) }));
    const records: unknown[] = bulk('a', 20_000);
    const nested = {};
    Object.defineProperty(nested, 'x', {
      enumerable: true,
      get: () => {
        inner.push(direct('inner', dim, bulk('b', 20_000), 20_000));
        return 1;
      },
    });
    records.push({ id: 'last', vector: new Float32Array(dim), metadata: nested });
    const got = direct('outer', dim, records, records.length);
    inner.length = 0;
    expectSameBytes(got, viaOps('outer', dim, records));
  });
});
