/** A parsed target URL to its BackupTarget. The S3 client loads only when an s3:// target is used. */
import { resolve as resolvePath } from 'node:path';

import type { BackupTarget, ParsedTarget } from './target.js';
import { FileTarget } from './target-file.js';
import type { S3Settings } from './types.js';

export function openTarget(parsed: ParsedTarget, s3: S3Settings | undefined): BackupTarget {
  if (parsed.kind === 'file') return new FileTarget(parsed.url, resolvePath(parsed.path));
  return lazyS3(parsed.url, parsed.bucket, parsed.prefix, s3);
}

function lazyS3(url: string, bucket: string, prefix: string, settings: S3Settings | undefined): BackupTarget {
  let real: Promise<BackupTarget> | undefined;
  const get = () => (real ??= import('./target-s3.js').then((m) => new m.S3Target(url, bucket, prefix, settings)));
  return {
    url,
    list: async (p) => (await get()).list(p),
    get: async (k) => (await get()).get(k),
    put: async (k, d) => (await get()).put(k, d),
    delete: async (k) => (await get()).delete(k),
    cleanDebris: async () => (await get()).cleanDebris(),
    close: async () => {
      if (real) await (await real).close();
    },
  };
}
