/**
 * Byte progress of native work (restore, snapshot) that runs on the libuv pool: a handle the
 * native side counts into, polled every 200 ms and once more when the work settles.
 */
import { nativeModule } from './native.js';

export interface ByteProgress {
  bytes: number;
  totalBytes: number;
}

/** Run `work` with a progress handle when `onProgress` is given (with `null` otherwise). */
export async function withNativeProgress<T>(onProgress: ((p: ByteProgress) => void) | undefined, work: (handle: number | null) => Promise<T>): Promise<T> {
  if (!onProgress) return work(null);
  const handle = nativeModule.restoreProgressOpen();
  const report = () => onProgress(nativeModule.restoreProgress(handle));
  const timer = setInterval(report, 200);
  try {
    const out = await work(handle);
    report();
    return out;
  } finally {
    clearInterval(timer);
    nativeModule.restoreProgressClose(handle);
  }
}
