/** A wake-up for loops that wait for "something changed" (a commit, an ack) or a timeout. */
export class Signal {
  #waiters: Array<() => void> = [];

  notify(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  /** Resolves true at the next `notify`, or false after `timeoutMs`. */
  wait(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== done);
        resolve(false);
      }, timeoutMs);
      this.#waiters.push(done);
    });
  }
}
