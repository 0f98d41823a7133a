// The CLI against real stores: commands with nothing to do succeed and say so, and backup
// verification without the key says the key is needed instead of calling the backup damaged.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { open } from 'cairndb';
import { describe, expect, test } from 'vitest';

import { tempDir } from './helpers.js';

const CLI = fileURLToPath(new URL('../packages/cairn/dist/cli.js', import.meta.url));
const KEY = 'ab'.repeat(32);

function cli(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, CAIRN_BACKUP_KEY: '', ...env } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function smallStore(prefix: string): Promise<string> {
  const dir = join(tempDir(prefix), 'store');
  const db = await open(dir);
  const docs = await db.createCollection('docs', { dim: 2, metric: 'l2' });
  await docs.upsert([
    { id: 'a', vector: [1, 0] },
    { id: 'b', vector: [0, 1] },
  ]);
  await db.close();
  return dir;
}

describe('cli on a store', () => {
  test('snapshot_with_nothing_new_succeeds_and_says_so', async () => {
    const dir = await smallStore('cli-snapshot-nothing');
    expect(cli(['snapshot', dir]).status).toBe(0);
    let r = cli(['snapshot', dir]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^nothing new to snapshot/);
    expect(cli(['snapshot', dir, '--incremental']).status).toBe(0);
    r = cli(['snapshot', dir, '--incremental', '--json']);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ snapshot: null, seq: '2', message: expect.stringContaining('nothing new') });
    const list = JSON.parse(cli(['snapshots', dir, '--json']).stdout) as unknown[];
    expect(list).toHaveLength(2);
  });

  test('verify_without_the_key_says_the_key_is_needed_not_damaged', async () => {
    const dir = await smallStore('cli-verify-key');
    const url = `file://${join(dir, '..', 'backups')}`;
    const made = cli(['backup', dir, '--to', url, '--json'], { CAIRN_BACKUP_KEY: KEY });
    expect(made.status, made.stderr).toBe(0);
    const id = (JSON.parse(made.stdout) as { targets: Array<{ metadata: { id: string } }> }).targets[0]!.metadata.id;

    const withKey = cli(['verify', url, id], { CAIRN_BACKUP_KEY: KEY });
    expect(withKey.status, withKey.stdout).toBe(0);
    expect(withKey.stdout).toMatch(/: ok,/);

    const without = cli(['verify', url, id]);
    expect(without.status).toBe(1);
    expect(without.stdout).not.toContain('DAMAGED');
    expect(without.stdout).toContain('NOT VERIFIED');
    expect(without.stdout).toContain('CAIRN_BACKUP_KEY');
    expect(without.stdout).not.toContain('options.encryption');

    const restored = cli(['restore-backup', url, id, join(dir, '..', 'restored')]);
    expect(restored.status).toBe(1);
    expect(restored.stderr).toContain('CAIRN_BACKUP_KEY');
    expect(restored.stderr).not.toContain('options.');
  });
});
