//! The store: recovery on open, the commit thread (group commit), checkpoints and close.
//!
//! Write path: a caller submits an encoded batch; the commit thread validates it against the
//! schema, frames it into the WAL, fdatasyncs according to the sync mode, applies it to the
//! in-memory state and only then completes the caller. So a reader never sees a write that
//! could still be lost, and a failed write or fsync is never acknowledged.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
pub use crate::clock::now_ms;

use crate::batch::{self, CollectionSpec, Op};
use crate::checksum::xxh3;
use crate::error::{Error, Result};
use crate::hnsw::Hnsw;
use crate::index::{CollectionIndex, IndexStats, Indexer};
use crate::manifest::{self, Manifest, ManifestCollection};
use crate::segment::{self, SegmentHeader, SegmentRecord, SegmentWriter, KIND_BASE, KIND_DELTA};
use crate::state::{Collection, Filter, Hit, Row, SegmentRef, SkippedRecord, State, UnreadableRecord};
use crate::storage::{OsStorage, Storage};
use crate::wal::record::{encode_record, record_len, RECORD_TYPE_BATCH};
use crate::wal::recovery::{replay, RecordRepair, RecoveryMode, RecoveryReport, SkippedRange, UnreadableRecordReport};
use crate::wal::writer::{Prealloc, WalWriter};
use crate::layout::{data_file_name, graph_file_name, wal_segment_name as segment_name, ARCHIVE_DIR, DATA_DIR, LOCK_FILE, TMP_SUFFIX, WAL_DIR};


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
        }
    }
}

pub type CommitCallback = Box<dyn FnOnce(Result<u64>) + Send>;

enum Request {
    Commit { payload: Vec<u8>, done: CommitCallback },
    Capture { done: std::sync::mpsc::Sender<Result<Capture>> },
}

/// What a checkpoint must write, taken by the commit thread at an exact sequence number.
struct Capture {
    seq: u64,
    time_ms: u64,
    collections: Vec<CapturedCollection>,
}

/// Rows a checkpoint writes, by id; `None` records a delete (delta files only).
type CapturedRows = Vec<(String, Option<Row>)>;

struct CapturedCollection {
    id: u64,
    spec: CollectionSpec,
    existing: Vec<SegmentRef>,
    /// `Some` when this checkpoint writes a file: base (every row) or delta (changed ids).
    write: Option<(u8, CapturedRows)>,
    index: Arc<CollectionIndex>,
    index_file: Option<SegmentRef>,
    unreadable: Vec<crate::state::UnreadableRecord>,
}

/// A query's results: (id, score, metadata) best first, and the records it could not consider.
#[derive(Debug, Default)]
pub struct QueryOutput {
    pub hits: Vec<(String, f32, String)>,
    pub skipped: Vec<SkippedRecord>,
}

/// Unreadable records listed in one query's report; the rest are in `recoveryReport`.
const MAX_SKIPS_REPORTED: usize = 100;
/// Rows failing their checksum in one query before it stops looking for replacements.
const MAX_FAILED_PER_QUERY: usize = 16;

/// Deltas are merged into a new base once there are this many files.
const MAX_SEGMENTS_PER_COLLECTION: usize = 8;

struct Queue {
    requests: VecDeque<Request>,
    shutdown: bool,
    /// The commit thread is waiting on `queue_cv`: only then does a submit need to wake it, which
    /// spares a futex syscall per commit while it is busy with earlier groups.
    idle: bool,
}

struct Shared {
    dir: PathBuf,
    opts: Options,
    state: RwLock<State>,
    queue: Mutex<Queue>,
    queue_cv: Condvar,
    poisoned: Mutex<Option<String>>,
    closed: AtomicBool,
    last_seq: AtomicU64,
    manifest: Mutex<Manifest>,
    checkpoint_lock: Mutex<()>,
    indexer: Indexer,
}

pub struct Engine {
    shared: Arc<Shared>,
    commit_thread: Mutex<Option<JoinHandle<()>>>,
    lock: Mutex<Option<Box<dyn std::any::Any + Send + Sync>>>,
    report: RecoveryReport,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}


#[derive(Clone, Debug, serde::Serialize)]
pub struct CollectionInfo {
    pub name: String,
    pub dim: u32,
    pub metric: &'static str,
    pub m: u32,
    pub ef_construction: u32,
    pub count: usize,
}

