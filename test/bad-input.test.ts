// Bad input: every case rejects with a CairnError whose code is stable and whose message names
// the field, asynchronously, and writes nothing.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { CairnError, type Collection, open, type Store } from 'cairndb';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

import { rejectsWith, storeChild, tempDir } from './helpers.js';

const DIM = 4;
const ok = (id: string) => ({ id, vector: [1, 2, 3, 4], metadata: { ok: true } });

class Point {
  constructor(
    readonly x: number,
    readonly y: number,
  ) {}
}
const cycle: Record<string, unknown> = { a: 1 };
cycle.self = cycle;
const arrayCycle: unknown[] = [1];
arrayCycle.push(arrayCycle);

/** Names that are never valid for an id or a collection, with why. */
const BAD_NAMES: Array<[string, unknown]> = [
  ['empty', ''],
  ['257 bytes', 'a'.repeat(257)],
  ['over 256 bytes in UTF-8', 'é'.repeat(129)],
  ['a slash', 'a/b'],
  ['a parent path', '../x'],
  ['a backslash', 'a\\b'],
  ['NUL', 'a\u0000b'],
  ['.', '.'],
  ['..', '..'],
  ['a lone surrogate', 'a\ud800'],
  ['not a string', 42],
];

/** Metadata values that are not plain JSON, with the path the message must name. */
const BAD_METADATA: Array<[string, unknown, string]> = [
  ['a function', { f: () => 1 }, 'metadata.f'],
  ['an undefined value', { u: undefined }, 'metadata.u'],
  ['a nested undefined', { a: [1, { b: undefined }] }, 'metadata.a[1].b'],
  ['a Date', { when: new Date(0) }, 'metadata.when'],
  ['a Date as the whole metadata', new Date(0), 'metadata'],
  ['a Map', { m: new Map([[1, 2]]) }, 'metadata.m'],
  ['a Map as the whole metadata', new Map(), 'metadata'],
  ['a class instance', { p: new Point(1, 2) }, 'metadata.p'],
  ['a class instance as the whole metadata', new Point(1, 2), 'metadata'],
  ['a cycle', cycle, 'metadata.self'],
  ['a cycle through an array', { a: arrayCycle }, 'metadata.a[1]'],
  ['a BigInt', { b: 10n }, 'metadata.b'],
  ['NaN', { n: Number.NaN }, 'metadata.n'],
  ['-Infinity beside valid values', { a: 'x', n: Number.NEGATIVE_INFINITY, b: null }, 'metadata.n'],
  ['Infinity', { n: [Number.POSITIVE_INFINITY] }, 'metadata.n[0]'],
  ['a Symbol', { s: Symbol('x') }, 'metadata.s'],
  ['an array as the whole metadata', [1, 2], 'metadata'],
  ['a typed array', { t: new Float32Array(2) }, 'metadata.t'],
];

test('metadata is judged by its own keys, as JSON takes them, even with an enumerable key inherited from Object.prototype', async () => {
  // The fast check (validate.ts, isFlatJsonObject) also sees inherited keys: it must fall back
  // to the exact check, not refuse valid metadata. Its own store: the suite below counts rows.
  const db = await open(tempDir('cairn-inherited-'));
  const docs = await db.createCollection('docs', { dim: DIM, metric: 'l2' });
  Object.defineProperty(Object.prototype, 'inheritedFn', { value: () => 1, enumerable: true, configurable: true });
  try {
    await docs.upsert([{ id: 'inherited', vector: [1, 2, 3, 4], metadata: { a: 1, b: 'two' } }]);
  } finally {
    delete (Object.prototype as Record<string, unknown>).inheritedFn;
  }
  expect((await docs.get('inherited'))?.metadata).toEqual({ a: 1, b: 'two' });
  await db.close();
});

