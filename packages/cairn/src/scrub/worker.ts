/**
 * Piscina worker of the scrub pool (compiled to dist/scrub/worker.js): verifies one file in the
 * native core, on this worker thread. Throttling and cancellation are shared with every other
 * worker through the native scan control named by `scan`.
 */
import { nativeModule } from '../native.js';

export interface VerifyTask {
  scan: number;
  path: string;
  kind: string;
  bytes: number | null;
  xxh3: string | null;
}

/** Returns the JSON `FileCheck` (crates/cairn-core/src/scrub.rs). */
export default function verify(task: VerifyTask): string {
  return nativeModule.verifyFile(task.scan, task.path, task.kind, task.bytes, task.xxh3);
}
