/**
 * The operations layer of one open store: its history, metrics, status, health and HTTP
 * servers. `Store` creates one lazily and feeds it scrub reports; everything else is read from
 * the store (`OpsSource`) and the native engine's stats when asked.
 */
import type { NativeEngineStats } from '../native.js';
import type { ScrubReport } from '../scrub/index.js';
import { BackupCatalogs } from './backup-catalogs.js';
import { OpsHistory, SAMPLE_INTERVAL_MS } from './history.js';
import { type HttpServer, startHttpServer } from './http.js';
import { StoreMetrics } from './metrics.js';
import { type HealthReport, health, storeStatus, toJson } from './status.js';
import { asReplicationStatus, type BackupCatalog, type EngineStatsReader, type OpsSource, type ReplicationStatusLike } from './types.js';

export type { HttpServer, ServeHttpOptions } from './http.js';
export type { HealthReport, StoreStatus } from './status.js';

export class StoreOps {
  readonly history: OpsHistory;
  readonly #metrics: StoreMetrics;
  readonly #servers = new Set<HttpServer>();
  readonly #sampler: NodeJS.Timeout;
  #closed = false;

  constructor(
    private readonly source: OpsSource,
    private readonly readStats: EngineStatsReader,
    private readonly unreadableAtOpen: number,
  ) {
    this.history = new OpsHistory(source.dir);
    this.#metrics = new StoreMetrics(source, this.history, readStats);
    this.history.recordSample(readStats());
    this.#sampler = setInterval(() => this.history.recordSample(this.readStats()), SAMPLE_INTERVAL_MS).unref();
  }

  recordScrub(report: ScrubReport): void {
    this.history.recordScrub(report);
  }

  metrics(): Promise<string> {
    return this.#metrics.render();
  }

  async #replication(): Promise<ReplicationStatusLike | null> {
    if (typeof this.source.replicationStatus !== 'function') return null;
    return asReplicationStatus(await this.source.replicationStatus());
  }

  async health(): Promise<HealthReport> {
    return health({ ...this.#inputs(), replication: await this.#replication() });
  }

  /** `/status`; with `catalogs`, the backups section lists those targets' catalogs. */
  async status(catalogs?: BackupCatalogs): Promise<Awaited<ReturnType<typeof storeStatus>>> {
    const engine: NativeEngineStats = this.readStats();
    const listed = catalogs && catalogs.size > 0 ? await catalogs.read() : [];
    return storeStatus({ ...this.#inputs(), engine, replication: await this.#replication(), catalogs: listed });
  }

  #inputs() {
    return { source: this.source, history: this.history, unreadableAtOpen: this.unreadableAtOpen, closed: this.#closed };
  }

  async serveHttp(options: unknown): Promise<HttpServer> {
    let catalogs: BackupCatalogs | undefined;
    const server = await startHttpServer(options, {
      metrics: async () => ({ body: await this.metrics(), contentType: this.#metrics.contentType }),
      health: () => this.health(),
      status: (backups: BackupCatalog[]) => {
        catalogs ??= new BackupCatalogs(backups);
        return this.status(catalogs);
      },
      toJson,
    });
    this.#servers.add(server);
    const close = server.close.bind(server);
    return Object.assign(server, {
      close: () => {
        this.#servers.delete(server);
        return close();
      },
    });
  }

  /** Stop sampling and close every HTTP server this store started. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sampler);
    this.history.close();
    await Promise.all([...this.#servers].map((s) => s.close()));
  }
}