describe('bad input on an open store', () => {
  let dir: string;
  let db: Store;
  let docs: Collection;

  beforeAll(async () => {
    dir = tempDir('cairn-bad-');
    db = await open(dir);
    docs = await db.createCollection('docs', { dim: DIM, metric: 'l2' });
    await db.createCollection('other', { dim: 2, metric: 'cosine' });
    await docs.upsert([ok('seed-1'), ok('seed-2')]);
  });
  afterAll(async () => {
    // Nothing from any rejected call reached the log either.
    const seq = db.lastSeq;
    await db.close();
    const again = await open(dir);
    expect(again.lastSeq).toBe(seq);
    expect(again.collections().map((c) => [c.name, c.count])).toEqual([
      ['docs', 2],
      ['other', 0],
    ]);
    await again.close();
  });

  const state = () => ({ seq: db.lastSeq, collections: db.collections().map((c) => [c.name, c.count]) });

  /**
   * `call` must return a promise (never throw synchronously) that rejects with `code`, with a
   * message naming `field`, and leave the store unchanged.
   */
  async function expectRejected(call: () => Promise<unknown>, code: string, field: string): Promise<CairnError> {
    const before = state();
    let p: Promise<unknown> | undefined;
    expect(() => {
      p = call();
    }, 'async methods reject, they do not throw synchronously').not.toThrow();
    expect(p).toBeInstanceOf(Promise);
    const e = await rejectsWith(p!, code);
    expect(e.message, `the message names ${field}`).toContain(field);
    expect(state(), 'nothing was written').toEqual(before);
    return e;
  }

  describe('vectors', () => {
    const cases: Array<[string, unknown, string]> = [
      ['a short array (wrong dimension)', [1, 2, 3], 'records[0].vector'],
      ['a long Float32Array (wrong dimension)', new Float32Array(DIM + 1), 'records[0].vector'],
      ['an empty array', [], 'records[0].vector'],
      ['NaN in an array', [1, Number.NaN, 3, 4], 'records[0].vector[1]'],
      ['NaN in a Float32Array', Float32Array.of(1, 2, Number.NaN, 4), 'records[0].vector[2]'],
      ['Infinity', [1, 2, 3, Number.POSITIVE_INFINITY], 'records[0].vector[3]'],
      ['-Infinity in a Float32Array', Float32Array.of(Number.NEGATIVE_INFINITY, 2, 3, 4), 'records[0].vector[0]'],
      ['a number overflowing float32', [1e39, 0, 0, 0], 'records[0].vector[0]'],
      ['a negative number overflowing float32', [0, -3.5e38, 0, 0], 'records[0].vector[1]'],
      ['a string element', ['1', 2, 3, 4], 'records[0].vector[0]'],
      // biome-ignore lint/suspicious/noSparseArray: a hole in the vector is the bad input under test
      ['a hole', [1, , 3, 4], 'records[0].vector[1]'],
      ['a Float64Array', new Float64Array(DIM), 'records[0].vector'],
      ['a missing vector', undefined, 'records[0].vector'],
    ];
    test.each(cases)('upsert rejects %s', async (_why, vector, field) => {
      await expectRejected(() => docs.upsert([{ id: 'v', vector: vector as number[] }]), 'CAIRN_INVALID_ARGUMENT', field);
      expect(await docs.get('v')).toBeUndefined();
    });

    test('one bad record rejects the whole upsert', async () => {
      await expectRejected(() => docs.upsert([ok('good-1'), { id: 'bad', vector: [1, 2, 3] }, ok('good-2')]), 'CAIRN_INVALID_ARGUMENT', 'records[1].vector');
      expect(await docs.get('good-1')).toBeUndefined();
    });

    test('one bad op rejects the whole batch', async () => {
      await expectRejected(
        () =>
          db.batch([
            { collection: 'docs', op: 'upsert', records: [ok('good-1')] },
            { collection: 'other', op: 'upsert', records: [{ id: 'bad', vector: [1, 2, 3, 4] }] },
          ]),
        'CAIRN_INVALID_ARGUMENT',
        'ops[1].records[0].vector',
      );
      expect(await docs.get('good-1')).toBeUndefined();
    });

    test.each([
      ['wrong dimension', [1, 2], 'vector'],
      ['NaN', [0, 0, Number.NaN, 0], 'vector[2]'],
      ['Infinity', Float32Array.of(0, Number.POSITIVE_INFINITY, 0, 0), 'vector[1]'],
      ['overflowing float32', [0, 0, 0, 4e38], 'vector[3]'],
    ])('query rejects a query vector with %s', async (_why, vector, field) => {
      await expectRejected(() => docs.query(vector as number[], { k: 1 }), 'CAIRN_INVALID_ARGUMENT', field);
    });
  });

  describe('ids', () => {
    test.each(BAD_NAMES)('upsert rejects an id that is %s', async (_why, id) => {
      await expectRejected(() => docs.upsert([{ id: id as string, vector: [1, 2, 3, 4] }]), 'CAIRN_INVALID_ARGUMENT', 'records[0].id');
    });
    test.each(BAD_NAMES)('delete rejects an id that is %s', async (_why, id) => {
      await expectRejected(() => docs.delete(['seed-1', id as string]), 'CAIRN_INVALID_ARGUMENT', 'ids[1]');
      expect(await docs.get('seed-1')).toBeDefined();
    });
    test.each(BAD_NAMES)('get rejects an id that is %s', async (_why, id) => {
      await expectRejected(() => docs.get(id as string), 'CAIRN_INVALID_ARGUMENT', 'id');
    });
    test.each(BAD_NAMES)('batch rejects an id that is %s', async (_why, id) => {
      await expectRejected(
        () =>
          db.batch([
            { collection: 'docs', op: 'delete', ids: ['seed-1'] },
            { collection: 'docs', op: 'delete', ids: [id as string] },
          ]),
        'CAIRN_INVALID_ARGUMENT',
        'ops[1].ids[0]',
      );
    });
    test('256 bytes is still a valid id', async () => {
      const long = 'é'.repeat(128);
      const { seq } = await docs.upsert([{ id: long, vector: [1, 2, 3, 4] }]);
      expect(seq).toBe(db.lastSeq);
      await docs.delete([long]);
    });
    test('the same id twice in one upsert is refused', async () => {
      await expectRejected(() => docs.upsert([ok('twice'), ok('twice')]), 'CAIRN_INVALID_ARGUMENT', 'records[1].id');
    });
    test.each([
      ['not an array', 'seed-1'],
      ['empty', []],
    ])('records that are %s are refused', async (_why, records) => {
      await expectRejected(() => docs.upsert(records as never), 'CAIRN_INVALID_ARGUMENT', 'records');
      await expectRejected(() => docs.delete(records as never), 'CAIRN_INVALID_ARGUMENT', 'ids');
    });
  });

  describe('collection names', () => {
    test.each(BAD_NAMES)('createCollection rejects a name that is %s', async (_why, name) => {
      await expectRejected(() => db.createCollection(name as string, { dim: 2 }), 'CAIRN_INVALID_ARGUMENT', 'name');
    });
    test.each(BAD_NAMES)('dropCollection rejects a name that is %s', async (_why, name) => {
      await expectRejected(() => db.dropCollection(name as string), 'CAIRN_INVALID_ARGUMENT', 'name');
    });
    test.each(BAD_NAMES)('batch rejects a collection name that is %s', async (_why, name) => {
      await expectRejected(() => db.batch([{ collection: name as string, op: 'delete', ids: ['x'] }]), 'CAIRN_INVALID_ARGUMENT', 'ops[0].collection');
    });
    test.each(BAD_NAMES)('collection() throws for a name that is %s', (_why, name) => {
      // collection() is synchronous by contract, so it throws.
      const e = (() => {
        try {
          db.collection(name as string);
        } catch (err) {
          return err;
        }
      })();
      expect(e).toBeInstanceOf(CairnError);
      expect((e as CairnError).code).toBe('CAIRN_INVALID_ARGUMENT');
      expect((e as CairnError).message).toContain('name');
    });

    test('a missing collection is CAIRN_NOT_FOUND', async () => {
      expect(() => db.collection('missing')).toThrow(expect.objectContaining({ code: 'CAIRN_NOT_FOUND', message: expect.stringContaining('missing') }));
      await expectRejected(() => db.dropCollection('missing'), 'CAIRN_NOT_FOUND', 'missing');
      await expectRejected(() => db.batch([{ collection: 'missing', op: 'delete', ids: ['x'] }]), 'CAIRN_NOT_FOUND', 'ops[0].collection');
      await expectRejected(
        () =>
          db.batch([
            { collection: 'docs', op: 'upsert', records: [ok('good')] },
            { collection: 'missing', op: 'upsert', records: [ok('x')] },
          ]),
        'CAIRN_NOT_FOUND',
        'ops[1].collection',
      );
    });

    test('a dropped collection is CAIRN_NOT_FOUND through an old handle', async () => {
      const tmp = await db.createCollection('doomed', { dim: 2 });
      await db.dropCollection('doomed');
      await expectRejected(() => tmp.upsert([{ id: 'x', vector: [1, 2] }]), 'CAIRN_NOT_FOUND', 'doomed');
      await expectRejected(() => tmp.get('x'), 'CAIRN_NOT_FOUND', 'doomed');
    });

    test('creating an existing collection is CAIRN_ALREADY_EXISTS', async () => {
      await expectRejected(() => db.createCollection('docs', { dim: DIM }), 'CAIRN_ALREADY_EXISTS', 'docs');
    });
  });

  describe('metadata', () => {
    test.each(BAD_METADATA)('upsert rejects metadata with %s', async (_why, metadata, path) => {
      await expectRejected(() => docs.upsert([{ id: 'm', vector: [1, 2, 3, 4], metadata: metadata as never }]), 'CAIRN_INVALID_ARGUMENT', `records[0].${path}`);
      expect(await docs.get('m')).toBeUndefined();
    });
    test.each(BAD_METADATA)('batch rejects metadata with %s', async (_why, metadata, path) => {
      await expectRejected(
        () => db.batch([{ collection: 'docs', op: 'upsert', records: [ok('good'), { id: 'm', vector: [1, 2, 3, 4], metadata: metadata as never }] }]),
        'CAIRN_INVALID_ARGUMENT',
        `ops[0].records[1].${path}`,
      );
    });
  });

  describe('query options', () => {
    test.each([
      ['k = 0', { k: 0 }, 'options.k'],
      ['k < 0', { k: -3 }, 'options.k'],
      ['k not an integer', { k: 1.5 }, 'options.k'],
      ['k NaN', { k: Number.NaN }, 'options.k'],
      ['k a string', { k: '3' }, 'options.k'],
      ['k missing', {}, 'options.k'],
      ['ef = 0', { k: 1, ef: 0 }, 'options.ef'],
      ['an unknown option', { k: 1, filterr: { ok: true } }, 'options.filterr'],
      ['a filter with an unknown operator', { k: 1, filter: { ok: { $like: true } } }, "filter at 'ok': $like"],
      ['a filter value that is undefined', { k: 1, filter: { ok: undefined } }, 'options.filter.ok'],
      ['a filter that is not an object', { k: 1, filter: 'ok' }, 'options.filter'],
      ['options that are not an object', null, 'options'],
    ])('query rejects %s', async (_why, options, field) => {
      await expectRejected(() => docs.query([1, 2, 3, 4], options as never), 'CAIRN_INVALID_ARGUMENT', field);
    });
  });

  describe('unknown options and bad option values', () => {
    test.each([
      ['an unknown key', { dim: 2, metrc: 'l2' }, 'options.metrc'],
      ['dim 0', { dim: 0 }, 'options.dim'],
      ['dim not an integer', { dim: 2.5 }, 'options.dim'],
      ['dim missing', { metric: 'l2' }, 'options.dim'],
      ['an unknown metric', { dim: 2, metric: 'hamming' }, 'options.metric'],
      ['m = 1', { dim: 2, m: 1 }, 'options.m'],
      ['options that are not an object', 3, 'options'],
    ])('createCollection rejects %s', async (_why, options, field) => {
      await expectRejected(() => db.createCollection('fresh', options as never), 'CAIRN_INVALID_ARGUMENT', field);
      expect(db.collections().some((c) => c.name === 'fresh')).toBe(false);
    });

    test('upsert rejects an unknown record key', async () => {
      await expectRejected(() => docs.upsert([{ id: 'x', vector: [1, 2, 3, 4], meta: {} } as never]), 'CAIRN_INVALID_ARGUMENT', 'records[0].meta');
    });

    test.each([
      ['an unknown op', { collection: 'docs', op: 'upsertt', records: [ok('x')] }, 'ops[0].op'],
      ['an unknown key', { collection: 'docs', op: 'delete', ids: ['x'], records: [] }, 'ops[0].records'],
      ['an op that is not an object', 'delete x', 'ops[0]'],
    ])('batch rejects %s', async (_why, op, field) => {
      await expectRejected(() => db.batch([op as never]), 'CAIRN_INVALID_ARGUMENT', field);
    });
    test('batch rejects an empty list', async () => {
      await expectRejected(() => db.batch([]), 'CAIRN_INVALID_ARGUMENT', 'ops');
    });
  });
});

