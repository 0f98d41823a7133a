/**
 * The backups a store's operator configured, read from the targets' own catalogs for `/status`:
 * what each target holds, whoever made it (a cron job in another process, `cairn backup`, this
 * process). The store learns its targets from `serveHttp({ backups })`, which takes the
 * `BackupManager`s that write them (they carry the S3 settings and keys), or from
 * `cairn serve --backup-target URL`. Listing a target costs requests, so each is listed at
 * most once per `CATALOG_TTL_MS`; the dashboard polls every second.
 */
import type { BackupCatalog, BackupListing } from './types.js';

export const CATALOG_TTL_MS = 10_000;

export interface CatalogEntry {
  target: string;
  /** Completed backups on the target. */
  ok: number;
  /** Listed but not usable: failed, corrupted or never finished. */
  failed: number;
  last: { ok: boolean; id: string; kind: string; time: Date; error?: string } | null;
  lastGood: { id: string; kind: string; time: Date } | null;
  /** Why the target could not be listed (then the counts are zero). */
  error: string | null;
}

function entries(listing: BackupListing[], targets: string[]): CatalogEntry[] {
  const by = new Map<string, CatalogEntry>(targets.map((t) => [t, { target: t, ok: 0, failed: 0, last: null, lastGood: null, error: null }]));
  for (const b of [...listing].sort((x, y) => x.timestamp.getTime() - y.timestamp.getTime())) {
    const e = by.get(b.target) ?? { target: b.target, ok: 0, failed: 0, last: null, lastGood: null, error: null };
    const good = b.status === 'completed';
    if (good) {
      e.ok += 1;
      e.lastGood = { id: b.id, kind: b.kind, time: b.timestamp };
    } else e.failed += 1;
    e.last = { ok: good, id: b.id, kind: b.kind, time: b.timestamp, ...(good ? {} : { error: b.error ?? b.status }) };
    by.set(b.target, e);
  }
  return [...by.values()];
}

export class BackupCatalogs {
  readonly #catalogs: BackupCatalog[];
  #cached: { at: number; entries: Promise<CatalogEntry[]> } | null = null;

  constructor(catalogs: BackupCatalog[]) {
    this.#catalogs = catalogs;
  }

  get size(): number {
    return this.#catalogs.length;
  }

  /** One entry per configured target, listed at most once per `CATALOG_TTL_MS`. */
  read(now = performance.now()): Promise<CatalogEntry[]> {
    if (this.#cached && now - this.#cached.at < CATALOG_TTL_MS) return this.#cached.entries;
    const read = Promise.all(
      this.#catalogs.map(async (c) => {
        try {
          return entries(await c.list(), c.targets);
        } catch (e) {
          const message = e instanceof Error ? e.message : String(e);
          return c.targets.map((target) => ({ target, ok: 0, failed: 0, last: null, lastGood: null, error: message }));
        }
      }),
    ).then((all) => all.flat());
    this.#cached = { at: now, entries: read };
    return read;
  }
}
