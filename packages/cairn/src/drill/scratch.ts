/** The drill's scratch area: copies of the source store, made by reading it only. */
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A fresh directory for one drill under `parent` (default: the OS temp directory). */
export async function makeScratch(parent: string | undefined): Promise<string> {
  return mkdtemp(join(parent ?? tmpdir(), 'cairn-drill-'));
}

/**
 * Copy the store in `source` to `dest` (absent), byte for byte. Hard links inside the source
 * (snapshots share inodes with `data/`) become independent files, so damage done to the copy
 * never reaches the source. A source being written meanwhile is copied as a crash would leave it.
 */
export async function copyStore(source: string, dest: string): Promise<void> {
  await cp(source, dest, { recursive: true, errorOnExist: true, force: false });
}

export async function removeScratch(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}
