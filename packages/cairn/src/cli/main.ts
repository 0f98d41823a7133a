/**
 * The `cairn` command line: a table of commands, one file per group. `main` parses argv with
 * node:util parseArgs and runs the named command; it resolves to the exit status.
 */
import { parseArgs } from 'node:util';

import { BACKUP_ENVIRONMENT, backup, backups, restoreBackup, verify } from './backup.js';
import { cluster, node } from './cluster.js';
import type { Command, CommandArgs, OptionSpecs } from './command.js';
import { demo } from './demo.js';
import { replicate, serve } from './replication.js';
import { restore } from './restore.js';
import { scrub } from './scrub.js';
import { snapshot, snapshots } from './snapshot.js';
import { checkpoint, status } from './store.js';

/** In help-page order. */
const COMMANDS: readonly Command[] = [
  status,
  checkpoint,
  snapshot,
  snapshots,
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
  demo,
];

/** Paragraphs printed above a command's lines in the help page (where they have always stood). */
const HELP_NOTES: Readonly<Record<string, string>> = { scrub: BACKUP_ENVIRONMENT };

const USAGE = `usage: cairn <command> [options]\n\ncommands:\n${COMMANDS.map((c) => (HELP_NOTES[c.name] ?? '') + c.help).join('')}`;

/**
 * One parse with every command's options plus --json, so an option of another command is
 * accepted and ignored, and an unknown one is an error before any command runs.
 */
const OPTIONS: OptionSpecs = Object.assign({ json: { type: 'boolean', default: false } }, ...COMMANDS.map((c) => c.options));

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: OPTIONS });
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    process.stderr.write(USAGE);
    return name === undefined || name === 'help' || name === '--help' ? 0 : 2;
  }
  const args: CommandArgs = {
    positionals,
    json: values.json === true,
    string: (n) => values[n] as string | undefined,
    flag: (n) => values[n] === true,
    strings: (n) => values[n] as string[] | undefined,
  };
  return command.run(args);
}
