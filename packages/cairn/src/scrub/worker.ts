/**
 * Piscina worker of the scrub pool (compiled to dist/scrub/worker.js): verifies one file, or
 * hashes one range of a large file, in the native core on this worker thread. Throttling,
 * cancellation and the folding of a file's ranges are shared with every other worker through
 * the native scan control named by `scan`.
 */
import { transferableError } from '../errors.js';
import { type NativeFileCheck, nativeModule } from '../native.js';

export interface VerifyTask {
  op: 'file';
  scan: number;
  path: string;
  kind: string;
  bytes: number | null;
  xxh3: string | null;
}

/** Bytes `start..end` of a file being hashed by ranges (split `split` of the scan). */
export interface RangeTask {
  op: 'range';
  scan: number;
  split: number;
  path: string;
  start: number;
  end: number;
}

export type ScrubTask = VerifyTask | RangeTask;

/** A file: its `FileCheck` (crates/cairn-core/src/scrub.rs). A range: the bytes read. */
export default function run(task: ScrubTask): NativeFileCheck | number {
  try {
    if (task.op === 'range') return nativeModule.hashRange(task.scan, task.split, task.path, task.start, task.end);
    return nativeModule.verifyFile(task.scan, task.path, task.kind, task.bytes, task.xxh3);
  } catch (e) {
    throw transferableError(e);
  }
}
