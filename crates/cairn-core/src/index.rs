//! Keeps each collection's HNSW graph in step with its rows.
//!
//! Invariant: every live row is either in the graph or in `pending`, from the moment its write
//! is applied (before it is acknowledged) until the indexer has inserted it. Queries search the
//! graph and scan `pending` exactly, so an acknowledged write is always visible. A label leaves
//! `pending` only after its insertion completed.
//!
//! Labels are `seq << 24 | op index`, so they are unique, never reused, and derived from the log
//! (checkpoint files store them): a persisted graph can be matched against the rows on open.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;

use crate::hnsw::Hnsw;
use crate::metrics::Counter;
use crate::sync::{lock, read, wait, wait_timeout, write};

/// Ops per batch are limited so the op index fits in the label's low bits.
pub const LABEL_OP_BITS: u32 = 24;
pub const MAX_OPS_PER_BATCH: usize = 1 << LABEL_OP_BITS;

pub fn label_of(seq: u64, op_index: usize) -> u64 {
    (seq << LABEL_OP_BITS) | op_index as u64
}

pub fn seq_of_label(label: u64) -> u64 {
    label >> LABEL_OP_BITS
}

/// Up to this many pending rows are inserted on the indexer thread itself: waking the thread
/// pool for a few small commits' rows cost more (its idle workers spin in sched_yield) than it
/// saved, and competed with the commit path for the CPU.
const SEQUENTIAL_MAX: usize = 64;
/// Rows taken from `pending` per turn; large enough to keep every core busy.
const CHUNK: usize = 8_192;
/// Rows inserted between looks at the stop flag: a close waits for at most this many inserts
/// (a full CHUNK took over a second on a loaded 2-core host, and every close waited for it).
const STOP_CHECK_ROWS: usize = 512;
/// Compact the graph once tombstones exceed this share of its nodes.
const COMPACT_TOMBSTONE_SHARE: f64 = 0.3;
const COMPACT_MIN_TOMBSTONES: usize = 1_000;

pub struct CollectionIndex {
    pub hnsw: RwLock<Hnsw>,
    /// Label -> vector of rows applied but not yet in the graph.
    pending: Mutex<BTreeMap<u64, Arc<[f32]>>>,
    idle: Condvar,
    /// Set when the collection is dropped: the indexer stops feeding it.
    dropped: AtomicBool,
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct IndexStats {
    pub indexed: usize,
    pub pending: usize,
    pub tombstones: usize,
    pub bytes: usize,
}

impl CollectionIndex {
    pub fn new(hnsw: Hnsw) -> Arc<CollectionIndex> {
        Arc::new(CollectionIndex {
            hnsw: RwLock::new(hnsw),
            pending: Mutex::new(BTreeMap::new()),
            idle: Condvar::new(),
            dropped: AtomicBool::new(false),
        })
    }

    pub fn add_pending(&self, label: u64, vector: Arc<[f32]>) {
        lock(&self.pending).insert(label, vector);
    }

    /// The row behind `label` is gone (deleted or overwritten).
    pub fn remove(&self, label: u64) {
        let was_pending = lock(&self.pending).remove(&label).is_some();
        if !was_pending {
            read(&self.hnsw).mark_deleted(label);
        }
        self.idle.notify_all();
    }

    pub fn mark_dropped(&self) {
        self.dropped.store(true, Ordering::Release);
        lock(&self.pending).clear();
        self.idle.notify_all();
    }

    /// Visit every pending (label, vector) under the pending lock.
    pub fn for_each_pending(&self, mut f: impl FnMut(u64, &[f32])) {
        for (label, v) in lock(&self.pending).iter() {
            f(*label, v);
        }
    }

    pub fn pending_len(&self) -> usize {
        lock(&self.pending).len()
    }

