//! The store: the `Engine` API and the state its threads share.
//!
//! - `open.rs`: open (lock, manifest, checkpoint load, WAL replay, quarantine) and close.
//! - `load.rs`: loading the checkpoint files the manifest names, repairing records from the WAL.
//! - `commit.rs`: the commit thread: validation, group commit, WAL framing and fsync.
//! - `digest.rs`: content digests of a collection's rows (what a recovery drill compares).
//! - `query.rs`: reads and k-NN queries; every row returned is checked against its checksum.
//! - `checkpoint.rs`: capturing the state, writing data and graph files, replacing the manifest.
//! - `retention.rs`: archiving covered WAL segments, archive retention, orphan file removal.
//! - `replication.rs`: shipping WAL records to replicas, applying them on one, and waiting for
//!   a sequence number.
//! - `read_view.rs`: read views, answering as of one pinned seq (versions: `crate::versions`).
//! - `transaction.rs`: optimistic transactions: the conflict check the commit thread runs.
//! - `row_repair.rs`: serving a verified copy of a record and installing one fetched from
//!   another node in place of a damaged one (read-repair, scrub from replicas).
//!
//! Write path: a caller submits an encoded batch; the commit thread validates it against the
//! schema, frames it into the WAL, fdatasyncs according to the sync mode, applies it to the
//! in-memory state and only then completes the caller. So a reader never sees a write that
//! could still be lost, and a failed write or fsync is never acknowledged.
//!
//! A failed write, fsync or checkpoint poisons the store (`poison`): every later write is
//! refused with `Error::Poisoned`, never retried.

mod checkpoint;
mod commit;
mod digest;
mod load;
mod open;
mod payload_index;
mod query;
mod read_view;
mod replication;
mod retention;
mod row_repair;
mod select;
mod staged;
mod transaction;
pub mod truncate;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;

use crate::batch::{self, Op};
use crate::error::{Error, Result};
use crate::index::{IndexStats, Indexer};
use crate::manifest::Manifest;
use crate::metrics::{EngineMetrics, HistogramSnapshot};
use crate::state::State;
use crate::storage::{OsStorage, Storage};
use crate::sync::{lock, read};
use crate::wal::recovery::{RecoveryMode, RecoveryReport};
use crate::wal::ship::ShipCursor;
use crate::wal::writer::Prealloc;
use checkpoint::Capture;
pub use digest::{row_digest, RowDigests};
pub use payload_index::PayloadIndexInfo;
pub use query::{CollectionInfo, QueryOutput};
pub use read_view::{ReadView, ViewStats};
pub use row_repair::{DamagedRow, RowCopy, RowRepairOutcome};
pub use select::{ScannedRow, MAX_SCAN_PAGE};
pub use staged::StagedBatch;
pub use transaction::ConflictCheck;

/// How far a write is durable when its promise resolves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Written to the OS page cache only: survives a process crash, not a power cut.
    None,
    /// Concurrent commits share one fdatasync; each completes after the fsync that covers it.
    /// Survives a power cut.
    Group,
    /// Every commit gets its own fdatasync before it completes. Survives a power cut.
    Always,
}

