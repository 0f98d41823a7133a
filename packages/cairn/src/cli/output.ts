/** What several commands print: JSON documents, sizes, and a spinner on a terminal. */

export function json(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2);
}

export function megabytes(n: number): string {
  return `${(n / 1e6).toFixed(1)} MB`;
}

/** On a terminal, show elapsed time while a long operation runs; silent otherwise. */
export async function withProgress<T>(label: string, enabled: boolean, work: Promise<T>): Promise<T> {
  if (!enabled || !process.stderr.isTTY) return work;
  const start = Date.now();
  const frames = ['|', '/', '-', '\\'];
  let i = 0;
  const timer = setInterval(() => {
    process.stderr.write(`\r${frames[i++ % frames.length]} ${label} ${((Date.now() - start) / 1000).toFixed(1)}s`);
  }, 100);
  try {
    return await work;
  } finally {
    clearInterval(timer);
    process.stderr.write(`\r${' '.repeat(label.length + 12)}\r`);
  }
}
