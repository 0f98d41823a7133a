#!/usr/bin/env node
/** The `cairn` executable (package.json `bin`): runs the command line and exits with its status. */
import { main } from './cli/main.js';
import { CairnError } from './errors.js';

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    if (e instanceof CairnError) process.stderr.write(`cairn: ${e.code}: ${e.message}\n`);
    else process.stderr.write(`cairn: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