impl SyncMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::None => "none",
            SyncMode::Group => "group",
            SyncMode::Always => "always",
        }
    }

    pub fn parse(s: &str) -> Option<SyncMode> {
        match s {
            "none" => Some(SyncMode::None),
            "group" => Some(SyncMode::Group),
            "always" => Some(SyncMode::Always),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct Options {
    pub sync: SyncMode,
    pub recovery: RecoveryMode,
    pub segment_bytes: u64,
    pub prealloc: Prealloc,
    pub storage: Arc<dyn Storage>,
    /// WAL archive retention, applied after each checkpoint: archived segments older than this
    /// (by last write) are deleted, oldest first. None keeps them forever.
    pub archive_max_age_ms: Option<u64>,
    /// WAL archive retention: delete the oldest archived segments while the archive is larger.
    pub archive_max_bytes: Option<u64>,
    /// Open as a replica: local writes (`submit`, `commit`) are refused with
    /// `Error::NotPrimary`, and records come only from the primary through `submit_replicated`.
    /// The same directory may later be opened with `false` (failover); it continues from its
    /// last sequence number.
    pub replica: bool,
    /// Keep the counters and histograms of `Engine::stats` (a few relaxed atomic adds and two
    /// clock reads per commit group). Off: they all stay zero.
    pub metrics: bool,
    /// Share of one core the background indexer may use while writes arrive, in [0, 1]; it uses
    /// every core once they stop (`index.rs`, `Indexer`).
    pub index_write_share: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: SyncMode::Group,
            recovery: RecoveryMode::TolerateTornTail,
            segment_bytes: 32 << 20,
            prealloc: Prealloc::Background,
            storage: Arc::new(OsStorage),
            archive_max_age_ms: None,
            archive_max_bytes: None,
            replica: false,
            metrics: true,
            index_write_share: crate::index::DEFAULT_WRITE_SHARE,
        }
    }
}

/// Completes a commit on the commit thread. A success is called once the record is durable,
/// with the state's write lock held until the record is applied: it must hand the result on
/// (a channel, a queue) and never read the engine, which would wait for itself.
pub type CommitCallback = Box<dyn FnOnce(Result<u64>) + Send>;

/// Completes a `deleteWhere`: (seq, rows deleted), or the error that refused it.
pub type DeleteWhereCallback = Box<dyn FnOnce(Result<(u64, usize)>) + Send>;

/// Work for the commit thread, handled in arrival order.
enum Request {
    Commit {
        payload: Vec<u8>,
        done: CommitCallback,
        /// A transaction's conflict check (`transaction.rs`); None for a plain batch.
        check: Option<Box<transaction::ConflictCheck>>,
    },
    /// Framed records from the primary, applied with their own sequence numbers and times.
    Replicated { bytes: Vec<u8>, done: CommitCallback },
    /// Delete the rows matching a filter: resolved on the commit thread into one batch of
    /// deletes against the state as of the record before it (see `select.rs`).
    DeleteWhere { collection: String, filter: crate::filter::Filter, done: DeleteWhereCallback },
    /// A checkpoint's capture, taken between groups (see `checkpoint::capture`).
    Capture { done: std::sync::mpsc::Sender<Result<Capture>> },
    /// One chunk of a staged batch, decoded between groups (`staged.rs`).
    Stage { batch: StagedBatch, chunk: Vec<u8> },
    /// Commit a staged batch whose chunks were queued before this.
    CommitStaged { batch: StagedBatch, done: CommitCallback },
}

struct Queue {
    requests: VecDeque<Request>,
    shutdown: bool,
    /// The commit thread is waiting on `queue_cv`: only then does a submit need to wake it, which
    /// spares a futex syscall per commit while it is busy with earlier groups.
    idle: bool,
}

/// What the API, the commit thread and checkpoints share. Only the commit thread applies
/// records to `state` (open does before it starts); checkpoints change only its file lists.
/// `last_seq` is the last sequence number applied.
struct Shared {
    dir: PathBuf,
    opts: Options,
    state: RwLock<State>,
    queue: Mutex<Queue>,
    queue_cv: Condvar,
    poisoned: Mutex<Option<String>>,
    closed: AtomicBool,
    last_seq: AtomicU64,
    /// The manifest as last written; replaced only under `checkpoint_lock`.
    manifest: Mutex<Manifest>,
    checkpoint_lock: Mutex<()>,
    indexer: Indexer,
    /// Where recent `read_wal` chunks ended, so that a live tail resumes without a rescan.
    ship_cursors: Mutex<VecDeque<ShipCursor>>,
    /// `wait_for_seq` callers sleep on `seq_cv`; the commit thread takes `seq_lock` and
    /// notifies only while `seq_waiters` is non-zero (see `notify_seq`).
    seq_waiters: AtomicUsize,
    seq_lock: Mutex<()>,
    seq_cv: Condvar,
    metrics: EngineMetrics,
}

