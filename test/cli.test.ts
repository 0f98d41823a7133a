// The command line as a table: help, version, unknown commands and options, the argument checks
// each command makes before it touches anything, `--json` errors, and that no command but demo
// creates a store (a missing path, or a directory of unrelated files, is left as it was).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, test } from 'vitest';

import { tempDir } from './helpers.js';

const CLI = fileURLToPath(new URL('../packages/cairn/dist/cli.js', import.meta.url));
const PACKAGE_JSON = fileURLToPath(new URL('../packages/cairn/package.json', import.meta.url));
const COMMANDS = [
  'status',
  'range',
  'checkpoint',
  'snapshot',
  'snapshots',
  'snapshot-export',
  'snapshot-import',
  'restore',
  'scrub',
  'backup',
  'backups',
  'verify',
  'restore-backup',
  'serve',
  'replicate',
  'node',
  'cluster',
  'drill',
  'demo',
];

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, CAIRN_BACKUP_KEY: '' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A directory holding files that have nothing to do with Cairn. */
function unrelatedDir(root: string): string {
  const d = join(root, 'photos');
  mkdirSync(d);
  writeFileSync(join(d, 'holiday.jpg'), 'not a store');
  return d;
}

/** Each command that takes a store directory, with that directory put in its place. */
const STORE_COMMANDS: Array<[string, (dir: string, root: string) => string[]]> = [
  ['status', (d) => ['status', d]],
  ['range', (d) => ['range', d]],
  ['checkpoint', (d) => ['checkpoint', d]],
  ['snapshot', (d) => ['snapshot', d]],
  ['snapshot --incremental', (d) => ['snapshot', d, '--incremental']],
  ['snapshots', (d) => ['snapshots', d]],
  ['restore', (d, root) => ['restore', d, join(root, 'restored')]],
  ['scrub', (d) => ['scrub', d]],
  ['scrub --repair', (d) => ['scrub', d, '--repair']],
  ['backup', (d, root) => ['backup', d, '--to', `file://${join(root, 'backups')}`]],
  ['snapshot-export', (d, root) => ['snapshot-export', d, 'some-id', join(root, 'snap.carc')]],
  ['serve', (d) => ['serve', d, '--http', '127.0.0.1:0']],
  ['drill', (d) => ['drill', d]],
];