impl Engine {
    pub fn open(dir: &Path, opts: Options) -> Result<Engine> {
        let storage = opts.storage.clone();
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e| Error::io(p, e)
        };
        for sub in [WAL_DIR, ARCHIVE_DIR, DATA_DIR] {
            storage.create_dir_all(&dir.join(sub)).map_err(io(&dir.join(sub)))?;
        }
        let lock_path = dir.join(LOCK_FILE);
        let guard = storage.lock(&lock_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => Error::Locked(dir.to_path_buf()),
            _ => Error::io(&lock_path, e),
        })?;

        let mut report = RecoveryReport::default();
        // absolute-consistency refuses a damaged MANIFEST; the other modes fall back to its copy.
        let loaded = if opts.recovery == RecoveryMode::AbsoluteConsistency {
            manifest::load(storage.as_ref(), dir)?.map(|m| (m, None))
        } else {
            manifest::load_or_copy(storage.as_ref(), dir)?
        };
        let mut manifest_damage = None;
        let manifest = match loaded {
            Some((m, damage)) => {
                manifest_damage = damage;
                m
            }
            None => {
                let wal_names = storage.list(&dir.join(WAL_DIR)).map_err(io(&dir.join(WAL_DIR)))?;
                let data_names = storage.list(&dir.join(DATA_DIR)).map_err(io(&dir.join(DATA_DIR)))?;
                if wal_names.iter().any(|n| n.ends_with(".wal")) || data_names.iter().any(|n| n.ends_with(".seg")) {
                    return Err(Error::corruption(dir.join(crate::layout::MANIFEST_FILE), 0, "MANIFEST is missing but the store has data"));
                }
                let m = Manifest::default();
                // durability: the new subdirectories must exist after a power cut.
                storage.sync_dir(dir).map_err(io(dir))?;
                manifest::store(storage.as_ref(), dir, &m)?;
                m
            }
        };
        report.checkpoint_seq = manifest.checkpoint_seq;
        let (mut state, damaged_files) = load_checkpoint(storage.as_ref(), dir, &manifest, opts.recovery, &mut report)?;

        let wal_dir = dir.join(WAL_DIR);
        let closed_cleanly = manifest.clean_shutdown_seq.is_some();
        let replayed = replay(storage.as_ref(), &wal_dir, manifest.checkpoint_seq, opts.recovery, closed_cleanly, &mut report, |seq, time, payload| {
            let ops = batch::decode(payload)?;
            state.apply(seq, time, ops)
        })?;
        let touched = std::mem::take(&mut state.touched);
        let skip = opts.recovery == RecoveryMode::SkipCorrupt;
        if let Some(clean) = manifest.clean_shutdown_seq {
            let problem = if replayed.last_seq != clean {
                Some(format!("store was closed cleanly at seq {clean} but the WAL ends at seq {}", replayed.last_seq))
            } else if report.torn_tail.is_some() {
                Some("store was closed cleanly but its last WAL segment ends in invalid bytes".to_string())
            } else {
                None
            };
            if let Some(reason) = problem {
                let file = replayed.segments.last().map_or_else(|| wal_dir.clone(), |s| s.path.clone());
                if !skip {
                    return Err(Error::corruption(file, 0, reason));
                }
                report.skipped.push(SkippedRange {
                    file: file.display().to_string(),
                    offset: 0,
                    from_seq: replayed.last_seq + 1,
                    to_seq: Some(clean),
                    reason,
                });
            }
        }
        if let Some((path, offset)) = &replayed.truncate {
            let f = storage.open(path).map_err(io(path))?;
            f.set_len(*offset).map_err(io(path))?;
            f.sync_data().map_err(io(path))?;
        } else if let Some(last) = replayed.segments.last() {
            // The last segment takes no more records (a new one starts below): drop its
            // preallocated zeros, as `WalWriter::trim` does on a roll.
            let f = storage.open(&last.path).map_err(io(&last.path))?;
            if f.len().map_err(io(&last.path))? > last.end {
                f.set_len(last.end).map_err(io(&last.path))?;
            }
            // durability: after a process crash under sync=none its records may be only in the
            // page cache; writes acknowledged from now on build on them, so they must be on disk
            // first, or a power cut could leave a hole below durable records.
            f.sync_data().map_err(io(&last.path))?;
        }
        state.last_seq = state.last_seq.max(replayed.last_seq).max(manifest.checkpoint_seq);
        state.last_time_ms = state.last_time_ms.max(replayed.last_time_ms).max(manifest.checkpoint_time_ms);
        let next_seq = state.last_seq + 1;

        // An empty last segment would collide with the one we start now; it holds nothing.
        if let Some(last) = replayed.segments.last() {
            if last.first_seq == next_seq {
                storage.remove(&last.path).map_err(io(&last.path))?;
            }
        }
        archive_segments(storage.as_ref(), dir, manifest.checkpoint_seq)?;
        remove_orphan_data(storage.as_ref(), dir, &manifest)?;
        let flags = if opts.sync == SyncMode::None { crate::wal::record::SEG_FLAG_UNSYNCED } else { 0 };
        let writer = WalWriter::create(storage.clone(), &wal_dir, next_seq, opts.segment_bytes, opts.prealloc, flags)?;

        let mut manifest = manifest;
        if let Some(damage) = &manifest_damage {
            // The open succeeded from the copy: keep the damaged bytes, then write both anew.
            let offset = match damage {
                Error::Corruption { offset, .. } => *offset,
                _ => 0,
            };
            let kept = quarantine_on_open(storage.as_ref(), dir, crate::layout::MANIFEST_FILE, offset, &damage.to_string(), Some(crate::layout::MANIFEST_COPY_FILE))?;
            report.quarantined.extend(kept);
            report.manifest_restored = Some(damage.to_string());
        }
        if manifest.clean_shutdown_seq.is_some() || manifest_damage.is_some() {
            // From here on a crash must not look like a clean close.
            manifest.clean_shutdown_seq = None;
            manifest::store(storage.as_ref(), dir, &manifest)?;
        } else {
            manifest::refresh_copy(storage.as_ref(), dir)?;
        }
        let schema = state.collections.values().map(|c| (c.spec.name.clone(), c.spec.dim)).collect();
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            opts: opts.clone(),
            last_seq: AtomicU64::new(state.last_seq),
            state: RwLock::new(state),
            queue: Mutex::new(Queue { requests: VecDeque::new(), shutdown: false, idle: false }),
            queue_cv: Condvar::new(),
            poisoned: Mutex::new(None),
            closed: AtomicBool::new(false),
            manifest: Mutex::new(manifest),
            checkpoint_lock: Mutex::new(()),
            indexer: Indexer::start(),
        });
        {
            // Rows loaded without a usable graph, and the WAL tail, are indexed in the background.
            let st = read(&shared.state);
            for c in st.collections.values() {
                if c.index.pending_len() > 0 {
                    shared.indexer.notify(&c.index);
                }
            }
        }
        drop(touched);
        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("cairn-commit".into())
            .spawn(move || CommitThread { shared: thread_shared, writer, schema, buf: Vec::new() }.run())
            .map_err(|e| Error::io(dir, e))?;
        let engine = Engine { shared, commit_thread: Mutex::new(Some(handle)), lock: Mutex::new(Some(guard)), report };
        if (skip && !engine.report.skipped.is_empty()) || !damaged_files.is_empty() {
            // Make the state we now serve the new base, so the damage is not met again. The
            // checkpoint drops the damaged files' names; their bytes are kept in quarantine.
            let mut engine = engine;
            for rel in &damaged_files {
                let detail = "damaged checkpoint records found on open; the store was checkpointed without this file";
                let kept = quarantine_on_open(storage.as_ref(), dir, rel, 0, detail, None)?;
                engine.report.quarantined.extend(kept);
            }
            engine.checkpoint()?;
            return Ok(engine);
        }
        Ok(engine)
    }

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
        if let Err(e) = self.check_open() {
            return done(Err(e));
        }
        if let Some(p) = lock(&self.shared.poisoned).clone() {
            return done(Err(Error::Poisoned(p)));
        }
        let mut q = lock(&self.shared.queue);
        if q.shutdown {
            drop(q);
            return done(Err(Error::Closed));
        }
        q.requests.push_back(Request::Commit { payload, done });
        let wake = q.idle;
        drop(q);
        if wake {
            self.shared.queue_cv.notify_one();
        }
    }

    /// Blocking form of `submit`.
    pub fn commit(&self, ops: &[Op]) -> Result<u64> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.submit(batch::encode(ops), Box::new(move |r| {
            let _ = tx.send(r);
        }));
        rx.recv().unwrap_or(Err(Error::Closed))
    }

    pub fn last_seq(&self) -> u64 {
        self.shared.last_seq.load(Ordering::Acquire)
    }

    pub fn poisoned(&self) -> Option<String> {
        lock(&self.shared.poisoned).clone()
    }

    pub fn collections(&self) -> Result<Vec<CollectionInfo>> {
        self.check_open()?;
        let st = read(&self.shared.state);
        Ok(st
            .collections
            .values()
            .map(|c| CollectionInfo {
                name: c.spec.name.clone(),
                dim: c.spec.dim,
                metric: c.spec.metric.as_str(),
                m: c.spec.m,
                ef_construction: c.spec.ef_construction,
                count: c.count(),
            })
            .collect())
    }

    pub fn collection_info(&self, name: &str) -> Result<CollectionInfo> {
        self.collections()?
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::NotFound(format!("collection '{name}' does not exist")))
    }

    /// The row's vector and metadata, after checking them against the row's checksum. A record
    /// known to be damaged, or a copy that fails its checksum, is CAIRN_CORRUPTION naming it.
    pub fn get(&self, collection: &str, id: &str) -> Result<Option<(Vec<f32>, String)>> {
        self.check_open()?;
        let st = read(&self.shared.state);
        let c = st.collection(collection)?;
        if let Some(u) = c.unreadable.get(id) {
            return Err(Error::corruption(
                self.shared.dir.join(&u.file),
                u.offset,
                format!("record '{id}' of collection '{collection}' is damaged ({}) and could not be repaired", u.reason),
            ));
        }
        match c.rows.get(id) {
            None => Ok(None),
            Some(r) if r.verify(id) => Ok(Some((r.vector.to_vec(), r.metadata.to_string()))),
            Some(_) => Err(self.damaged_in_memory(collection, id)),
        }
    }

    fn damaged_in_memory(&self, collection: &str, id: &str) -> Error {
        Error::corruption(&self.shared.dir, 0, format!("in-memory copy of record '{id}' of collection '{collection}' fails its checksum"))
    }

    pub fn count(&self, collection: &str) -> Result<usize> {
        self.check_open()?;
        Ok(read(&self.shared.state).collection(collection)?.count())
    }

    /// Exact k-NN; returns (id, score, metadata) best first. The ground truth for `query`.
    pub fn query_exact(&self, collection: &str, query: &[f32], k: usize, filter: Option<&Filter>) -> Result<QueryOutput> {
        self.search(collection, query, k, filter, None)
    }

    /// k-NN through the HNSW graph with beam `ef`, merged with an exact scan of rows not yet
    /// indexed; returns (id, score, metadata) best first.
    pub fn query(&self, collection: &str, query: &[f32], k: usize, ef: usize, filter: Option<&Filter>) -> Result<QueryOutput> {
        self.search(collection, query, k, filter, Some(ef))
    }

    pub fn index_stats(&self, collection: &str) -> Result<IndexStats> {
        self.check_open()?;
        let index = read(&self.shared.state).collection(collection)?.index.clone();
        Ok(index.stats())
    }

    /// Block until every row applied so far is in the collection's graph.
    pub fn wait_for_index(&self, collection: &str) -> Result<()> {
        self.check_open()?;
        let index = read(&self.shared.state).collection(collection)?.index.clone();
        index.wait_idle(&self.shared.indexer.stopped);
        match lock(&self.shared.indexer.last_error).clone() {
            Some(e) => Err(Error::Io { path: self.shared.dir.clone(), source: std::io::Error::other(format!("indexer failed: {e}")) }),
            None => Ok(()),
        }
    }

    fn search(&self, collection: &str, query: &[f32], k: usize, filter: Option<&Filter>, ef: Option<usize>) -> Result<QueryOutput> {
        self.check_open()?;
        let st = read(&self.shared.state);
        let c = st.collection(collection)?;
        if query.len() != c.spec.dim as usize {
            return Err(Error::InvalidArgument(format!(
                "query vector has dimension {} but collection '{collection}' has dim {}",
                query.len(),
                c.spec.dim
            )));
        }
        if k == 0 {
            return Err(Error::InvalidArgument("k must be a positive integer".into()));
        }
        // Every returned row is checked against its checksum; one that fails is skipped and
        // reported, and the search runs again for one more candidate in its place.
        let mut failed: Vec<String> = Vec::new();
        loop {
            let want = k + failed.len();
            let hits: Vec<Hit> = match ef {
                Some(ef) => c.search(query, want, ef.max(want), filter),
                None => c.exact_search(query, want, filter, |_| true),
            };
            let mut newly_failed = false;
            let mut out = Vec::with_capacity(k);
            for h in hits {
                if failed.contains(&h.id) {
                    continue;
                }
                let Some(row) = c.rows.get(&h.id) else { continue };
                if !row.verify(&h.id) {
                    failed.push(h.id);
                    newly_failed = true;
                    continue;
                }
                if out.len() < k {
                    out.push((h.id, c.spec.metric.score(h.distance), row.metadata.to_string()));
                }
            }
            if newly_failed && failed.len() <= MAX_FAILED_PER_QUERY {
                continue;
            }
            let mut skipped = c.unreadable_skips(MAX_SKIPS_REPORTED);
            skipped.extend(failed.iter().map(|id| SkippedRecord {
                id: id.clone(),
                reason: "in-memory copy fails its checksum".to_string(),
            }));
            return Ok(QueryOutput { hits: out, skipped });
        }
    }

    /// Write the state to immutable checkpoint files, replace the manifest, and move WAL
    /// segments the checkpoint covers to the archive. Returns the checkpoint's sequence number.
    pub fn checkpoint(&self) -> Result<u64> {
        self.checkpoint_then(|_, _| Ok(())).map(|(seq, ())| seq)
    }

    /// Checkpoint, then run `f` with the new manifest and the store directory while no other
    /// checkpoint can run, so the files the manifest names stay in place (snapshots link them).
    pub fn checkpoint_then<T>(&self, f: impl FnOnce(&Manifest, &Path) -> Result<T>) -> Result<(u64, T)> {
        self.check_open()?;
        let _one_at_a_time = lock(&self.shared.checkpoint_lock);
        let seq = self.checkpoint_locked()?;
        let manifest = lock(&self.shared.manifest).clone();
        Ok((seq, f(&manifest, &self.shared.dir)?))
    }

    /// The manifest as the engine holds it: the live checkpoint files, with their sizes and
    /// checksums. Equal to `MANIFEST` on disk unless that file was damaged since it was written.
    pub fn manifest(&self) -> Manifest {
        lock(&self.shared.manifest).clone()
    }

    /// Run `f` with the manifest while no checkpoint can run, so no checkpoint file, archived
    /// WAL segment or manifest is written, moved or removed meanwhile (scrub installs repairs so).
    pub fn with_checkpoint_lock<T>(&self, f: impl FnOnce(&Manifest, &Path) -> Result<T>) -> Result<T> {
        self.check_open()?;
        let _one_at_a_time = lock(&self.shared.checkpoint_lock);
        let manifest = lock(&self.shared.manifest).clone();
        f(&manifest, &self.shared.dir)
    }

    /// Rewrite the checkpoint files of the collection with this id from the in-memory state
    /// (verified when it was loaded, and applied from the WAL since): a checkpoint that writes
    /// a full base file and a fresh graph file for it, then replaces the manifest, with the
    /// usual temp file, fsync, rename and directory fsync. `before` runs first under the
    /// checkpoint lock; scrub keeps the damaged files there, because the checkpoint removes
    /// files the new manifest no longer names. Returns the checkpoint's sequence number.
    pub fn rewrite_collection_files(&self, collection_id: u64, before: impl FnOnce(&Manifest, &Path) -> Result<()>) -> Result<u64> {
        self.check_open()?;
        let _one_at_a_time = lock(&self.shared.checkpoint_lock);
        let manifest = lock(&self.shared.manifest).clone();
        before(&manifest, &self.shared.dir)?;
        {
            let mut st = write(&self.shared.state);
            let c = st
                .collections
                .values_mut()
                .find(|c| c.id == collection_id)
                .ok_or_else(|| Error::NotFound(format!("no collection has id {collection_id}")))?;
            // With no files listed, the capture writes a full base, and a base rewrites the graph.
            c.segments.clear();
        }
        self.checkpoint_locked()
    }

    /// Rewrite `MANIFEST` from the manifest the engine holds. `before` runs first under the
    /// checkpoint lock (scrub quarantines the damaged file there).
    pub fn rewrite_manifest(&self, before: impl FnOnce(&Manifest, &Path) -> Result<()>) -> Result<()> {
        self.check_open()?;
        let _one_at_a_time = lock(&self.shared.checkpoint_lock);
        let m = lock(&self.shared.manifest);
        before(&m, &self.shared.dir)?;
        manifest::store(self.shared.opts.storage.as_ref(), &self.shared.dir, &m)
    }

    fn checkpoint_locked(&self) -> Result<u64> {
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let mut q = lock(&self.shared.queue);
            if q.shutdown {
                return Err(Error::Closed);
            }
            q.requests.push_back(Request::Capture { done: tx });
        }
        self.shared.queue_cv.notify_one();
        let capture = rx.recv().unwrap_or(Err(Error::Closed))?;
        let seq = capture.seq;
        let result = self.write_checkpoint(capture);
        if let Err(e) = &result {
            // The capture cleared the dirty sets, so a later checkpoint could miss rows.
            poison(&self.shared, &format!("checkpoint failed: {e}"));
        }
        result.map(|_| seq)
    }

    fn write_checkpoint(&self, capture: Capture) -> Result<()> {
        let sh = &self.shared;
        let storage = sh.opts.storage.as_ref();
        let data_dir = sh.dir.join(DATA_DIR);
        let mut collections = Vec::new();
        for c in capture.collections {
            let mut segments = c.existing;
            if let Some((kind, rows)) = &c.write {
                let kind = *kind;
                let header = SegmentHeader { version: segment::SEG_VERSION, dim: c.spec.dim, collection_id: c.id, covered_seq: capture.seq, metric: c.spec.metric, kind };
                let mut w = SegmentWriter::new(&header);
                for (id, row) in rows {
                    match row {
                        Some(r) => w.upsert(id, r.label, &r.vector, &r.metadata),
                        None => w.delete(id, 0),
                    }
                }
                let (bytes, records) = w.finish();
                let name = data_file_name(c.id, capture.seq);
                let path = data_dir.join(&name);
                let tmp = data_dir.join(format!("{name}{TMP_SUFFIX}"));
                let f = storage.create(&tmp).map_err(|e| Error::io(&tmp, e))?;
                f.write_at(0, &bytes).map_err(|e| Error::io(&tmp, e))?;
                f.sync_data().map_err(|e| Error::io(&tmp, e))?;
                storage.rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
                let r = SegmentRef {
                    file: name,
                    bytes: bytes.len() as u64,
                    xxh3: format!("{:016x}", xxh3(&bytes)),
                    records,
                    covered_seq: capture.seq,
                };
                if kind == KIND_BASE {
                    segments.clear();
                }
                segments.push(r);
            }
            let index = self.write_index(&data_dir, c.id, capture.seq, &c.index, c.index_file, c.write.is_some())?;
            collections.push(ManifestCollection {
                id: c.id,
                name: c.spec.name.clone(),
                dim: c.spec.dim,
                metric: c.spec.metric,
                m: c.spec.m,
                ef_construction: c.spec.ef_construction,
                segments,
                index,
                unreadable: c.unreadable,
            });
        }
        // durability: new segment files must be durable before the manifest names them.
        storage.sync_dir(&data_dir).map_err(|e| Error::io(&data_dir, e))?;
        let new_manifest = Manifest {
            checkpoint_seq: capture.seq,
            checkpoint_time_ms: capture.time_ms,
            clean_shutdown_seq: None,
            collections,
        };
        {
            let mut m = lock(&sh.manifest);
            manifest::store(storage, &sh.dir, &new_manifest)?;
            *m = new_manifest.clone();
        }
        {
            let mut st = write(&sh.state);
            for mc in &new_manifest.collections {
                if let Some(c) = st.collections.get_mut(&mc.name) {
                    if c.id == mc.id {
                        c.segments = mc.segments.clone();
                        c.index_file = mc.index.clone();
                    }
                }
            }
        }
        archive_segments(storage, &sh.dir, capture.seq)?;
        prune_archive(storage, &sh.dir, &sh.opts)?;
        remove_orphan_data(storage, &sh.dir, &new_manifest)
    }

    /// Persist the graph when the collection changed since the file the manifest names (or
    /// there is none), once every row up to `seq` is in it. It may also hold later rows: labels
    /// make any graph file reusable, because open matches it against the rows.
    fn write_index(
        &self,
        data_dir: &Path,
        id: u64,
        seq: u64,
        index: &CollectionIndex,
        current: Option<SegmentRef>,
        changed: bool,
    ) -> Result<Option<SegmentRef>> {
        let storage = self.shared.opts.storage.as_ref();
        if current.is_some() && !changed {
            return Ok(current);
        }
        index.wait_indexed_through(crate::index::label_of(seq + 1, 0) - 1, &self.shared.indexer.stopped);
        let stats = index.stats();
        if stats.indexed == 0 {
            return Ok(None);
        }
        let mut bytes = Vec::with_capacity(stats.bytes + 4096);
        crate::index::read(&index.hnsw)
            .write_to(&mut bytes, seq)
            .map_err(|e| Error::io(data_dir, e))?;
        let name = graph_file_name(id, seq);
        let path = data_dir.join(&name);
        let tmp = data_dir.join(format!("{name}{TMP_SUFFIX}"));
        let f = storage.create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_at(0, &bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_data().map_err(|e| Error::io(&tmp, e))?;
        storage.rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        Ok(Some(SegmentRef { file: name, bytes: bytes.len() as u64, xxh3: format!("{:016x}", xxh3(&bytes)), records: stats.indexed as u64, covered_seq: seq }))
    }

    /// Finish queued commits, sync, record the clean-shutdown sequence number, release the lock.
    pub fn close(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // A checkpoint running on another thread finishes first: it must not write files, the
        // manifest or the archive after the clean close is recorded and the lock released.
        // One that has not started yet meets the shutdown and is refused with `Closed`.
        let _no_checkpoint = lock(&self.shared.checkpoint_lock);
        let poisoned_before = self.poisoned().is_some();
        {
            let mut q = lock(&self.shared.queue);
            q.shutdown = true;
        }
        self.shared.queue_cv.notify_all();
        if let Some(h) = lock(&self.commit_thread).take() {
            let _ = h.join();
        }
        self.shared.indexer.stop();
        let result = match self.poisoned() {
            None => {
                let mut m = lock(&self.shared.manifest);
                m.clean_shutdown_seq = Some(self.last_seq());
                manifest::store(self.shared.opts.storage.as_ref(), &self.shared.dir, &m)
            }
            // The commit thread's final fsync failed during this close: writes acknowledged in
            // `none` mode may not be durable and no clean close was recorded, so say so.
            Some(reason) if !poisoned_before => Err(Error::Poisoned(reason)),
            Some(_) => Ok(()),
        };
        lock(&self.lock).take();
        result
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Keep a damaged file that this open replaces under `quarantine/` with a note.
fn quarantine_on_open(
    storage: &dyn Storage,
    dir: &Path,
    rel: &str,
    offset: u64,
    detail: &str,
    repaired_from: Option<&str>,
) -> Result<Option<crate::wal::recovery::QuarantinedFile>> {
    let note = crate::quarantine::QuarantineNote {
        file: rel.to_string(),
        time_ms: now_ms(),
        kind: crate::quarantine::Damage::Checksum,
        offset,
        detail: detail.to_string(),
        bytes: storage.open(&dir.join(rel)).and_then(|f| f.len()).unwrap_or(0),
        expected_bytes: None,
        expected_xxh3: None,
        found_xxh3: None,
        repaired_from: repaired_from.map(str::to_string),
    };
    let kept = crate::quarantine::quarantine(storage, dir, rel, &note)?;
    Ok(kept.map(|kept| crate::wal::recovery::QuarantinedFile { file: rel.to_string(), kept }))
}

fn poison(shared: &Shared, reason: &str) {
    let mut p = lock(&shared.poisoned);
    if p.is_none() {
        *p = Some(reason.to_string());
    }
}

/// Move WAL segments whose records are all covered by the checkpoint to the archive, where
/// point-in-time recovery and replicas read them. They are never deleted here.
fn archive_segments(storage: &dyn Storage, dir: &Path, checkpoint_seq: u64) -> Result<()> {
    let wal_dir = dir.join(WAL_DIR);
    let archive = dir.join(ARCHIVE_DIR);
    let mut firsts: Vec<(u64, String)> = storage
        .list(&wal_dir)
        .map_err(|e| Error::io(&wal_dir, e))?
        .into_iter()
        .filter_map(|n| crate::layout::parse_wal_segment_name(&n).map(|s| (s, n)))
        .collect();
    firsts.sort();
    let mut moved = false;
    for i in 0..firsts.len() {
        // A segment's records end before the next segment's first sequence number.
        let covered = firsts.get(i + 1).is_some_and(|(next, _)| *next <= checkpoint_seq + 1);
        if !covered {
            continue;
        }
        let name = &firsts[i].1;
        let (from, to) = (wal_dir.join(name), archive.join(name));
        storage.rename(&from, &to).map_err(|e| Error::io(&from, e))?;
        moved = true;
    }
    if moved {
        // durability: the archive must hold the segment before the WAL directory forgets it.
        storage.sync_dir(&archive).map_err(|e| Error::io(&archive, e))?;
        storage.sync_dir(&wal_dir).map_err(|e| Error::io(&wal_dir, e))?;
    }
    Ok(())
}

/// Apply the WAL archive retention. It shrinks the range point-in-time recovery can reach
/// (`pitr::recoverable_range` reports what is left); it never touches `wal/`.
fn prune_archive(storage: &dyn Storage, dir: &Path, opts: &Options) -> Result<()> {
    if opts.archive_max_age_ms.is_none() && opts.archive_max_bytes.is_none() {
        return Ok(());
    }
    let archive = dir.join(ARCHIVE_DIR);
    let mut segs: Vec<(u64, PathBuf, u64, u64)> = Vec::new();
    for name in storage.list(&archive).map_err(|e| Error::io(&archive, e))? {
        if let Some(first) = crate::layout::parse_wal_segment_name(&name) {
            let path = archive.join(&name);
            let len = storage.open(&path).and_then(|f| f.len()).map_err(|e| Error::io(&path, e))?;
            let modified = storage.modified_ms(&path).unwrap_or(u64::MAX);
            segs.push((first, path, len, modified));
        }
    }
    segs.sort();
    let mut total: u64 = segs.iter().map(|s| s.2).sum();
    let cutoff = opts.archive_max_age_ms.map(|age| now_ms().saturating_sub(age));
    let mut removed = false;
    for (_, path, len, modified) in segs {
        let too_old = cutoff.is_some_and(|c| modified < c);
        let too_big = opts.archive_max_bytes.is_some_and(|max| total > max);
        if !too_old && !too_big {
            break;
        }
        storage.remove(&path).map_err(|e| Error::io(&path, e))?;
        total -= len;
        removed = true;
    }
    if removed {
        // durability: not needed for safety (a resurrected old segment is harmless); keeps the
        // archive's size honest after a crash.
        storage.sync_dir(&archive).map_err(|e| Error::io(&archive, e))?;
    }
    Ok(())
}

/// Checkpoint files not named by the manifest are leftovers of an interrupted or superseded
/// checkpoint. Snapshots hold their own hard links, so removing ours loses nothing.
fn remove_orphan_data(storage: &dyn Storage, dir: &Path, m: &Manifest) -> Result<()> {
    let data_dir = dir.join(DATA_DIR);
    let live: HashSet<&str> =
        m.collections.iter().flat_map(|c| c.segments.iter().chain(c.index.iter()).map(|s| s.file.as_str())).collect();
    let mut removed = false;
    for name in storage.list(&data_dir).map_err(|e| Error::io(&data_dir, e))? {
        if !live.contains(name.as_str()) {
            storage.remove(&data_dir.join(&name)).map_err(|e| Error::io(data_dir.join(&name), e))?;
            removed = true;
        }
    }
    if removed {
        // durability: not needed for correctness (orphans are ignored), but keeps the directory tidy.
        storage.sync_dir(&data_dir).map_err(|e| Error::io(&data_dir, e))?;
    }
    Ok(())
}

/// Load the checkpoint the manifest names; also returns the checkpoint files found damaged.
fn load_checkpoint(storage: &dyn Storage, dir: &Path, m: &Manifest, mode: RecoveryMode, report: &mut RecoveryReport) -> Result<(State, Vec<String>)> {
    let mut state = State { last_seq: m.checkpoint_seq, last_time_ms: m.checkpoint_time_ms, ..State::default() };
    let mut all_damaged = Vec::new();
    for mc in &m.collections {
        let spec = CollectionSpec { name: mc.name.clone(), dim: mc.dim, metric: mc.metric, m: mc.m, ef_construction: mc.ef_construction };
        let params = Collection::hnsw_params(&spec);
        // The graph file and the row files are independent until they are matched, and reading
        // them is most of an open: read and check the graph on a second thread meanwhile. The
        // rows go straight into the collection, which gets its real index after the join.
        let (graph, c) = std::thread::scope(|scope| {
            let graph = std::thread::Builder::new()
                .name("cairn-load-index".into())
                .spawn_scoped(scope, || read_index_file(storage, dir, mc, &params));
            let rows = load_rows(storage, dir, mc, Collection::with_index(mc.id, spec.clone(), Hnsw::new(params, 0)?), mode, report);
            let graph = match graph {
                Ok(handle) => handle.join().unwrap_or_else(|_| Err("reading the index file panicked".to_string())),
                // No thread to be had: read it here.
                Err(_) => read_index_file(storage, dir, mc, &params),
            };
            rows.map(|c| (graph, c))
        })?;
        let (mut c, damaged) = c;
        let hnsw = match graph {
            Ok(h) => {
                c.index_file = mc.index.clone();
                h
            }
            // A missing or damaged file means a rebuild from the vectors (every row pending),
            // which is reported; queries stay exact meanwhile because they scan pending rows.
            Err(reason) => {
                if !c.rows.is_empty() {
                    report.index_rebuilds.push(crate::wal::recovery::IndexRebuild { collection: spec.name.clone(), reason });
                }
                Hnsw::new(params, c.rows.len().max(1024))?
            }
        };
        c.index = CollectionIndex::new(hnsw);
        // A file with damaged records must not stay named: with no files listed, the checkpoint
        // that follows such an open writes a full base of what is served.
        c.segments = if damaged.is_empty() { mc.segments.clone() } else { Vec::new() };
        all_damaged.extend(damaged);
        // Match the graph against the rows: rows missing from it become pending, nodes without
        // a live row become tombstones.
        {
            let h = read(&c.index.hnsw);
            let mut in_graph = 0usize;
            c.live.reserve(c.rows.len());
            for (id, row) in &c.rows {
                c.live.insert(row.label, id.clone());
                if h.contains(row.label) {
                    in_graph += 1;
                } else {
                    c.index.add_pending(row.label, row.vector.clone());
                }
            }
            if in_graph < h.len() {
                for stale in h.labels() {
                    if !c.live.contains_key(&stale) {
                        h.mark_deleted(stale);
                    }
                }
            }
        }
        state.collections.insert(mc.name.clone(), c);
    }
    Ok((state, all_damaged))
}

/// Apply a collection's checkpoint files, oldest first, to `c.rows`, then the manifest's
/// unreadable records. Returns the damaged files (relative to `dir`).
///
/// A damaged record whose identity checksum holds (segment version 2) is rebuilt from the
/// write that produced it when the WAL still holds it, and otherwise becomes unreadable: reads
/// of it fail. Either way no older version of the row is served. A damaged record of unknown
/// identity cannot be accounted for: it is an error, except that skip-corrupt drops it and
/// reports it. absolute-consistency refuses any damage.
fn load_rows(
    storage: &dyn Storage,
    dir: &Path,
    mc: &ManifestCollection,
    mut c: Collection,
    mode: RecoveryMode,
    report: &mut RecoveryReport,
) -> Result<(Collection, Vec<String>)> {
    let mut damaged_files = Vec::new();
    let mut wal_cache = None;
    for sref in &mc.segments {
        let rel = format!("{DATA_DIR}/{}", sref.file);
        let path = dir.join(&rel);
        let buf = storage.read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::corruption(&path, 0, "checkpoint file named by the manifest is missing"),
            _ => Error::io(&path, e),
        })?;
        if buf.len() as u64 != sref.bytes {
            return Err(Error::corruption(&path, buf.len().min(sref.bytes as usize) as u64, format!("file is {} bytes, manifest says {}", buf.len(), sref.bytes)));
        }
        let contents = segment::read_segment(&buf, &path, mode != RecoveryMode::AbsoluteConsistency)?;
        if contents.header.collection_id != mc.id || contents.header.dim != mc.dim {
            return Err(Error::corruption(&path, 0, "segment header does not match its collection in the manifest"));
        }
        if !contents.bad.is_empty() {
            damaged_files.push(rel.clone());
        }
        c.rows.reserve(contents.records.len());
        for rec in contents.records {
            match rec {
                SegmentRecord::Upsert { id, label, vector, metadata } => {
                    c.unreadable.remove(id);
                    c.rows.insert(id.to_string(), Row::new(id, vector.into(), metadata.into(), label));
                }
                SegmentRecord::Delete { id, .. } => {
                    c.unreadable.remove(id);
                    c.rows.remove(id);
                }
            }
        }
        for bad in contents.bad {
            let Some(who) = bad.identity else {
                if mode != RecoveryMode::SkipCorrupt {
                    return Err(Error::corruption(&path, bad.offset, format!("{} (the record's identity is damaged too, so it cannot be repaired or named)", bad.reason)));
                }
                // A delta overrides the files before it: dropping one of its records could
                // serve an older version of that row, which is a wrong value, not a lost one.
                if contents.header.kind == KIND_DELTA {
                    let reason = format!("{} in a delta checkpoint file; skipping it could serve an older version of its row", bad.reason);
                    return Err(Error::corruption(&path, bad.offset, reason));
                }
                report.bad_segment_records.push(SkippedRange { file: path.display().to_string(), offset: bad.offset, from_seq: 0, to_seq: None, reason: bad.reason });
                continue;
            };
            c.rows.remove(&who.id);
            c.unreadable.remove(&who.id);
            if who.kind == segment::REC_DELETE {
                // A delete is nothing but its identity, which verified: the damage is in padding
                // or the record checksum, and the record means what it says.
                report.repaired_records.push(RecordRepair { collection: mc.name.clone(), id: who.id, file: rel.clone(), offset: bad.offset, from: "the record's identity checksum".into() });
                continue;
            }
            match find_logged_upsert(storage, dir, &mut wal_cache, &mc.name, &who.id, who.label) {
                Some((from, vector, metadata)) => {
                    c.rows.insert(who.id.clone(), Row::new(&who.id, vector.into(), metadata.into(), who.label));
                    report.repaired_records.push(RecordRepair { collection: mc.name.clone(), id: who.id, file: rel.clone(), offset: bad.offset, from });
                }
                None => {
                    let reason = format!("{}; the write that produced it is no longer in the WAL", bad.reason);
                    report.unreadable_records.push(UnreadableRecordReport { collection: mc.name.clone(), id: who.id.clone(), file: rel.clone(), offset: bad.offset, reason: reason.clone() });
                    c.unreadable.insert(who.id.clone(), UnreadableRecord { id: who.id, label: who.label, file: rel.clone(), offset: bad.offset, reason });
                }
            }
        }
    }
    // Markers from earlier opens are newer than every file listed (see `UnreadableRecord`).
    for u in &mc.unreadable {
        c.rows.remove(&u.id);
        report.unreadable_records.push(UnreadableRecordReport { collection: mc.name.clone(), id: u.id.clone(), file: u.file.clone(), offset: u.offset, reason: u.reason.clone() });
        c.unreadable.insert(u.id.clone(), u.clone());
    }
    Ok((c, damaged_files))
}