/// An open store. Dropping it closes it; `close` reports what the drop would swallow.
pub struct Engine {
    shared: Arc<Shared>,
    commit_thread: Mutex<Option<JoinHandle<()>>>,
    lock: Mutex<Option<Box<dyn std::any::Any + Send + Sync>>>,
    report: RecoveryReport,
}

impl Engine {
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The storage every file operation of this store goes through (snapshot and scrub too).
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.shared.opts.storage
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    fn check_open(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Submit an encoded batch (see `batch.rs`). `done` runs on the commit thread once the
    /// batch is durable per the sync mode and visible, or with the error that refused it.
    pub fn submit(&self, payload: Vec<u8>, done: CommitCallback) {
        if self.shared.opts.replica {
            return done(Err(not_primary()));
        }
        self.enqueue(Request::Commit { payload, done, check: None });
    }

    /// Submit a delete by filter (see `select.rs`, `delete_where`).
    pub fn submit_delete_where(&self, collection: String, filter: crate::filter::Filter, done: DeleteWhereCallback) {
        if self.shared.opts.replica {
            return done(Err(not_primary()));
        }
        self.enqueue(Request::DeleteWhere { collection, filter, done });
    }

    /// Queue a write request for the commit thread, or complete it with the error that refuses it.
    fn enqueue(&self, req: Request) {
        let refuse = |req: Request, e: Error| match req {
            Request::Commit { done, .. } | Request::Replicated { done, .. } => done(Err(e)),
            Request::CommitStaged { batch, done } => {
                batch.abort();
                done(Err(e))
            }
            Request::Stage { batch, .. } => batch.abort(),
            Request::DeleteWhere { done, .. } => done(Err(e)),
            Request::Capture { done } => {
                let _ = done.send(Err(e));
            }
        };
        if let Err(e) = self.check_open() {
            return refuse(req, e);
        }
        if let Some(p) = lock(&self.shared.poisoned).clone() {
            return refuse(req, Error::Poisoned(p));
        }
        let mut q = lock(&self.shared.queue);
        if q.shutdown {
            drop(q);
            return refuse(req, Error::Closed);
        }
        q.requests.push_back(req);
        let wake = q.idle;
        drop(q);
        if wake {
            self.shared.queue_cv.notify_one();
        }
    }

    /// Blocking form of `submit`.
    pub fn commit(&self, ops: &[Op]) -> Result<u64> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.submit(
            batch::encode(ops),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(Error::Closed))
    }

    pub fn last_seq(&self) -> u64 {
        self.shared.last_seq.load(Ordering::Acquire)
    }

    pub fn poisoned(&self) -> Option<String> {
        lock(&self.shared.poisoned).clone()
    }

    /// What the engine has counted since open, and the index's current state over every
    /// collection. Works on a closed store too (the counters outlive the close).
    pub fn stats(&self) -> EngineStats {
        let m = &self.shared.metrics;
        let indexes: Vec<_> = read(&self.shared.state).collections.values().map(|c| c.index.clone()).collect();
        let mut index = IndexStats::default();
        for s in indexes.iter().map(|i| i.stats()) {
            index.indexed += s.indexed;
            index.pending += s.pending;
            index.tombstones += s.tombstones;
            index.bytes += s.bytes;
        }
        EngineStats {
            sync: self.shared.opts.sync,
            commits: m.commits.get(),
            records: m.records.get(),
            wal_bytes: m.wal_bytes.get(),
            fsync: m.fsync.snapshot(),
            group_size: m.group_size.snapshot(),
            checkpoint: m.checkpoint.snapshot(),
            query_exact: m.query_exact.snapshot(),
            query_graph: m.query_graph.snapshot(),
            compactions: self.shared.indexer.compactions.get(),
            index,
        }
    }
}

/// `Engine::stats`: counters since open, and the index summed over collections.
#[derive(Clone, Debug)]
pub struct EngineStats {
    pub sync: SyncMode,
    pub commits: u64,
    pub records: u64,
    pub wal_bytes: u64,
    pub fsync: HistogramSnapshot,
    pub group_size: HistogramSnapshot,
    pub checkpoint: HistogramSnapshot,
    pub query_exact: HistogramSnapshot,
    pub query_graph: HistogramSnapshot,
    pub compactions: u64,
    pub index: IndexStats,
}