describe('cli', () => {
  test('help_lists_every_command_on_stdout_and_exits_0', () => {
    for (const args of [[], ['help'], ['--help'], ['-h']]) {
      const r = cli(...args);
      expect(r.status).toBe(0);
      expect(r.stderr).toBe('');
      expect(r.stdout.startsWith('usage: cairn <command> [options]\n')).toBe(true);
      for (const c of COMMANDS) expect(r.stdout).toMatch(new RegExp(`^  ${c} `, 'm'));
      expect(r.stdout).toContain('CAIRN_BACKUP_KEY');
    }
  });

  test('version_prints_the_package_version', () => {
    const { version } = JSON.parse(readFileSync(PACKAGE_JSON, 'utf8')) as { version: string };
    const r = cli('--version');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`${version}\n`);
  });

  test('every_command_has_help_on_stdout_with_exit_0', () => {
    for (const c of COMMANDS) {
      for (const args of [
        [c, '--help'],
        [c, '-h'],
        ['help', c],
      ]) {
        const r = cli(...args);
        expect(r.status, args.join(' ')).toBe(0);
        expect(r.stderr).toBe('');
        expect(r.stdout.startsWith(`usage: cairn ${c} `), args.join(' ')).toBe(true);
        expect(r.stdout).toContain('--json');
        expect(r.stdout).toContain('exit status');
      }
    }
  });

  test('unknown_command_is_one_line_with_exit_2', () => {
    const r = cli('frobnicate', 'x');
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe("cairn: CAIRN_INVALID_ARGUMENT: unknown command 'frobnicate' (cairn --help lists them)\n");
  });

  test('every_command_refuses_an_unknown_flag_in_one_line_with_exit_2', () => {
    const root = tempDir('cli-unknown-option');
    for (const c of COMMANDS) {
      const r = cli(c, join(root, 'store'), '--frobnicate');
      expect(r.status, c).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr.split('\n')).toHaveLength(2);
      expect(r.stderr).toMatch(new RegExp(`^cairn: CAIRN_INVALID_ARGUMENT: ${c}: .*'--frobnicate'`));
      expect(r.stderr).not.toMatch(/\bat \S+:\d+/);
    }
    expect(readdirSync(root)).toEqual([]);
  });

  test('an_option_of_another_command_is_unknown_here', () => {
    const r = cli('status', join(tempDir('cli-other-option'), 's'), '--repair');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/'--repair'/);
  });

  test('json_errors_are_one_document_on_stdout', () => {
    const root = tempDir('cli-json-errors');
    for (const c of COMMANDS) {
      const r = cli(c, join(root, 'store'), '--frobnicate', '--json');
      expect(r.status, c).toBe(2);
      expect(r.stderr).toBe('');
      const doc = JSON.parse(r.stdout) as { error: { code: string; message: string } };
      expect(doc.error.code).toBe('CAIRN_INVALID_ARGUMENT');
      expect(doc.error.message).toContain('--frobnicate');
    }
    const missing = cli('status', join(root, 'nope'), '--json');
    expect(missing.status).toBe(1);
    expect(JSON.parse(missing.stdout)).toEqual({ error: { code: 'CAIRN_NOT_FOUND', message: expect.stringContaining(join(root, 'nope')) } });
    expect(readdirSync(root)).toEqual([]);
  });

  test('missing_arguments_are_usage_errors_with_exit_2', () => {
    const cases: Array<[string[], string]> = [
      [['status'], 'status needs a store directory'],
      [['range'], 'range needs a store directory'],
      [['checkpoint'], 'checkpoint needs a store directory'],
      [['snapshot'], 'snapshot needs a store directory'],
      [['snapshots'], 'snapshots needs a store directory'],
      [['restore', 'a'], 'restore needs SOURCE and TARGET directories'],
      [['scrub'], 'scrub needs a store directory'],
      [['backup', 'a'], 'backup needs a store directory and --to URL'],
      [['backups'], 'backups needs a target URL'],
      [['verify', 'file:///x'], 'verify needs a target URL and a backup id'],
      [['restore-backup', 'file:///x', 'id'], 'restore-backup needs a target URL, a backup id and a directory'],
      [['snapshot-export', 'a', 'id'], 'snapshot-export needs a store directory, a snapshot id and an archive file'],
      [['snapshot-import', 'f'], 'snapshot-import needs an archive file and a directory'],
      [['serve'], 'serve needs a store directory'],
      [['serve', 'a'], 'serve needs --replication HOST:PORT or --http HOST:PORT (or both)'],
      [['replicate', 'a'], 'replicate needs --primary'],
      [['node', '--dir', 'a'], 'node needs --token-file'],
      [['cluster', 'status'], 'cluster needs --etcd'],
      [['drill'], 'drill needs a store directory'],
    ];
    for (const [args, message] of cases) {
      const r = cli(...args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toBe(`cairn: CAIRN_INVALID_ARGUMENT: ${message}\n`);
    }
  });

  test('option_values_are_checked_before_anything_is_opened', () => {
    const root = tempDir('cli-option-values');
    const cases: Array<[string[], RegExp]> = [
      [['restore', join(root, 's'), join(root, 't'), '--seq', '1', '--time', '2020-01-01'], /give --seq or --time, not both/],
      [['restore', join(root, 's'), join(root, 't'), '--seq', 'x'], /--seq must be a non-negative integer/],
      [['restore', join(root, 's'), join(root, 't'), '--seq', '-3'], /'--seq'/],
      [['restore', join(root, 's'), join(root, 't'), '--seq=-3'], /--seq must be a non-negative integer/],
      [['restore', join(root, 's'), join(root, 't'), '--time', 'not a date'], /--time must be an ISO date/],
      [['restore-backup', `file://${root}/b`, 'id', join(root, 't'), '--seq', '1', '--time', '2020-01-01'], /give --seq or --time, not both/],
      [['scrub', join(root, 's'), '--throttle', '0'], /--throttle must be a positive number of MB\/s/],
      [['scrub', join(root, 's'), '--concurrency', '1.5'], /--concurrency must be a positive integer/],
      [['status', join(root, 's'), '--json=yes'], /'--json'/],
      [['snapshot-export', join(root, 's'), 'id', join(root, 'f'), '--level', '20'], /--level must be an integer from 1 to 19/],
    ];
    for (const [args, message] of cases) {
      const r = cli(...args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/^cairn: CAIRN_INVALID_ARGUMENT: [^\n]*\n$/);
      expect(r.stderr).toMatch(message);
    }
    expect(readdirSync(root)).toEqual([]);
  });

  test('no_command_creates_a_store_at_a_missing_path', () => {
    for (const [name, argsFor] of STORE_COMMANDS) {
      const root = tempDir('cli-missing-path');
      const dir = join(root, 'mistyped');
      const r = cli(...argsFor(dir, root));
      expect(r.status, name).toBe(1);
      expect(r.stderr, name).toBe(`cairn: CAIRN_NOT_FOUND: no store at ${dir} (the path does not exist)\n`);
      const j = cli(...argsFor(dir, root), '--json');
      expect(j.status, name).toBe(1);
      expect(j.stderr, name).toBe('');
      expect(JSON.parse(j.stdout), name).toEqual({ error: { code: 'CAIRN_NOT_FOUND', message: `no store at ${dir} (the path does not exist)` } });
      expect(readdirSync(root), name).toEqual([]);
    }
  });

  test('no_command_turns_a_directory_of_other_files_into_a_store', () => {
    for (const [name, argsFor] of STORE_COMMANDS) {
      const root = tempDir('cli-unrelated');
      const dir = unrelatedDir(root);
      const r = cli(...argsFor(dir, root));
      expect(r.status, name).toBe(1);
      expect(r.stderr, name).toMatch(/^cairn: CAIRN_NOT_A_STORE: .* is not a Cairn store/);
      expect(readdirSync(root), name).toEqual(['photos']);
      expect(readdirSync(dir), name).toEqual(['holiday.jpg']);
    }
  });

  test('an_empty_directory_is_not_a_store_to_the_cli', () => {
    for (const [name, argsFor] of STORE_COMMANDS) {
      const root = tempDir('cli-empty');
      const dir = join(root, 'empty');
      mkdirSync(dir);
      const r = cli(...argsFor(dir, root));
      expect(r.status, name).toBe(1);
      expect(r.stderr, name).toBe(`cairn: CAIRN_NOT_FOUND: no store at ${dir} (the directory is empty)\n`);
      expect(readdirSync(root), name).toEqual(['empty']);
      expect(readdirSync(dir), name).toEqual([]);
    }
  });

  test('backup_target_commands_create_nothing_at_a_missing_target', () => {
    const root = tempDir('cli-missing-target');
    const url = `file://${join(root, 'backups')}`;
    const list = cli('backups', url);
    expect(list.status).toBe(0);
    const verify = cli('verify', url, 'b1');
    expect(verify.status).toBe(1);
    const restore = cli('restore-backup', url, 'b1', join(root, 'restored'));
    expect(restore.status).toBe(1);
    expect(restore.stderr).toMatch(/^cairn: CAIRN_NOT_FOUND: /);
    expect(readdirSync(root)).toEqual([]);
  });

  test('snapshot_import_refuses_a_missing_archive_and_a_directory_of_other_files', () => {
    const root = tempDir('cli-import-paths');
    const missing = cli('snapshot-import', join(root, 'nope.carc'), join(root, 'into'), '--json');
    expect(missing.status).toBe(1);
    expect(JSON.parse(missing.stdout).error.code).toBe('CAIRN_NOT_FOUND');
    expect(readdirSync(root)).toEqual([]);
    const archive = join(root, 'a.carc');
    writeFileSync(archive, 'not an archive');
    const dir = unrelatedDir(root);
    const r = cli('snapshot-import', archive, dir);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^cairn: CAIRN_NOT_A_STORE: .* is not a Cairn store/);
    expect(readdirSync(dir)).toEqual(['holiday.jpg']);
    // A file that is not an archive, into a new directory: refused as damaged, nothing created.
    const bad = cli('snapshot-import', archive, join(root, 'new'));
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/^cairn: CAIRN_CORRUPTION: .*not a Cairn snapshot archive/);
    expect(existsSync(join(root, 'new'))).toBe(false);
  });

  test('replicate_and_node_refuse_a_directory_of_other_files', () => {
    const root = tempDir('cli-replica-unrelated');
    const dir = unrelatedDir(root);
    const token = join(root, 'token');
    writeFileSync(token, 'x'.repeat(40));
    for (const args of [
      ['replicate', dir, '--primary', '127.0.0.1:1', '--token-file', token, '--node-id', 'n2'],
      [
        'node',
        '--dir',
        dir,
        '--id',
        'n1',
        '--cluster',
        'c',
        '--listen',
        '127.0.0.1:45678',
        '--etcd',
        'http://127.0.0.1:1',
        '--voters',
        'n1',
        '--token-file',
        token,
      ],
    ]) {
      const r = cli(...args);
      expect(r.status, args[0]).toBe(1);
      expect(r.stderr, args[0]).toMatch(/^cairn: CAIRN_NOT_A_STORE: /);
      expect(readdirSync(dir)).toEqual(['holiday.jpg']);
    }
    const short = cli('replicate', join(root, 'r'), '--primary', '127.0.0.1:1', '--token-file', '/dev/null', '--node-id', 'n2');
    expect(short.stderr).toContain('--token-file');
    expect(short.stderr).not.toContain('options.');
  });
});
