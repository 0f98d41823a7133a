// db.metrics(): the Prometheus exposition is read back with a text-format parser, and each
// counter equals the work the test did (engine counters come from the native core).
import { BackupManager, open } from 'cairndb';
import { describe, expect, test } from 'vitest';

import { tempDir } from './helpers.js';
import { parseProm, sample, value } from './prom.js';

const DIM = 8;
const vec = (i: number) => Float32Array.from({ length: DIM }, (_, j) => Math.sin(i * 7 + j));

describe('metrics', () => {
  test('metrics_counters_equal_the_work_done', async () => {
    const dir = tempDir('cairn-metrics-');
    const db = await open(dir, { sync: 'always' });
    try {
      const docs = await db.createCollection('docs', { dim: DIM, metric: 'l2' });
      const batches = 7;
      const perBatch = 5;
      for (let b = 0; b < batches; b++) {
        await docs.upsert(Array.from({ length: perBatch }, (_, i) => ({ id: `r${b}-${i}`, vector: vec(b * perBatch + i), metadata: { b } })));
      }
      await docs.delete(['r0-0', 'r0-1']);
      for (let i = 0; i < 4; i++) await docs.query(vec(i), { k: 3 });
      for (let i = 0; i < 2; i++) await docs.query(vec(i), { k: 3, exact: true });
      await db.checkpoint();
      await db.snapshot();
      const report = await db.scrub();
      const backups = new BackupManager({ source: dir, target: `file://${tempDir('cairn-metrics-backup-')}` });
      await backups.create({ kind: 'full' });

      const text = await db.metrics();
      const m = await parseProm(text);
      const commits = 1 + batches + 1;
      expect(value(m, 'cairn_commits_total', { sync: 'always' })).toBe(commits);
      expect(value(m, 'cairn_records_written_total', { sync: 'always' })).toBe(1 + batches * perBatch + 2);
      const walBytes = value(m, 'cairn_wal_written_bytes_total', { sync: 'always' });
      expect(walBytes % 8).toBe(0);
      expect(walBytes).toBeGreaterThan(batches * perBatch * DIM * 4);
      // sync 'always': one fdatasync per commit, each its own group of one.
      const fsync = sample(m, 'cairn_wal_fsync_seconds', { sync: 'always' });
      expect(Number(fsync.count)).toBe(commits);
      expect(Number(fsync.buckets?.['+Inf'])).toBe(commits);
      expect(Number(fsync.sum)).toBeGreaterThan(0);
      const groups = sample(m, 'cairn_commit_group_size', { sync: 'always' });
      expect([Number(groups.count), Number(groups.sum), Number(groups.buckets?.['1'])]).toEqual([commits, commits, commits]);
      // A snapshot checkpoints first: two checkpoints.
      expect(value(m, 'cairn_checkpoints_total')).toBe(2);
      expect(Number(sample(m, 'cairn_checkpoint_duration_seconds').count)).toBe(2);
      // A collection this small is always searched exactly.
      expect(Number(sample(m, 'cairn_query_duration_seconds', { path: 'exact' }).count)).toBe(6);
      expect(Number(sample(m, 'cairn_query_duration_seconds', { path: 'graph' }).count)).toBe(0);
      expect(value(m, 'cairn_collection_rows', { collection: 'docs' })).toBe(batches * perBatch - 2);
      expect(value(m, 'cairn_last_seq')).toBe(Number(db.lastSeq));
      expect(value(m, 'cairn_poisoned')).toBe(0);
      expect(value(m, 'cairn_snapshots')).toBe(1);
      expect(value(m, 'cairn_snapshot_newest_age_seconds')).toBeGreaterThanOrEqual(0);
      expect(value(m, 'cairn_wal_bytes')).toBeGreaterThan(0);
      expect(value(m, 'cairn_wal_archive_bytes')).toBeGreaterThan(0);
      expect(value(m, 'cairn_scrub_runs_total')).toBe(1);
      expect(value(m, 'cairn_scrub_bytes_total')).toBe(report.bytes);
      expect(value(m, 'cairn_scrub_corruptions_total')).toBe(0);
      expect(value(m, 'cairn_scrub_unrepaired')).toBe(0);
      const target = backups.targets[0] as string;
      expect(value(m, 'cairn_backups_total', { target, result: 'ok' })).toBe(1);
      expect(value(m, 'cairn_backups_total', { target, result: 'failed' })).toBe(0);
      expect(value(m, 'cairn_backup_last_success_age_seconds', { target })).toBeGreaterThanOrEqual(0);
      // No replication on this store: its families are there, with no samples.
      expect(m.cairn_replication_lag_records?.data ?? []).toEqual([]);
      for (const [name, f] of Object.entries(m)) {
        if (f.type === 'counter') expect(name).toMatch(/_total$/);
        expect(name).toMatch(/^cairn_/);
      }
    } finally {
      await db.close();
    }
  });

  test('metrics_graph_queries_index_and_registry_per_store', async () => {
    const a = await open(tempDir('cairn-metrics-a-'), { sync: 'none' });
    const b = await open(tempDir('cairn-metrics-b-'), { sync: 'group' });
    try {
      const docs = await a.createCollection('big', { dim: DIM, metric: 'l2' });
      const rows = 3000;
      for (let s = 0; s < rows; s += 1000) {
        await docs.upsert(Array.from({ length: 1000 }, (_, i) => ({ id: `x${s + i}`, vector: vec(s + i) })));
      }
      await docs.waitForIndex();
      for (let i = 0; i < 5; i++) await docs.query(vec(i), { k: 5 });
      await b.createCollection('other', { dim: 2 });
      const ma = await parseProm(await a.metrics());
      const mb = await parseProm(await b.metrics());
      expect(Number(sample(ma, 'cairn_query_duration_seconds', { path: 'graph' }).count)).toBe(5);
      expect(value(ma, 'cairn_index_graph_nodes')).toBe(rows);
      expect(value(ma, 'cairn_index_pending_rows')).toBe(0);
      expect(value(ma, 'cairn_index_graph_bytes')).toBeGreaterThan(rows * DIM * 4);
      expect(value(ma, 'cairn_records_written_total', { sync: 'none' })).toBe(1 + rows);
      // sync 'none' never fsyncs a commit group.
      expect(Number(sample(ma, 'cairn_wal_fsync_seconds', { sync: 'none' }).count)).toBe(0);
      // Each store has its own registry: b counts only its own commit.
      expect(value(mb, 'cairn_commits_total', { sync: 'group' })).toBe(1);
      expect(((mb.cairn_collection_rows?.data ?? []) as Array<{ labels: Record<string, string> }>).map((s) => s.labels.collection)).toEqual(['other']);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('metrics off', () => {
  test('metrics_off_keeps_engine_figures_at_zero', async () => {
    const db = await open(tempDir('cairn-metrics-off-'), { sync: 'always', metrics: false });
    try {
      const docs = await db.createCollection('docs', { dim: 2 });
      await docs.upsert([{ id: 'a', vector: [1, 0] }]);
      await docs.query([1, 0], { k: 1 });
      const m = await parseProm(await db.metrics());
      expect(value(m, 'cairn_commits_total', { sync: 'always' })).toBe(0);
      expect(Number(sample(m, 'cairn_wal_fsync_seconds', { sync: 'always' }).count)).toBe(0);
      // Figures the recovery layer reads are still there.
      expect(value(m, 'cairn_collection_rows', { collection: 'docs' })).toBe(1);
      expect(value(m, 'cairn_last_seq')).toBe(2);
      await expect(open(tempDir('cairn-metrics-bad-'), { metrics: 'yes' as never })).rejects.toMatchObject({
        code: 'CAIRN_INVALID_ARGUMENT',
        message: 'options.metrics must be a boolean',
      });
    } finally {
      await db.close();
    }
  });
});