fn not_primary() -> Error {
    Error::NotPrimary("this store is a replica: it takes writes only from its primary's replication stream".into())
}

/// Wake `wait_for_seq` callers after `last_seq` moved (or the store closed). Callers register in
/// `seq_waiters` before they check `last_seq` under `seq_lock`; with both sides SeqCst, either
/// this sees the registration and notifies under the lock, or the caller sees the new value.
fn notify_seq(shared: &Shared) {
    std::sync::atomic::fence(Ordering::SeqCst);
    if shared.seq_waiters.load(Ordering::SeqCst) > 0 {
        drop(lock(&shared.seq_lock));
        shared.seq_cv.notify_all();
    }
}

/// Refuse every later write with `Error::Poisoned(reason)`; the first reason is kept.
fn poison(shared: &Shared, reason: &str) {
    let mut p = lock(&shared.poisoned);
    if p.is_none() {
        *p = Some(reason.to_string());
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::batch::{CollectionSpec, Op};
    use crate::distance::Metric;

    /// The counters equal the work done: one commit per batch, one record per op, the framed
    /// bytes the WAL grew by, one fsync per group in `always`, one checkpoint, and each query
    /// on the path it took.
    #[test]
    fn stats_count_the_work_done() {
        let opts = Options {
            sync: SyncMode::Always,
            storage: Arc::new(crate::fault::FaultStorage::new()),
            prealloc: crate::wal::writer::Prealloc::Off,
            ..Options::default()
        };
        let e = Engine::open(Path::new("/store"), opts).expect("open");
        let spec = CollectionSpec { name: "c".into(), dim: 2, metric: Metric::L2, m: 16, ef_construction: 64 };
        e.commit(&[Op::CreateCollection(spec)]).expect("create");
        for i in 0..5 {
            let ups: Vec<Op> = (0..3)
                .map(|j| Op::Upsert {
                    collection: "c".into(),
                    id: format!("r{i}-{j}"),
                    vector: vec![i as f32, j as f32].into(),
                    metadata: "null".into(),
                })
                .collect();
            e.commit(&ups).expect("upsert");
        }
        e.query_exact("c", &[0.0, 0.0], 2, None).expect("exact");
        e.query("c", &[0.0, 0.0], 2, 16, None).expect("small collections are searched exactly");
        e.checkpoint().expect("checkpoint");
        let s = e.stats();
        assert_eq!(s.sync, SyncMode::Always);
        assert_eq!((s.commits, s.records), (6, 1 + 5 * 3));
        assert!(s.wal_bytes > 0 && s.wal_bytes.is_multiple_of(8), "records are 8-byte aligned: {}", s.wal_bytes);
        assert_eq!(s.fsync.count, 6, "always: one fsync per commit");
        assert_eq!((s.group_size.count, s.group_size.sum), (6, 6.0));
        assert_eq!(s.checkpoint.count, 1);
        assert_eq!((s.query_exact.count, s.query_graph.count), (2, 0));
        e.wait_for_index("c").expect("index");
        let s = e.stats();
        assert_eq!((s.index.indexed, s.index.pending), (15, 0));
        e.close().expect("close");
    }

    #[test]
    fn stats_stay_zero_with_metrics_off() {
        let opts = Options {
            metrics: false,
            storage: Arc::new(crate::fault::FaultStorage::new()),
            prealloc: crate::wal::writer::Prealloc::Off,
            ..Options::default()
        };
        let e = Engine::open(Path::new("/store"), opts).expect("open");
        let spec = CollectionSpec { name: "c".into(), dim: 2, metric: Metric::L2, m: 16, ef_construction: 64 };
        e.commit(&[Op::CreateCollection(spec)]).expect("create");
        e.query_exact("c", &[0.0, 0.0], 1, None).expect("query");
        e.checkpoint().expect("checkpoint");
        let s = e.stats();
        assert_eq!((s.commits, s.records, s.wal_bytes), (0, 0, 0));
        assert_eq!((s.fsync.count, s.group_size.count, s.checkpoint.count, s.query_exact.count), (0, 0, 0, 0));
        e.close().expect("close");
    }

    /// A closed store drops its rows and graphs at close, not when its owner is dropped (a JS
    /// wrapper may outlive it by many GCs); reads that reach the state afterwards see `Closed`.
    #[test]
    fn close_releases_rows_and_graphs() {
        let opts = Options {
            storage: Arc::new(crate::fault::FaultStorage::new()),
            prealloc: crate::wal::writer::Prealloc::Off,
            ..Options::default()
        };
        let e = Engine::open(Path::new("/store"), opts).expect("open");
        let spec = CollectionSpec { name: "c".into(), dim: 2, metric: Metric::L2, m: 16, ef_construction: 64 };
        e.commit(&[Op::CreateCollection(spec)]).expect("create");
        let ups: Vec<Op> = (0..50)
            .map(|i| Op::Upsert {
                collection: "c".into(),
                id: format!("r{i}"),
                vector: vec![i as f32, 1.0].into(),
                metadata: "null".into(),
            })
            .collect();
        e.commit(&ups).expect("upsert");
        let index = crate::sync::read(&e.shared.state).collection("c").expect("c").index.clone();
        e.close().expect("close");
        let st = crate::sync::read(&e.shared.state);
        assert!(st.collections.is_empty() && st.touched.is_empty());
        assert!(matches!(st.collection("c"), Err(Error::Closed)));
        drop(st);
        assert_eq!(Arc::strong_count(&index), 1, "only this test still holds the graph");
        assert!(matches!(e.get("c", "r1"), Err(Error::Closed)));
    }

    /// One copy of each vector: after indexing, and again after a reopen that reads the graph
    /// from its file, every row's vector is held by the row and its graph node and nothing else.
    #[test]
    fn rows_and_graph_share_each_vector_before_and_after_a_reopen() {
        for metric in [Metric::Cosine, Metric::L2] {
            let storage = Arc::new(crate::fault::FaultStorage::new());
            let opts = || Options { storage: storage.clone(), prealloc: crate::wal::writer::Prealloc::Off, ..Options::default() };
            let holders = |e: &Engine| -> Vec<usize> {
                let st = crate::sync::read(&e.shared.state);
                st.collection("c").expect("c").rows.values().map(|r| crate::shared_vector::SharedVector::strong_count(&r.vector)).collect()
            };
            let e = Engine::open(Path::new("/store"), opts()).expect("open");
            let spec = CollectionSpec { name: "c".into(), dim: 3, metric, m: 8, ef_construction: 32 };
            e.commit(&[Op::CreateCollection(spec)]).expect("create");
            let ups: Vec<Op> = (0..3_000)
                .map(|i| Op::Upsert {
                    collection: "c".into(),
                    id: format!("r{i}"),
                    vector: vec![i as f32, 1.0 + (i % 7) as f32, -0.5].into(),
                    metadata: "null".into(),
                })
                .collect();
            e.commit(&ups).expect("upsert");
            drop(ups);
            e.wait_for_index("c").expect("indexed");
            // The indexer drops its own handles on the chunk it inserted just after the rows
            // leave `pending`, so wait (bounded) for that.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !holders(&e).iter().all(|&n| n == 2) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert!(holders(&e).iter().all(|&n| n == 2), "{metric:?}: indexed rows");
            e.checkpoint().expect("checkpoint");
            e.close().expect("close");
            let e = Engine::open(Path::new("/store"), opts()).expect("reopen");
            let h = holders(&e);
            assert_eq!(h.len(), 3_000);
            assert!(h.iter().all(|&n| n == 2), "{metric:?}: after reopen, holders {:?}", &h[..5]);
            assert!(e.recovery_report().index_rebuilds.is_empty(), "the graph was read from its file");
            e.close().expect("close");
        }
    }
}
