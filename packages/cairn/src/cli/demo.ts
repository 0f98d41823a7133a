/** `cairn demo`: the guided tour (ingest, query, SIGKILL a writer, recover, restore). */
import { runDemo } from '../demo.js';
import type { Command } from './command.js';

export const demo: Command = {
  name: 'demo',
  help: '  demo [--dir DIR] [--json]  ingest, query, SIGKILL a writer mid-stream, recover and verify\n',
  options: { dir: { type: 'string' } },
  run: (args) => runDemo({ dir: args.string('dir'), json: args.json }),
};
