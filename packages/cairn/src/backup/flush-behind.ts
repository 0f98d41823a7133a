/**
 * Flush-behind for a file written front to back: after every `every` bytes handed to it, one
 * background fdatasync starts (never two at once), so the disk takes the file while later
 * chunks are still being decoded, and the final fdatasync has little left to wait for. Without
 * it the kernel holds the whole file dirty until that final call and the decoders sit idle
 * while the disk catches up.
 */
import type { FileHandle } from 'node:fs/promises';

/** Bytes between background flushes. */
export const FLUSH_EVERY_BYTES = 64 << 20;

export class FlushBehind {
  readonly #file: FileHandle;
  readonly #every: number;
  #since = 0;
  #inFlight: Promise<void> | null = null;
  /** The first failed background flush: Linux reports a writeback error to one fdatasync only,
   *  so it is kept and thrown by `finish`, never lost to a later call that succeeds. */
  #error: unknown = null;

  constructor(file: FileHandle, every = FLUSH_EVERY_BYTES) {
    this.#file = file;
    this.#every = every;
  }

  /** `bytes` more were written (or queued to be). */
  wrote(bytes: number): void {
    this.#since += bytes;
    if (this.#since < this.#every || this.#inFlight !== null) return;
    this.#since = 0;
    this.#inFlight = this.#file.datasync().then(
      () => {
        this.#inFlight = null;
      },
      (e: unknown) => {
        this.#inFlight = null;
        this.#error ??= e;
      },
    );
  }

  /** Every byte written so far is durable, or this throws the first flush's failure. */
  async finish(): Promise<void> {
    await this.settled();
    if (this.#error !== null) throw this.#error;
    await this.#file.datasync();
  }

  /** The background flush, if any, has ended (never rejects): the file may then be closed. */
  async settled(): Promise<void> {
    await this.#inFlight;
  }
}