    pub fn stats(&self) -> IndexStats {
        let pending = self.pending_len();
        let h = read(&self.hnsw);
        IndexStats { indexed: h.len(), pending, tombstones: h.deleted_count(), bytes: h.memory_bytes() }
    }

    /// Block until nothing is pending (or the collection is dropped, or `stop` is set).
    pub fn wait_idle(&self, stop: &AtomicBool) {
        let mut p = lock(&self.pending);
        while !p.is_empty() && !self.dropped.load(Ordering::Acquire) && !stop.load(Ordering::Acquire) {
            p = wait_timeout(&self.idle, p, std::time::Duration::from_millis(100));
        }
    }

    /// Block until no pending label is at or below `label` (rows written up to a sequence number
    /// are all in the graph), or the collection is dropped, or `stop` is set.
    pub fn wait_indexed_through(&self, label: u64, stop: &AtomicBool) {
        let mut p = lock(&self.pending);
        while p.first_key_value().is_some_and(|(l, _)| *l <= label)
            && !self.dropped.load(Ordering::Acquire)
            && !stop.load(Ordering::Acquire)
        {
            p = wait_timeout(&self.idle, p, std::time::Duration::from_millis(100));
        }
    }

    /// Insert up to CHUNK pending rows in parallel, STOP_CHECK_ROWS at a time until `stop` is
    /// set. Returns how many were inserted.
    fn index_chunk(&self, stop: &AtomicBool) -> crate::Result<usize> {
        let chunk: Vec<(u64, Arc<[f32]>)> = lock(&self.pending).iter().take(CHUNK).map(|(l, v)| (*l, v.clone())).collect();
        if chunk.is_empty() {
            return Ok(0);
        }
        {
            let used = read(&self.hnsw).len() + read(&self.hnsw).deleted_count();
            if used + chunk.len() > read(&self.hnsw).capacity() {
                // Room for everything pending, not just this chunk: a bulk load then grows the
                // graph once or twice instead of doubling (and copying) its arena all the way up.
                let backlog = self.pending_len();
                let mut h = write(&self.hnsw);
                let cap = h.capacity();
                h.reserve((used + backlog.max(chunk.len())).max(cap * 2).max(1024));
            }
        }
        let mut inserted = 0;
        for part in chunk.chunks(STOP_CHECK_ROWS) {
            if stop.load(Ordering::Acquire) {
                break;
            }
            let items: Vec<(u64, &[f32])> = part.iter().map(|(l, v)| (*l, &v[..])).collect();
            if items.len() <= SEQUENTIAL_MAX {
                let h = read(&self.hnsw);
                for (label, vector) in &items {
                    h.insert(*label, vector)?;
                }
            } else {
                read(&self.hnsw).insert_batch(&items)?;
            }
            // Each part leaves `pending` as soon as it is in the graph (the module invariant).
            let mut p = lock(&self.pending);
            let h = read(&self.hnsw);
            for (label, _) in part {
                // Removed from pending meanwhile: the row was deleted or overwritten.
                if p.remove(label).is_none() {
                    h.mark_deleted(*label);
                }
            }
            drop(h);
            drop(p);
            self.idle.notify_all();
            inserted += part.len();
        }
        Ok(inserted)
    }

    /// Compact when tombstones pass the threshold; true if it did.
    fn maybe_compact(&self) -> crate::Result<bool> {
        let (live, dead) = {
            let h = read(&self.hnsw);
            (h.len(), h.deleted_count())
        };
        if dead >= COMPACT_MIN_TOMBSTONES && dead as f64 > COMPACT_TOMBSTONE_SHARE * (live + dead) as f64 {
            write(&self.hnsw).compact()?;
            return Ok(true);
        }
        Ok(false)
    }
}

/// Graph inserts yield the CPU to commits and queries: the indexer and its rayon pool run at
/// this Linux nice value, so a bulk ingest is not slowed by indexing and the graph catches up
/// in spare CPU time. Queries stay exact meanwhile because they scan pending rows.
const INDEXER_NICE: i32 = 10;

fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscall. On Linux `who` 0 is the calling thread, not the whole process;
    // failure only leaves the default priority.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, INDEXER_NICE);
    }
}

