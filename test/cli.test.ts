// The command line as a table: help, unknown commands and options, and the argument checks each
// command makes before it touches anything, with their exit statuses.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, test } from 'vitest';

import { tempDir } from './helpers.js';

const CLI = fileURLToPath(new URL('../packages/cairn/dist/cli.js', import.meta.url));
const COMMANDS = ['status', 'checkpoint', 'snapshot', 'snapshots', 'restore', 'scrub', 'backup', 'backups', 'verify', 'restore-backup', 'demo'];

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('cli', () => {
  test('help_lists_every_command_on_stderr_and_exits_0', () => {
    for (const args of [[], ['help'], ['--help']]) {
      const r = cli(...args);
      expect(r.status).toBe(0);
      expect(r.stdout).toBe('');
      expect(r.stderr.startsWith('usage: cairn <command> [options]\n')).toBe(true);
      for (const c of COMMANDS) expect(r.stderr).toMatch(new RegExp(`^  ${c} `, 'm'));
      expect(r.stderr).toContain('CAIRN_BACKUP_KEY');
    }
  });

  test('unknown_command_prints_usage_and_exits_2', () => {
    const r = cli('frobnicate', 'x');
    expect(r.status).toBe(2);
    expect(r.stderr.startsWith('usage: cairn')).toBe(true);
  });

  test('unknown_option_is_refused_before_the_command_runs', () => {
    const dir = join(tempDir('cli-unknown-option'), 'store');
    const r = cli('status', dir, '--frobnicate');
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/Unknown option '--frobnicate'/);
    expect(existsSync(dir)).toBe(false);
  });

  test('missing_arguments_are_invalid_argument_with_exit_1', () => {
    const cases: Array<[string[], string]> = [
      [['status'], 'status needs a store directory'],
      [['checkpoint'], 'checkpoint needs a store directory'],
      [['snapshot'], 'snapshot needs a store directory'],
      [['snapshots'], 'snapshots needs a store directory'],
      [['restore', 'a'], 'restore needs SOURCE and TARGET directories'],
      [['scrub'], 'scrub needs a store directory'],
      [['backup', 'a'], 'backup needs a store directory and --to URL'],
      [['backups'], 'backups needs a target URL'],
      [['verify', 'file:///x'], 'verify needs a target URL and a backup id'],
      [['restore-backup', 'file:///x', 'id'], 'restore-backup needs a target URL, a backup id and a directory'],
    ];
    for (const [args, message] of cases) {
      const r = cli(...args);
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.stderr).toBe(`cairn: CAIRN_INVALID_ARGUMENT: ${message}\n`);
    }
  });

  test('option_values_are_checked_before_anything_is_opened', () => {
    const root = tempDir('cli-option-values');
    const cases: Array<[string[], string]> = [
      [['restore', join(root, 's'), join(root, 't'), '--seq', '1', '--time', '2020-01-01'], 'give --seq or --time, not both'],
      [['restore', join(root, 's'), join(root, 't'), '--seq', 'x'], '--seq must be a non-negative integer'],
      [['restore', join(root, 's'), join(root, 't'), '--time', 'not a date'], '--time must be an ISO date'],
      [['restore-backup', `file://${root}/b`, 'id', join(root, 't'), '--seq', '1', '--time', '2020-01-01'], 'give --seq or --time, not both'],
      [['scrub', join(root, 's'), '--throttle', '0'], '--throttle must be a positive number of MB/s'],
      [['scrub', join(root, 's'), '--concurrency', '1.5'], '--concurrency must be a positive integer'],
    ];
    for (const [args, message] of cases) {
      const r = cli(...args);
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.stderr).toBe(`cairn: CAIRN_INVALID_ARGUMENT: ${message}\n`);
    }
    for (const name of ['s', 't', 'b']) expect(existsSync(join(root, name))).toBe(false);
  });
});
