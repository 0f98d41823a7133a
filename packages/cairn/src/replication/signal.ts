/** A wake-up for loops that wait for "something changed" (a commit, an ack) or a timeout. */
export class Signal {
  #waiters: Array<() => void> = [];

  notify(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  /** Resolves at the next `notify`, or after `timeoutMs`. */
  wait(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== done);
        resolve();
      }, timeoutMs);
      this.#waiters.push(done);
    });
  }
}
