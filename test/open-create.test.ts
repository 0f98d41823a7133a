// open() creates a store only in a missing or empty directory, never in a directory of other
// files; `create: false` refuses anything that is not already a store; scrub(dir) never creates.
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { type CairnError, open, scrub } from 'cairndb';
import { describe, expect, test } from 'vitest';

import { tempDir } from './helpers.js';

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as CairnError).code;
  }
  return 'resolved';
}

describe('open creates a store only where nothing else lives', () => {
  test('missing_and_empty_directories_become_stores', async () => {
    const root = tempDir('open-create');
    for (const dir of [join(root, 'missing', 'nested'), join(root, 'empty')]) {
      if (dir.endsWith('empty')) mkdirSync(dir);
      const db = await open(dir);
      await db.createCollection('docs', { dim: 2 });
      await db.close();
      const again = await open(dir, { create: false });
      expect(again.collections().map((c) => c.name)).toEqual(['docs']);
      await again.close();
    }
  });

  test('a_directory_of_other_files_is_not_a_store_and_is_left_alone', async () => {
    const dir = join(tempDir('open-unrelated'), 'photos');
    mkdirSync(dir);
    writeFileSync(join(dir, 'a.jpg'), 'x');
    for (const options of [{}, { create: true }, { create: false }]) {
      await expect(open(dir, options)).rejects.toMatchObject({ code: 'CAIRN_NOT_A_STORE', message: expect.stringContaining(dir) });
    }
    expect(readdirSync(dir)).toEqual(['a.jpg']);
  });

  test('a_file_is_not_a_store', async () => {
    const file = join(tempDir('open-file'), 'notes.txt');
    writeFileSync(file, 'x');
    expect(await codeOf(open(file))).toBe('CAIRN_NOT_A_STORE');
  });

  test('create_false_refuses_a_missing_path_or_empty_directory_with_not_found', async () => {
    const root = tempDir('open-no-create');
    const missing = join(root, 'missing');
    expect(await codeOf(open(missing, { create: false }))).toBe('CAIRN_NOT_FOUND');
    expect(existsSync(missing)).toBe(false);
    const empty = join(root, 'empty');
    mkdirSync(empty);
    expect(await codeOf(open(empty, { create: false }))).toBe('CAIRN_NOT_FOUND');
    expect(readdirSync(empty)).toEqual([]);
  });

  test('create_must_be_a_boolean', async () => {
    const dir = join(tempDir('open-create-type'), 's');
    await expect(open(dir, { create: 'yes' as unknown as boolean })).rejects.toMatchObject({
      code: 'CAIRN_INVALID_ARGUMENT',
      message: 'options.create must be a boolean',
    });
    expect(existsSync(dir)).toBe(false);
  });

  test('scrub_of_a_missing_or_unrelated_directory_creates_nothing', async () => {
    const root = tempDir('scrub-no-create');
    const missing = join(root, 'missing');
    expect(await codeOf(scrub(missing))).toBe('CAIRN_NOT_FOUND');
    expect(await codeOf(scrub(missing, { repair: true }))).toBe('CAIRN_NOT_FOUND');
    expect(existsSync(missing)).toBe(false);
    const other = join(root, 'other');
    mkdirSync(other);
    writeFileSync(join(other, 'x'), 'x');
    expect(await codeOf(scrub(other, { repair: true }))).toBe('CAIRN_NOT_A_STORE');
    expect(readdirSync(other)).toEqual(['x']);
  });
});
