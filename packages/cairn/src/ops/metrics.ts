/**
 * `db.metrics()`: the Prometheus text exposition of one store, rendered by prom-client from a
 * registry of the store's own (never the global registry, so two stores in a process do not
 * mix). Engine figures (commits, fsync latency, group sizes, checkpoints, index, queries) are
 * the native core's counters and fixed-bucket histograms, read once per scrape through
 * `NativeStore.stats()`; the rest comes from the recovery layer: scrubs and backups as they
 * happen (`OpsHistory`), snapshots and WAL sizes from the directory at scrape time.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type * as PromClient from 'prom-client';
import { LAYOUT } from '../layout.js';
import { lazyRequire } from '../lazy-require.js';
import type { NativeEngineStats, NativeHistogram } from '../native.js';
import type { OpsHistory } from './history.js';
import { asReplicationStatus, type EngineStatsReader, type OpsSource, type ReplicationStatusLike } from './types.js';

type Labels = Record<string, string | number>;

const promClient = lazyRequire<typeof PromClient>('prom-client');

/**
 * A histogram whose buckets are kept elsewhere (the native core) and read at scrape time.
 * prom-client's own Histogram can only observe values; this presents precomputed buckets
 * through the metric interface its registry renders (name, help, type, get()).
 */
class ExternalHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly read: () => Array<{ labels: Labels; h: NativeHistogram }>,
  ) {}

  async get() {
    const values: Array<{ metricName: string; labels: Labels; value: number }> = [];
    for (const { labels, h } of this.read()) {
      let cumulative = 0;
      h.bounds.forEach((le, i) => {
        cumulative += h.counts[i] ?? 0;
        values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le }, value: cumulative });
      });
      values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le: '+Inf' }, value: h.count });
      values.push({ metricName: `${this.name}_sum`, labels, value: h.sum });
      values.push({ metricName: `${this.name}_count`, labels, value: h.count });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

/** Bytes of the regular files directly in `dir` (0 when it does not exist). */
async function dirBytes(dir: string): Promise<number> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return 0;
  }
  let total = 0;
  for (const n of names) {
    try {
      const s = await stat(join(dir, n));
      if (s.isFile()) total += s.size;
    } catch {
      // Moved or removed by a checkpoint meanwhile.
    }
  }
  return total;
}

export class StoreMetrics {
  readonly registry = new (promClient().Registry)();
  /** The engine's figures for the scrape in progress: one native call per scrape. */
  #stats: NativeEngineStats | null = null;
  #replication: ReplicationStatusLike | null = null;

  constructor(
    private readonly source: OpsSource,
    private readonly history: OpsHistory,
    private readonly readStats: EngineStatsReader,
  ) {
    this.#define();
  }

  /** The exposition, `text/plain; version=0.0.4`. */
  async render(): Promise<string> {
    this.#stats = this.readStats();
    this.#replication = typeof this.source.replicationStatus === 'function' ? asReplicationStatus(await this.source.replicationStatus()) : null;
    try {
      return await this.registry.metrics();
    } finally {
      this.#stats = null;
      this.#replication = null;
    }
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  #engine(): NativeEngineStats {
    const s = this.#stats ?? this.readStats();
    return s;
  }

