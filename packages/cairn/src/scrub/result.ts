/**
 * The last scrub's result on disk (`SCRUB_RESULT`, docs/format.md "Scrub result"): counts only,
 * checksummed and atomically replaced by the native code after every scrub that ran to the
 * end, so that `cairn status`, `inspectStore` and `/status` can show it from any process.
 */
import { nativeSync } from '../errors.js';
import { nativeModule } from '../native.js';

/** The part of a `ScrubReport` that is recorded (typed here, so this leaf imports nothing of
 *  `scrub/index.ts`, which writes through it). */
export interface ScrubCounts {
  durationMs: number;
  files: number;
  bytes: number;
  corrupt: readonly unknown[];
  repaired: readonly unknown[];
  unrepaired: readonly unknown[];
}

export interface LastScrub {
  /** When it finished. */
  time: Date;
  durationMs: number;
  files: number;
  bytes: number;
  /** Damage found (file and offset each). */
  corrupt: number;
  repaired: number;
  unrepaired: number;
  /** The scrub was asked to repair. */
  repair: boolean;
}

export function writeLastScrub(dir: string, report: ScrubCounts, repair: boolean, time = new Date()): void {
  nativeSync(() =>
    nativeModule.writeScrubResult(dir, {
      timeMs: time.getTime(),
      durationMs: report.durationMs,
      files: report.files,
      bytes: report.bytes,
      corrupt: report.corrupt.length,
      repaired: report.repaired.length,
      unrepaired: report.unrepaired.length,
      repair,
    }),
  );
}

/** The last recorded scrub of the store in `dir`; null when none was recorded. A damaged file
 *  rejects with `CAIRN_CORRUPTION`. */
export function readLastScrub(dir: string): LastScrub | null {
  const r = nativeSync(() => nativeModule.readScrubResult(dir));
  if (!r) return null;
  const { timeMs, ...rest } = r;
  return { time: new Date(timeMs), ...rest };
}
