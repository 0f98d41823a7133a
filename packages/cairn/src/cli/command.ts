/** A CLI command: one row of the table `main.ts` dispatches from. */
import type { ParseArgsConfig } from 'node:util';

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
  /** Options of its own besides --json. */
  readonly options: OptionSpecs;
  /** Resolves to the exit status; a rejection prints `cairn: CODE: message` and exits 1. */
  run(args: CommandArgs): Promise<number>;
}
