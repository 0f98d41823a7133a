/**
 * Requests sent on one connection and waiting for their answer frame (REPAIR_RESPONSE,
 * WAL_RANGE_RESPONSE), matched by request id. Every request settles exactly once: with its
 * answer, with `onTimeout`'s value when none comes in time, or with `abandon`'s when the
 * connection ends; a late answer is ignored.
 */
export class PendingRequests<T> {
  #next = 1;
  readonly #waiting = new Map<number, { resolve: (answer: T) => void; timer: NodeJS.Timeout }>();

  /** A request id and the answer it gets: `onTimeout()` if none comes in `timeoutMs`. */
  open(timeoutMs: number, onTimeout: () => T): { requestId: number; answer: Promise<T> } {
    const requestId = this.#next;
    this.#next = (this.#next % 0xffff_ffff) + 1;
    const answer = new Promise<T>((resolve) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(requestId);
        resolve(onTimeout());
      }, timeoutMs);
      timer.unref();
      this.#waiting.set(requestId, { resolve, timer });
    });
    return { requestId, answer };
  }

  /** False when nothing waits for it (answered after its timeout: ignored). */
  settle(requestId: number, answer: T): boolean {
    const w = this.#waiting.get(requestId);
    if (!w) return false;
    this.#waiting.delete(requestId);
    clearTimeout(w.timer);
    w.resolve(answer);
    return true;
  }

  /** `settle` from an answer frame's payload. */
  settleWith(r: { requestId: number; copies: T }): boolean {
    return this.settle(r.requestId, r.copies);
  }

  /** The connection ended: every waiting request gets `answer()`. */
  abandon(answer: () => T): void {
    for (const [id, w] of this.#waiting) {
      clearTimeout(w.timer);
      this.#waiting.delete(id);
      w.resolve(answer());
    }
  }
}
