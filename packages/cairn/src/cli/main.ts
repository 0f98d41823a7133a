/**
 * The `cairn` command line: a table of commands, one file per group. `main` parses each command's
 * own options with node:util parseArgs (strict) and runs it; it resolves to the exit status:
 * 0 done, 1 the command failed (or found damage), 2 the command line is wrong.
 */
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';

import { CairnError } from '../errors.js';
import { snapshotExport, snapshotImport } from './archive.js';
import { BACKUP_ENVIRONMENT, backup, backups, restoreBackup, verify } from './backup.js';
import { cluster, node } from './cluster.js';
import { type Command, type CommandArgs, type OptionSpecs, UsageError } from './command.js';
import { demo } from './demo.js';
import { drill } from './drill.js';
import { cliText, json } from './output.js';
import { replicate, serve } from './replication.js';
import { restore } from './restore.js';
import { scrub } from './scrub.js';
import { snapshot, snapshots } from './snapshot.js';
import { checkpoint, range, status } from './store.js';

/** In help-page order. */
const COMMANDS: readonly Command[] = [
  status,
  range,
  checkpoint,
  snapshot,
  snapshots,
  snapshotExport,
  snapshotImport,
  restore,
  scrub,
  backup,
  backups,
  verify,
  restoreBackup,
  serve,
  replicate,
  node,
  cluster,
  drill,
  demo,
];

/** Paragraphs printed above a command's lines in the help page (where they have always stood). */
const HELP_NOTES: Readonly<Record<string, string>> = { scrub: BACKUP_ENVIRONMENT };

const EXIT_STATUSES = '\nexit status: 0 done, 1 failed (or damage found), 2 bad command line.\n';

const USAGE =
  'usage: cairn <command> [options]\n       cairn <command> --help\n       cairn --version\n\n' +
  `commands:\n${COMMANDS.map((c) => (HELP_NOTES[c.name] ?? '') + c.help).join('')}` +
  '\nno command except demo creates a store: a missing store is CAIRN_NOT_FOUND, a directory of\n' +
  'other files CAIRN_NOT_A_STORE.\n' +
  EXIT_STATUSES;

const COMMON_OPTIONS: OptionSpecs = { json: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h', default: false } };

function version(): string {
  const require = createRequire(import.meta.url);
  return (require('../../package.json') as { version: string }).version;
}

function commandHelp(c: Command): string {
  return `usage: cairn ${c.help.trimStart()}${c.details ?? ''}  --json                   print one JSON document (errors too: { "error": { "code", "message" } })\n  -h, --help               this help\n${EXIT_STATUSES}`;
}

/** parseArgs's messages run over several lines; one line that names the option is enough. */
function usageLine(e: unknown, args: readonly string[]): string {
  const message = e instanceof Error ? e.message : String(e);
  const ambiguous = /^Option '(-[^']+)' argument is ambiguous/.exec(message);
  if (ambiguous) {
    const flag = ambiguous[1]!;
    const value = args[args.indexOf(flag) + 1] ?? '';
    return `option '${flag}' needs a value, and '${value}' looks like an option (write ${flag}=VALUE to pass one that starts with '-')`;
  }
  return message.split('\n')[0]!.trim();
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    const topic = name === 'help' ? COMMANDS.find((c) => c.name === rest[0]) : undefined;
    process.stdout.write(topic ? commandHelp(topic) : USAGE);
    return 0;
  }
  if (name === '--version' || name === '-V') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  const command = COMMANDS.find((c) => c.name === name);
  const asJson = rest.includes('--json');
  if (!command) return fail(asJson, new UsageError(`unknown command '${name}' (cairn --help lists them)`));
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: rest, allowPositionals: true, strict: true, options: { ...COMMON_OPTIONS, ...command.options } });
  } catch (e) {
    return fail(asJson, new UsageError(`${command.name}: ${usageLine(e, rest)} (cairn ${command.name} --help)`));
  }
  const { values, positionals } = parsed;
  if (values.help === true) {
    process.stdout.write(commandHelp(command));
    return 0;
  }
  const args: CommandArgs = {
    positionals,
    json: values.json === true,
    string: (n) => values[n] as string | undefined,
    flag: (n) => values[n] === true,
    strings: (n) => values[n] as string[] | undefined,
  };
  try {
    return await command.run(args);
  } catch (e) {
    return fail(args.json, e);
  }
}

/** One line on stderr, or the `--json` error document on stdout; never a stack trace. */
function fail(asJson: boolean, e: unknown): number {
  const code = e instanceof CairnError ? e.code : 'CAIRN_INTERNAL';
  const message = cliText(e instanceof Error ? e.message : String(e));
  if (asJson) process.stdout.write(`${json({ error: { code, message } })}\n`);
  else process.stderr.write(`cairn: ${code}: ${message}\n`);
  if (!(e instanceof CairnError) && process.env.CAIRN_DEBUG) process.stderr.write(`${(e as Error)?.stack ?? ''}\n`);
  return e instanceof UsageError ? 2 : 1;
}