describe('bad open options', () => {
  test.each([
    ['an unknown key', { syncc: 'always' }, 'options.syncc'],
    ['an unknown sync mode', { sync: 'fast' }, 'options.sync'],
    ['an unknown recovery mode', { recovery: 'best-effort' }, 'options.recovery'],
    ['walSegmentBytes 0', { walSegmentBytes: 0 }, 'options.walSegmentBytes'],
    ['walSegmentBytes not an integer', { walSegmentBytes: 1.5 }, 'options.walSegmentBytes'],
    ['options that are not an object', 'always', 'options'],
  ])('open rejects %s and creates nothing', async (_why, options, field) => {
    const dir = join(tempDir(), 'store');
    let p: Promise<unknown> | undefined;
    expect(() => {
      p = open(dir, options as never);
    }).not.toThrow();
    const e = await rejectsWith(p!, 'CAIRN_INVALID_ARGUMENT');
    expect(e.message).toContain(field);
    expect(existsSync(dir), 'a refused open must not create the directory').toBe(false);
  });

  test('open rejects an empty directory name', async () => {
    const e = await rejectsWith(open(''), 'CAIRN_INVALID_ARGUMENT');
    expect(e.message).toContain('dir');
  });
});

describe('closed store', () => {
  test('every method of a closed store rejects with CAIRN_CLOSED', async () => {
    const dir = tempDir();
    const db = await open(dir);
    const docs = await db.createCollection('docs', { dim: 2 });
    await docs.upsert([{ id: 'a', vector: [1, 2] }]);
    const seq = db.lastSeq;
    await db.close();
    const calls: Array<[string, () => Promise<unknown>]> = [
      ['upsert', () => docs.upsert([{ id: 'b', vector: [1, 2] }])],
      ['delete', () => docs.delete(['a'])],
      ['get', () => docs.get('a')],
      ['count', () => docs.count()],
      ['query', () => docs.query([1, 2], { k: 1 })],
      ['batch', () => db.batch([{ collection: 'docs', op: 'delete', ids: ['a'] }])],
      ['checkpoint', () => db.checkpoint()],
      ['createCollection', () => db.createCollection('more', { dim: 2 })],
      ['dropCollection', () => db.dropCollection('docs')],
    ];
    for (const [name, call] of calls) {
      let p: Promise<unknown> | undefined;
      expect(() => {
        p = call();
      }, `${name} throws synchronously`).not.toThrow();
      const e = await rejectsWith(p!, 'CAIRN_CLOSED');
      expect(e.message, name).toContain('closed');
    }
    // Synchronous by contract: they throw.
    expect(() => db.collection('docs')).toThrow(expect.objectContaining({ code: 'CAIRN_CLOSED' }));
    expect(() => db.collections()).toThrow(expect.objectContaining({ code: 'CAIRN_CLOSED' }));
    await db.close(); // idempotent
    const again = await open(dir);
    expect(again.lastSeq).toBe(seq);
    expect(await again.collection('docs').count()).toBe(1);
    await again.close();
  });
});