/// The vector and metadata that the upsert with `label` wrote to `id` of `collection`, from the
/// WAL archive or the live WAL (whichever still holds that sequence number), with the segment
/// it came from. The WAL record is verified by its own checksum, and the label names exactly
/// one write, so what it holds is exactly the row the damaged record stored. `cache` keeps the
/// last segment read (relative name and bytes): damage to neighbouring records, which were
/// usually written close together, reads it once.
fn find_logged_upsert(
    storage: &dyn Storage,
    dir: &Path,
    cache: &mut Option<(String, Vec<u8>)>,
    collection: &str,
    id: &str,
    label: u64,
) -> Option<(String, Vec<f32>, String)> {
    let seq = crate::index::seq_of_label(label);
    let op_index = (label & ((1u64 << crate::index::LABEL_OP_BITS) - 1)) as usize;
    for sub in [ARCHIVE_DIR, WAL_DIR] {
        let Ok(names) = storage.list(&dir.join(sub)) else { continue };
        let holder = names
            .iter()
            .filter_map(|n| crate::layout::parse_wal_segment_name(n).map(|first| (first, n)))
            .filter(|(first, _)| *first <= seq)
            .max_by_key(|(first, _)| *first);
        let Some((first, name)) = holder else { continue };
        let rel = format!("{sub}/{name}");
        if cache.as_ref().is_none_or(|(cached, _)| *cached != rel) {
            let Ok(bytes) = storage.read(&dir.join(&rel)) else { continue };
            *cache = Some((rel.clone(), bytes));
        }
        let Some((_, buf)) = cache.as_ref() else { continue };
        for item in crate::wal::reader::scan_segment(buf, first).items {
            let crate::wal::reader::ScanItem::Record { header, payload_start, .. } = item else { continue };
            if header.seq != seq {
                continue;
            }
            let payload = &buf[payload_start..payload_start + header.payload_len];
            let Ok(ops) = batch::decode(payload) else { return None };
            return match ops.into_iter().nth(op_index) {
                Some(Op::Upsert { collection: c, id: i, vector, metadata }) if c == collection && i == id => Some((rel, vector, metadata)),
                _ => None,
            };
        }
    }
    None
}

