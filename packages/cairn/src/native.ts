import { createRequire } from 'node:module';

import type * as Native from '@cairn/native';

/** Shapes of the napi binding, as `napi build` generates them (crates/cairn-node/native.d.ts).
 *  Only this package talks to it. */
export type {
  NativeEngineStats,
  NativeFileCheck,
  NativeHistogram,
  NativeInstallOutcome,
  NativeManifest,
  NativeQuarantineNote,
  NativeRebuildOutcome,
  NativeSnapshotInfo,
  NativeStore,
} from '@cairn/native';

const require = createRequire(import.meta.url);
export const nativeModule = require('@cairn/native') as typeof Native;
/** Byte helpers of the native module (checksums, shuffle) for the archive code. */
export const nativeBytes = {
  xxh3Hex: (d: Buffer) => nativeModule.xxh3Hex(d),
  shuffle4: (d: Buffer) => nativeModule.shuffle4(d),
  unshuffle4: (d: Buffer) => nativeModule.unshuffle4(d),
};
