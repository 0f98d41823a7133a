/** What the long-running commands (serve, replicate, node) share: required flags, token files, signals. */
import { readFileSync } from 'node:fs';

import { CairnError } from '../errors.js';
import { type CommandArgs, UsageError } from './command.js';

export function need(args: CommandArgs, command: string, name: string): string {
  const v = args.string(name);
  if (v === undefined || v === '') throw new UsageError(`${command} needs --${name}`);
  return v;
}

/** `a, b,,c` -> ['a', 'b', 'c']. */
export function commaList(v: string): string[] {
  return v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** The token file's bytes without a trailing newline (so `echo $TOKEN > f` works). */
export function readToken(file: string, flag = '--token-file'): string {
  try {
    return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (e) {
    throw new CairnError('CAIRN_IO', `cannot read ${flag} ${file}: ${(e as Error).message}`, { cause: e });
  }
}

/** Resolves at the first SIGINT or SIGTERM. */
export function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (s: NodeJS.Signals) => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(s);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}