struct IndexerQueue {
    work: VecDeque<Arc<CollectionIndex>>,
    stop: bool,
}

/// One background thread feeding pending rows into the graphs; each chunk is inserted on all
/// cores (rayon). Errors are reported through `last_error` and leave rows pending, so queries
/// stay correct (they scan pending rows exactly).
pub struct Indexer {
    queue: Arc<(Mutex<IndexerQueue>, Condvar)>,
    pub stopped: Arc<AtomicBool>,
    pub last_error: Arc<Mutex<Option<String>>>,
    /// Graph compactions done, in every collection.
    pub compactions: Arc<Counter>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Indexer {
    pub fn start() -> Indexer {
        let queue = Arc::new((Mutex::new(IndexerQueue { work: VecDeque::new(), stop: false }), Condvar::new()));
        let stopped = Arc::new(AtomicBool::new(false));
        let last_error = Arc::new(Mutex::new(None));
        let compactions = Arc::new(Counter::default());
        let (q, err, done, stop) = (queue.clone(), last_error.clone(), compactions.clone(), stopped.clone());
        let thread = std::thread::Builder::new()
            .name("cairn-indexer".into())
            .spawn(move || {
                lower_priority();
                // Without a pool of its own the indexer falls back to the global one, at normal priority.
                let pool = rayon::ThreadPoolBuilder::new()
                    .thread_name(|i| format!("cairn-index-{i}"))
                    .start_handler(|_| lower_priority())
                    .build()
                    .ok();
                Self::run(q, err, &done, &stop, pool.as_ref())
            })
            .ok();
        Indexer { queue, stopped, last_error, compactions, thread: Mutex::new(thread) }
    }

    pub fn notify(&self, index: &Arc<CollectionIndex>) {
        let (m, cv) = &*self.queue;
        let mut q = lock(m);
        if !q.work.iter().any(|w| Arc::ptr_eq(w, index)) {
            q.work.push_back(index.clone());
        }
        drop(q);
        cv.notify_one();
    }

    fn run(
        queue: Arc<(Mutex<IndexerQueue>, Condvar)>,
        last_error: Arc<Mutex<Option<String>>>,
        compactions: &Counter,
        stop: &AtomicBool,
        pool: Option<&rayon::ThreadPool>,
    ) {
        let (m, cv) = &*queue;
        loop {
            let index = {
                let mut q = lock(m);
                loop {
                    if q.stop {
                        return;
                    }
                    if let Some(i) = q.work.pop_front() {
                        break i;
                    }
                    q = wait(cv, q);
                }
            };
            if index.dropped.load(Ordering::Acquire) {
                continue;
            }
            let step = || {
                index.index_chunk(stop).and_then(|n| {
                    index.maybe_compact().map(|compacted| {
                        if compacted {
                            compactions.add(1);
                        }
                        n
                    })
                })
            };
            let pool = pool.filter(|_| index.pending_len() > SEQUENTIAL_MAX);
            match pool.map_or_else(step, |p| p.install(step)) {
                Ok(0) => {}
                // More may be pending: requeue behind other collections for fairness.
                Ok(_) => {
                    let mut q = lock(m);
                    if !q.work.iter().any(|w| Arc::ptr_eq(w, &index)) {
                        q.work.push_back(index);
                    }
                }
                Err(e) => *lock(&last_error) = Some(e.to_string()),
            }
        }
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        {
            let (m, cv) = &*self.queue;
            let mut q = lock(m);
            q.stop = true;
            // Queued graphs are never indexed after a stop; holding them would keep them alive.
            q.work.clear();
            cv.notify_all();
        }
        if let Some(h) = lock(&self.thread).take() {
            let _ = h.join();
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.stop();
    }
}