/// Read and check the persisted graph named by the manifest; `Err` says why it is unusable.
fn read_index_file(storage: &dyn Storage, dir: &Path, mc: &ManifestCollection, params: &crate::hnsw::HnswParams) -> std::result::Result<Hnsw, String> {
    let Some(r) = &mc.index else {
        return Err("no persisted index".to_string());
    };
    let path = dir.join(DATA_DIR).join(&r.file);
    match storage.read(&path) {
        Err(e) => Err(format!("{}: {e}", path.display())),
        Ok(buf) if buf.len() as u64 != r.bytes || format!("{:016x}", xxh3(&buf)) != r.xxh3 => {
            Err(format!("{}: size or checksum differs from the manifest", path.display()))
        }
        Ok(buf) => match Hnsw::read_from(&buf, &path) {
            Ok((h, _covered)) if h.params() == params => Ok(h),
            Ok(_) => Err(format!("{}: parameters differ from the collection's", path.display())),
            Err(e) => Err(e.to_string()),
        },
    }
}

/// The commit thread owns the WAL writer and a schema view (collection name -> dim) that is
/// ahead of the applied state by the records written but not yet applied.
struct CommitThread {
    shared: Arc<Shared>,
    writer: WalWriter,
    schema: HashMap<String, u32>,
    /// The framed records of a group, kept between groups: a fresh multi-megabyte buffer per
    /// group costs a page fault per 4 KiB, more than the copy into it.
    buf: Vec<u8>,
}

