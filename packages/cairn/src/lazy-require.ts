/**
 * A dependency loaded on first use instead of at import: `import { open } from 'cairndb'` should
 * not pay for what only metrics, scrub, backups or replication need (prom-client alone adds
 * about 12 MiB of RSS and 30 ms to a process that never scrapes). Each of these packages ships
 * a CommonJS entry, so the first call loads it synchronously and later calls return it.
 */
import { createRequire } from 'node:module';

const load = createRequire(import.meta.url);

export function lazyRequire<T>(specifier: string): () => T {
  let loaded: T | undefined;
  return () => {
    loaded ??= load(specifier) as T;
    return loaded;
  };
}