describe('one writer per directory', () => {
  test('second_open_in_same_process_is_locked', async () => {
    const dir = tempDir();
    const db = await open(dir);
    const docs = await db.createCollection('docs', { dim: 2 });
    const e = await rejectsWith(open(dir), 'CAIRN_LOCKED');
    expect(e.message).toContain(dir);
    // The refused open did not disturb the first one.
    await docs.upsert([{ id: 'a', vector: [1, 2] }]);
    await db.close();
    const again = await open(dir);
    expect(await again.collection('docs').count()).toBe(1);
    await again.close();
  });

  test('second_open_from_another_process_is_locked', async () => {
    const dir = tempDir();
    const db = await open(dir);
    await db.createCollection('docs', { dim: 8 });
    const other = storeChild(['try-open', dir]);
    expect(await other.waitFor(() => true)).toEqual(['CAIRN_LOCKED']);
    await db.close();
    const later = storeChild(['try-open', dir]);
    expect(await later.waitFor(() => true)).toEqual(['ok']);
  });

  test('open_while_another_process_holds_the_store_is_locked_until_it_dies', async () => {
    const dir = tempDir();
    const holder = storeChild(['hold', dir, 'always', '3']);
    await holder.waitFor((l) => l === 'ready');
    await rejectsWith(open(dir), 'CAIRN_LOCKED');
    // The OS releases the lock with the process, even on SIGKILL.
    await holder.kill();
    const db = await open(dir);
    expect(await db.collection('docs').count()).toBe(3);
    await db.close();
  });
});