/// Largest record buffer kept between groups.
const MAX_KEPT_BUF: usize = 16 << 20;

struct Accepted {
    seq: u64,
    time_ms: u64,
    ops: Vec<Op>,
    done: CommitCallback,
}

impl CommitThread {
    fn run(mut self) {
        loop {
            let requests: Vec<Request> = {
                let mut q = lock(&self.shared.queue);
                while q.requests.is_empty() && !q.shutdown {
                    q.idle = true;
                    q = self.shared.queue_cv.wait(q).unwrap_or_else(|p| p.into_inner());
                    q.idle = false;
                }
                if q.requests.is_empty() {
                    break;
                }
                q.requests.drain(..).collect()
            };
            let mut group = Vec::new();
            for req in requests {
                match req {
                    Request::Commit { payload, done } => group.push((payload, done)),
                    Request::Capture { done } => {
                        self.commit_group(std::mem::take(&mut group));
                        let _ = done.send(self.capture());
                    }
                }
                if self.shared.opts.sync == SyncMode::Always {
                    self.commit_group(std::mem::take(&mut group));
                }
            }
            self.commit_group(group);
        }
        // Make everything written durable even in `none` mode: a clean close loses nothing.
        if lock(&self.shared.poisoned).is_none() {
            if let Err(e) = self.writer.sync().and_then(|_| self.writer.trim()) {
                poison(&self.shared, &e.to_string());
            }
        }
        self.writer.finish();
    }

