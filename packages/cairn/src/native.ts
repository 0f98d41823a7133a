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
  NativeQueryResult,
  NativeReadKey,
  NativeReadView,
  NativeRebuildOutcome,
  NativeRow,
  NativeSnapshotInfo,
  NativeStore,
  NativeViewStats,
} from '@cairn/native';

const require = createRequire(import.meta.url);

/** The napi loader (generated) picks `cairn.<platform>.node` beside it or the platform package
 *  `cairndb-<platform>` (an optional dependency of `cairndb`, as napi-rs lays packages out). */
function loadNative(): typeof Native {
  try {
    return require('@cairn/native') as typeof Native;
  } catch (e) {
    const platform = `${process.platform}-${process.arch}`;
    throw new Error(
      `cairndb: no native addon loads on ${platform}: install the platform package for it (on Linux x64 with glibc: cairndb-linux-x64-gnu, an optional dependency npm installs with cairndb). Cause: ${(e as Error).message}`,
      { cause: e },
    );
  }
}

export const nativeModule = loadNative();

/** Runs a native byte transform into a fresh buffer of the input's length. */
function into(d: Buffer, transform: (data: Buffer, out: Buffer) => void): Buffer {
  const out = Buffer.allocUnsafe(d.length);
  transform(d, out);
  return out;
}

/** Byte helpers of the native module (checksums, shuffle) for the archive code. */
export const nativeBytes = {
  xxh3Hex: (d: Buffer) => nativeModule.xxh3Hex(d),
  shuffle4: (d: Buffer) => into(d, nativeModule.shuffle4),
  unshuffle4: (d: Buffer) => into(d, nativeModule.unshuffle4),
};