  #define(): void {
    const registers = [this.registry];
    const engine = () => this.#engine();
    const sync = () => ({ sync: engine().sync });
    // A counter whose value is read, not incremented: reset and set on each collect.
    const readCounter = (name: string, help: string, labelNames: string[], read: () => Array<[Labels, number]>) =>
      new (promClient().Counter)({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.reset();
          for (const [labels, v] of read()) this.inc(labels, v);
        },
      });
    const readGauge = (name: string, help: string, labelNames: string[], read: () => Array<[Labels, number]> | Promise<Array<[Labels, number]>>) =>
      new (promClient().Gauge)({
        name,
        help,
        labelNames,
        registers,
        async collect() {
          this.reset();
          for (const [labels, v] of await read()) this.set(labels, v);
        },
      });

    // Engine: the write path.
    readCounter('cairn_commits_total', 'Committed batches (one WAL record each) since open, by sync mode.', ['sync'], () => [[sync(), engine().commits]]);
    readCounter(
      'cairn_records_written_total',
      'Operations (upserts, deletes, collection changes) in committed batches since open, by sync mode.',
      ['sync'],
      () => [[sync(), engine().records]],
    );
    readCounter('cairn_wal_written_bytes_total', 'Framed WAL bytes written for committed batches since open, by sync mode.', ['sync'], () => [
      [sync(), engine().walBytes],
    ]);
    const hist = (name: string, help: string, read: () => Array<{ labels: Labels; h: NativeHistogram }>) =>
      this.registry.registerMetric(new ExternalHistogram(name, help, read) as never);
    hist('cairn_wal_fsync_seconds', 'Latency of the WAL fdatasync that makes a commit group durable.', () => [{ labels: sync(), h: engine().fsync }]);
    hist('cairn_commit_group_size', 'Commits written together with one write (and one fsync unless sync is none).', () => [
      { labels: sync(), h: engine().groupSize },
    ]);
    readCounter('cairn_checkpoints_total', 'Checkpoints completed since open.', [], () => [[{}, engine().checkpoint.count]]);
    hist('cairn_checkpoint_duration_seconds', 'Duration of a checkpoint (capture, data and graph files, manifest, WAL archiving).', () => [
      { labels: {}, h: engine().checkpoint },
    ]);

    // Engine: index and queries.
    readGauge('cairn_index_pending_rows', 'Acknowledged rows not yet in the HNSW graph (searched exactly meanwhile), over every collection.', [], () => [
      [{}, engine().indexPending],
    ]);
    readGauge('cairn_index_graph_nodes', 'Rows in the HNSW graphs, over every collection.', [], () => [[{}, engine().graphNodes]]);
    readGauge('cairn_index_graph_tombstones', 'Deleted or overwritten nodes still in the HNSW graphs.', [], () => [[{}, engine().graphTombstones]]);
    readGauge('cairn_index_graph_bytes', 'Heap bytes held by the HNSW graphs and their vectors.', [], () => [[{}, engine().graphBytes]]);
    readCounter('cairn_index_compactions_total', 'HNSW graph compactions (rebuilds without tombstones) since open.', [], () => [[{}, engine().compactions]]);
    hist('cairn_query_duration_seconds', 'Latency of one k-NN query in the engine, by path: exact scan or HNSW graph.', () => [
      { labels: { path: 'exact' }, h: engine().queryExact },
      { labels: { path: 'graph' }, h: engine().queryGraph },
    ]);

    // Store state.
    readGauge('cairn_last_seq', 'Highest durable and visible sequence number.', [], () => [[{}, Number(this.source.lastSeq)]]);
    readGauge('cairn_poisoned', '1 when a failed write or fsync poisoned the store (writes refused), else 0.', [], () => [
      [{}, this.source.poisoned === null ? 0 : 1],
    ]);
    // Read views and transactions (absent for a source without them).
    const stats = () => this.source.stats?.();
    readGauge('cairn_read_views', 'Read views open, including the snapshot of each running transaction.', [], () => {
      const st = stats();
      return st ? [[{}, st.views.open]] : [];
    });
    readGauge('cairn_read_view_pinned_versions', 'Prior row versions kept alive for open read views.', [], () => {
      const st = stats();
      return st ? [[{}, st.views.pinnedVersions]] : [];
    });
    readCounter(
      'cairn_transactions_total',
      'Transactions since open by result: committed, conflict (refused at commit), aborted (abort or a throw), timed_out.',
      ['result'],
      () => {
        const t = stats()?.transactions;
        if (!t) return [];
        return [
          [{ result: 'committed' }, t.committed],
          [{ result: 'conflict' }, t.conflicts],
          [{ result: 'aborted' }, t.aborted],
          [{ result: 'timed_out' }, t.timedOut],
        ];
      },
    );
    readCounter('cairn_transaction_retries_total', 'Transaction functions re-run after a conflict since open.', [], () => {
      const t = stats()?.transactions;
      return t ? [[{}, t.retries]] : [];
    });
    readGauge('cairn_collection_rows', 'Live rows per collection.', ['collection'], () =>
      this.source.collections().map((c): [Labels, number] => [{ collection: c.name }, c.count]),
    );
    readGauge('cairn_wal_bytes', 'Bytes of the live WAL segments on disk (preallocated segments count whole).', [], async () => [
      [{}, await dirBytes(join(this.source.dir, LAYOUT.wal))],
    ]);
    readGauge('cairn_wal_archive_bytes', 'Bytes of the WAL archive on disk (point-in-time recovery and replica catch-up read it).', [], async () => [
      [{}, await dirBytes(join(this.source.dir, LAYOUT.archive))],
    ]);
    readGauge('cairn_snapshots', 'Snapshots kept.', [], async () => [[{}, (await this.source.snapshots()).length]]);
    readGauge('cairn_snapshot_newest_age_seconds', 'Age of the newest snapshot (absent when there is none).', [], async () => {
      const newest = (await this.source.snapshots()).reduce((t, s) => Math.max(t, s.time.getTime()), Number.NEGATIVE_INFINITY);
      return Number.isFinite(newest) ? [[{}, (Date.now() - newest) / 1000]] : [];
    });

    // Scrubs since open.
    const h = this.history;
    readCounter('cairn_scrub_runs_total', 'Scrubs completed since open.', [], () => [[{}, h.scrubTotals.runs]]);
    readCounter('cairn_scrub_bytes_total', 'Bytes read and verified by scrubs since open.', [], () => [[{}, h.scrubTotals.bytes]]);
    readCounter('cairn_scrub_corruptions_total', 'Damaged files found by scrubs since open.', [], () => [[{}, h.scrubTotals.corrupt]]);
    readCounter('cairn_scrub_repairs_total', 'Damaged files repaired by scrubs since open.', [], () => [[{}, h.scrubTotals.repaired]]);
    readGauge('cairn_scrub_unrepaired', 'Damage the last scrub left in place: unrepaired files plus unreadable records.', [], () => {
      const last = h.lastScrub;
      return last ? [[{}, last.unrepaired + last.unreadableRecords]] : [];
    });
    readGauge('cairn_scrub_last_timestamp_seconds', 'When the last scrub finished (Unix time).', [], () => {
      const last = h.lastScrub;
      return last ? [[{}, last.time.getTime() / 1000]] : [];
    });

    // Backups of this store taken in this process.
    readCounter('cairn_backups_total', 'Backup attempts by target and result (ok, failed).', ['target', 'result'], () =>
      [...h.backups.values()].flatMap(
        (t): Array<[Labels, number]> => [
          [{ target: t.target, result: 'ok' }, t.ok],
          [{ target: t.target, result: 'failed' }, t.failed],
        ],
      ),
    );
    readGauge('cairn_backup_last_success_age_seconds', 'Age of the last good backup per target.', ['target'], () =>
      [...h.backups.values()].flatMap(
        (t): Array<[Labels, number]> => (t.lastGood ? [[{ target: t.target }, (Date.now() - t.lastGood.time.getTime()) / 1000]] : []),
      ),
    );

    // Replication, when the store reports it (`db.replicationStatus()`).
    const repl = () => this.#replication;
    readGauge('cairn_replication_role', 'The node role (label) set to 1.', ['role'], () => {
      const r = repl();
      return r?.role ? [[{ role: r.role }, 1]] : [];
    });
    readGauge('cairn_replication_epoch', 'The leadership epoch this node knows.', [], () => {
      const r = repl();
      return r?.epoch !== undefined ? [[{}, Number(r.epoch)]] : [];
    });
    readGauge('cairn_replication_lag_records', 'Records a replica is behind the primary.', ['replica'], () =>
      (repl()?.replicas ?? []).flatMap((x): Array<[Labels, number]> => (x.lagRecords === undefined ? [] : [[{ replica: x.nodeId }, x.lagRecords]])),
    );
    readGauge('cairn_replication_lag_seconds', 'How far behind the primary a replica is, in time.', ['replica'], () =>
      (repl()?.replicas ?? []).flatMap((x): Array<[Labels, number]> => (x.lagMs === undefined ? [] : [[{ replica: x.nodeId }, x.lagMs / 1000]])),
    );
  }
}