    fn commit_group(&mut self, group: Vec<(Vec<u8>, CommitCallback)>) {
        if group.is_empty() {
            return;
        }
        let mut accepted: Vec<Accepted> = Vec::with_capacity(group.len());
        // Sized up front: growing by doubling would copy a large batch several times.
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.reserve(group.iter().map(|(payload, _)| record_len(payload.len())).sum());
        let mut next_seq = self.shared.last_seq.load(Ordering::Acquire) + 1;
        let mut time_ms = read(&self.shared.state).last_time_ms;
        let mut failure: Option<Error> = None;
        if self.writer.prealloc_ready() {
            failure = self.writer.roll(next_seq).err();
        }
        for (payload, done) in group {
            if let Some(p) = lock(&self.shared.poisoned).clone() {
                done(Err(Error::Poisoned(p)));
                continue;
            }
            let ops = match batch::decode(&payload).and_then(|ops| self.validate(&ops).map(|_| ops)) {
                Ok(ops) => ops,
                Err(e) => {
                    done(Err(e));
                    continue;
                }
            };
            let seq = next_seq;
            next_seq += 1;
            // Commit times never go backwards, so time targets for recovery are monotonic.
            time_ms = time_ms.max(now_ms());
            if failure.is_none() && self.writer.needs_roll(buf.len() + record_len(payload.len())) {
                let flushed = if buf.is_empty() { Ok(()) } else { self.writer.append(&buf) };
                buf.clear();
                if let Err(e) = flushed.and_then(|_| self.writer.roll(seq)) {
                    failure = Some(e);
                }
            }
            encode_record(&mut buf, RECORD_TYPE_BATCH, seq, time_ms, &payload);
            accepted.push(Accepted { seq, time_ms, ops, done });
        }
        if accepted.is_empty() {
            return;
        }
        if failure.is_none() {
            let mut r = self.writer.append(&buf);
            if r.is_ok() && self.shared.opts.sync != SyncMode::None {
                r = self.writer.sync();
            }
            failure = r.err();
        }
        if buf.capacity() <= MAX_KEPT_BUF {
            self.buf = buf;
        }
        if let Some(e) = failure {
            // Never retry a failed write or fsync: the page cache may have dropped the data.
            poison(&self.shared, &e.to_string());
            let reason = lock(&self.shared.poisoned).clone().unwrap_or_default();
            for a in accepted {
                (a.done)(Err(Error::Poisoned(reason.clone())));
            }
            return;
        }
        let mut dones = Vec::with_capacity(accepted.len());
        let touched = {
            let mut st = write(&self.shared.state);
            for a in accepted {
                if let Err(e) = st.apply(a.seq, a.time_ms, a.ops) {
                    poison(&self.shared, &format!("state diverged from the log at seq {}: {e}", a.seq));
                }
                self.shared.last_seq.store(a.seq, Ordering::Release);
                dones.push((a.seq, a.done));
            }
            std::mem::take(&mut st.touched)
        };
        for (seq, done) in dones {
            done(Ok(seq));
        }
        // After the acknowledgements: waking the indexer first would have it compete with the
        // thread that receives them. Pending rows are searched exactly until it catches up.
        for index in &touched {
            self.shared.indexer.notify(index);
        }
    }

