// A benchmark's data directory, emptied before each run.
import { mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** `root/name`, removed if it exists; its parent exists. */
export function freshDir(root, name) {
  const dir = join(root, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dirname(dir), { recursive: true });
  return dir;
}
