#!/usr/bin/env node
/** The `cairn` executable (package.json `bin`): runs the command line and exits with its status
 *  (explicitly: a scrub's worker pool would otherwise keep the process alive). */
import { main } from './cli/main.js';

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`cairn: CAIRN_INTERNAL: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