    /// Check the operations against the schema as of every record already written, and update
    /// the schema view only if the whole batch is valid.
    fn validate(&mut self, ops: &[Op]) -> Result<()> {
        // A collection's id (and so its checkpoint file names) is the sequence number of its
        // create, so two creates in one batch would share files and overwrite each other's.
        if let Some((i, _)) = ops.iter().enumerate().filter(|(_, op)| matches!(op, Op::CreateCollection(_))).nth(1) {
            return Err(Error::InvalidArgument(format!("ops[{i}]: a batch can create at most one collection")));
        }
        let mut overlay: HashMap<&str, Option<u32>> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            let dim_of = |overlay: &HashMap<&str, Option<u32>>, name: &str| match overlay.get(name) {
                Some(d) => *d,
                None => self.schema.get(name).copied(),
            };
            match op {
                Op::CreateCollection(spec) => {
                    if dim_of(&overlay, &spec.name).is_some() {
                        return Err(Error::AlreadyExists(format!("collection '{}' already exists", spec.name)));
                    }
                    overlay.insert(&spec.name, Some(spec.dim));
                }
                Op::DropCollection { name } => {
                    if dim_of(&overlay, name).is_none() {
                        return Err(Error::NotFound(format!("collection '{name}' does not exist")));
                    }
                    overlay.insert(name, None);
                }
                Op::Upsert { collection, id, vector, .. } => match dim_of(&overlay, collection) {
                    None => return Err(Error::NotFound(format!("collection '{collection}' does not exist"))),
                    Some(d) if d as usize != vector.len() => {
                        return Err(Error::InvalidArgument(format!(
                            "records[{i}].vector of id '{id}' has dimension {} but collection '{collection}' has dim {d}",
                            vector.len()
                        )))
                    }
                    Some(_) => {}
                },
                Op::Delete { collection, .. } => {
                    if dim_of(&overlay, collection).is_none() {
                        return Err(Error::NotFound(format!("collection '{collection}' does not exist")));
                    }
                }
            }
        }
        for (name, dim) in overlay {
            match dim {
                Some(d) => self.schema.insert(name.to_string(), d),
                None => self.schema.remove(name),
            };
        }
        Ok(())
    }

    /// Runs between groups, so the state holds exactly the records up to `last_seq`.
    fn capture(&mut self) -> Result<Capture> {
        if let Some(p) = lock(&self.shared.poisoned).clone() {
            return Err(Error::Poisoned(p));
        }
        let seq = self.shared.last_seq.load(Ordering::Acquire);
        if self.writer.first_seq() <= seq {
            // Seal the active segment so every segment at or below `seq` can be archived.
            if let Err(e) = self.writer.roll(seq + 1) {
                poison(&self.shared, &e.to_string());
                return Err(e);
            }
        }
        let mut st = write(&self.shared.state);
        let time_ms = st.last_time_ms;
        let mut collections = Vec::new();
        for c in st.collections.values_mut() {
            let full = c.segments.is_empty() || c.segments.len() >= MAX_SEGMENTS_PER_COLLECTION || c.dirty.len() * 2 >= c.rows.len().max(1);
            let write = if full {
                let mut rows: Vec<(String, Option<Row>)> = c.rows.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect();
                rows.sort_by(|a, b| a.0.cmp(&b.0));
                Some((KIND_BASE, rows))
            } else if !c.dirty.is_empty() {
                let mut rows: Vec<(String, Option<Row>)> = c.dirty.iter().map(|id| (id.clone(), c.rows.get(id).cloned())).collect();
                rows.sort_by(|a, b| a.0.cmp(&b.0));
                Some((KIND_DELTA, rows))
            } else {
                None
            };
            c.dirty.clear();
            collections.push(CapturedCollection {
                id: c.id,
                spec: c.spec.clone(),
                existing: c.segments.clone(),
                write,
                index: c.index.clone(),
                index_file: c.index_file.clone(),
                unreadable: {
                    let mut u: Vec<_> = c.unreadable.values().cloned().collect();
                    u.sort_by(|a, b| a.id.cmp(&b.id));
                    u
                },
            });
        }
        Ok(Capture { seq, time_ms, collections })
    }
}

