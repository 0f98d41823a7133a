/**
 * BackupManagerOptions, validated once into the settings every backup operation reads. Messages
 * name the field; the checks run in the order the options are listed.
 */
import { resolve as resolvePath } from 'node:path';

import { invalidArgument } from '../errors.js';
import { Store } from '../store.js';
import { checkKnownKeys, checkPlainObject, checkPositiveInt } from '../validate.js';
import { type ChunkKeys, chunkKeys, parseKey } from './crypto.js';
import type { BackupKind } from './metadata.js';
import { type BackupTarget, parseTargetUrl } from './target.js';
import { openTarget } from './target-open.js';
import type { BackupClock, BackupExclude, BackupManagerOptions, S3Settings } from './types.js';

export interface BackupSettings {
  readonly source: string | Store;
  readonly targets: readonly BackupTarget[];
  readonly retention: { days?: number; count?: number };
  readonly level: number;
  readonly keys: ChunkKeys | null;
  readonly exclude: ReadonlySet<string>;
  readonly clock: BackupClock;
  readonly concurrency: number;
}

export const systemClock: BackupClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

const KINDS: readonly BackupKind[] = ['full', 'incremental', 'differential'];
const EXCLUDES: readonly BackupExclude[] = ['wal', 'live-wal'];
const ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function isBackupId(id: unknown): id is string {
  return typeof id === 'string' && ID.test(id);
}

/** `options.kind` of create and schedule; omitted means 'full'. */
export function checkKind(kind: unknown): BackupKind {
  const k = kind === undefined ? 'full' : kind;
  if (!KINDS.includes(k as BackupKind)) throw invalidArgument(`options.kind must be one of ${KINDS.map((x) => `'${x}'`).join(', ')}`);
  return k as BackupKind;
}

export function sourceDirOf(settings: BackupSettings): string {
  return settings.source instanceof Store ? settings.source.dir : settings.source;
}

export function parseSettings(options: BackupManagerOptions): BackupSettings {
  const o = checkPlainObject('options', options);
  checkKnownKeys('options', o, ['source', 'target', 'retention', 'compression', 'encryption', 'exclude', 'clock', 'concurrency', 's3']);
  let source: string | Store;
  if (o.source instanceof Store) source = o.source;
  else if (typeof o.source === 'string' && o.source !== '') source = resolvePath(o.source);
  else throw invalidArgument('options.source must be a store directory path or a Store');
  const urls = Array.isArray(o.target) ? o.target : [o.target];
  if (urls.length === 0) throw invalidArgument('options.target must name at least one target');
  const s3 = o.s3 === undefined ? undefined : (checkPlainObject('options.s3', o.s3) as S3Settings);
  if (s3) checkKnownKeys('options.s3', s3, ['endpoint', 'region', 'credentials', 'forcePathStyle']);
  const seen = new Set<string>();
  const targets = urls.map((u, i) => {
    const field = Array.isArray(o.target) ? `options.target[${i}]` : 'options.target';
    const parsed = parseTargetUrl(field, u);
    if (seen.has(parsed.url)) throw invalidArgument(`${field} repeats '${parsed.url}'`);
    seen.add(parsed.url);
    return openTarget(parsed, s3);
  });
  const retention: { days?: number; count?: number } = {};
  if (o.retention !== undefined) {
    const r = checkPlainObject('options.retention', o.retention);
    checkKnownKeys('options.retention', r, ['days', 'count']);
    if (r.days !== undefined) retention.days = checkPositiveInt('options.retention.days', r.days);
    if (r.count !== undefined) retention.count = checkPositiveInt('options.retention.count', r.count);
  }
  let level = 3;
  if (o.compression !== undefined) {
    const c = checkPlainObject('options.compression', o.compression);
    checkKnownKeys('options.compression', c, ['level']);
    if (c.level !== undefined) level = checkPositiveInt('options.compression.level', c.level, 19);
  }
  let keys: ChunkKeys | null = null;
  if (o.encryption !== undefined) {
    const e = checkPlainObject('options.encryption', o.encryption);
    checkKnownKeys('options.encryption', e, ['key']);
    keys = chunkKeys(parseKey('options.encryption.key', e.key));
  }
  const exclude = o.exclude ?? [];
  if (!Array.isArray(exclude)) throw invalidArgument(`options.exclude must be an array of ${EXCLUDES.map((x) => `'${x}'`).join(', ')}`);
  exclude.forEach((x, i) => {
    if (!EXCLUDES.includes(x as BackupExclude)) throw invalidArgument(`options.exclude[${i}] must be one of ${EXCLUDES.map((v) => `'${v}'`).join(', ')}`);
  });
  if (o.clock !== undefined) {
    const c = o.clock as Partial<BackupClock>;
    if (typeof c.now !== 'function' || typeof c.setTimeout !== 'function' || typeof c.clearTimeout !== 'function') {
      throw invalidArgument('options.clock must have now(), setTimeout(fn, ms) and clearTimeout(handle)');
    }
  }
  return {
    source,
    targets,
    retention,
    level,
    keys,
    exclude: new Set(exclude as string[]),
    clock: (o.clock as BackupClock | undefined) ?? systemClock,
    concurrency: o.concurrency === undefined ? 4 : checkPositiveInt('options.concurrency', o.concurrency, 64),
  };
}
