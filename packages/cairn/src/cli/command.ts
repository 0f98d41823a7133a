/** A CLI command: one row of the table `main.ts` dispatches from. */

import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { ParseArgsConfig } from 'node:util';

import { CairnError } from '../errors.js';
import { LAYOUT } from '../layout.js';
import { checkStoreDir, storeDirState } from '../store-dir.js';

export type OptionSpecs = NonNullable<ParseArgsConfig['options']>;

/** The parsed command line as a command reads it. */
export interface CommandArgs {
  readonly positionals: readonly string[];
  /** `--json`: print one JSON document instead of text (every command takes it). */
  readonly json: boolean;
  string(name: string): string | undefined;
  flag(name: string): boolean;
  strings(name: string): string[] | undefined;
}

export interface Command {
  readonly name: string;
  /** The command's lines in the help page, exactly as printed. */
  readonly help: string;
  /** Options of its own besides --json and --help. */
  readonly options: OptionSpecs;
  /** More lines for `cairn COMMAND --help` (environment, exit statuses). */
  readonly details?: string;
  /**
   * Resolves to the exit status. A `UsageError` exits 2 with its one line; any other rejection
   * prints `cairn: CODE: message` (or the `--json` error document) and exits 1.
   */
  run(args: CommandArgs): Promise<number>;
}

/** A command line that cannot be run as given (missing argument, bad value): exit status 2. */
export class UsageError extends CairnError {
  constructor(message: string) {
    super('CAIRN_INVALID_ARGUMENT', message);
  }
}

/** The store directory argument of a command that must never create one: a missing path or an
 *  empty directory is `CAIRN_NOT_FOUND`, other files `CAIRN_NOT_A_STORE`. */
export async function existingStore(dir: string): Promise<string> {
  await checkStoreDir(dir, false);
  return dir;
}

async function holdsSnapshots(dir: string): Promise<boolean> {
  return stat(join(dir, LAYOUT.snapshots)).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

/** Where snapshots are read from (`snapshot-export`): a store, or a directory that
 *  `snapshot-import` filled. Anything else is refused as `existingStore` refuses it. */
export async function existingSnapshotSource(dir: string): Promise<string> {
  if (await holdsSnapshots(dir)) return dir;
  return existingStore(dir);
}

/** Where `snapshot-import` may write: a missing or empty directory, a store, or a directory of
 *  imported snapshots; a directory of other files is `CAIRN_NOT_A_STORE`. */
export async function snapshotDestination(dir: string): Promise<string> {
  if (await holdsSnapshots(dir)) return dir;
  await storeDirState(dir);
  return dir;
}