/// Segment name helper re-exported for tools that inspect a store directory.
pub fn wal_segment_name(first_seq: u64) -> String {
    segment_name(first_seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::CollectionSpec;
    use crate::distance::Metric;

    /// A row whose in-memory copy no longer matches its checksum is never returned: `get` fails
    /// naming it, and a query skips it, reports it, and still returns k other rows.
    #[test]
    fn a_damaged_in_memory_row_is_reported_not_served() {
        let opts = Options { storage: Arc::new(crate::fault::FaultStorage::new()), prealloc: Prealloc::Off, ..Options::default() };
        let e = Engine::open(Path::new("/store"), opts).expect("open");
        let spec = CollectionSpec { name: "c".into(), dim: 2, metric: Metric::L2, m: 16, ef_construction: 64 };
        e.commit(&[Op::CreateCollection(spec)]).expect("create");
        let ups: Vec<Op> = (0..10)
            .map(|i| Op::Upsert { collection: "c".into(), id: format!("r{i}"), vector: vec![i as f32, 0.0], metadata: "null".into() })
            .collect();
        e.commit(&ups).expect("upsert");
        write(&e.shared.state).collections.get_mut("c").and_then(|c| c.rows.get_mut("r0")).expect("r0").damage_for_test();

        let err = e.get("c", "r0").expect_err("damaged row served");
        assert_eq!(err.code(), "CAIRN_CORRUPTION");
        assert!(err.to_string().contains("'r0'"), "{err}");
        assert!(e.get("c", "r1").expect("get").is_some());
        for out in [e.query_exact("c", &[0.0, 0.0], 3, None).expect("exact"), e.query("c", &[0.0, 0.0], 3, 16, None).expect("query")] {
            let ids: Vec<&str> = out.hits.iter().map(|h| h.0.as_str()).collect();
            assert_eq!(ids, ["r1", "r2", "r3"], "the nearest row is damaged: the next three answer");
            assert_eq!(out.skipped.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["r0"]);
        }
        e.close().expect("close");
    }
}
