/** What several commands print: JSON documents, sizes, CLI wording of library messages. */

/** API option names in a message, as the CLI spells them (its own flags and variables). */
const CLI_NAMES: ReadonlyArray<[string, string]> = [
  ['options.encryption.key', 'CAIRN_BACKUP_KEY'],
  ['options.encryption', 'CAIRN_BACKUP_KEY'],
  ['options.to.seq', '--seq'],
  ['options.to.time', '--time'],
  ['options.target', '--to'],
  ['options.throttleMBps', '--throttle'],
  ['options.concurrency', '--concurrency'],
  ['options.token', '--token-file'],
];

/** A library message reworded for the command line. */
export function cliText(message: string): string {
  let out = message;
  for (const [api, cli] of CLI_NAMES) out = out.split(api).join(cli);
  return out;
}

export function json(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2);
}

export function megabytes(n: number): string {
  return `${(n / 1e6).toFixed(1)} MB`;
}
