// The README's demo, run as a user would: it must recover every acknowledged write after a
// SIGKILL and bring back accidentally deleted documents with a point-in-time restore.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { expect, it } from 'vitest';

import { tempDir } from './helpers.js';

const cli = fileURLToPath(new URL('../packages/cairn/dist/cli.js', import.meta.url));

it('demo_recovers_every_acknowledged_write_and_restores_deleted_documents', async () => {
  const dir = join(tempDir(), 'demo');
  const { stdout } = await promisify(execFile)(process.execPath, [cli, 'demo', '--json', '--dir', dir], { timeout: 120_000 });
  const result = JSON.parse(stdout);
  expect(result.acknowledgedBeforeKill).toBeGreaterThan(0);
  expect(result.missingAfterRecovery).toBe(0);
  expect(result.restoredDocsBack).toBe(100);
});
