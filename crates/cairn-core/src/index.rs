//! Keeps each collection's HNSW graph in step with its rows.
//!
//! Invariant: every live row is either in the graph or in `pending`, from the moment its write
//! is applied (before it is acknowledged) until the indexer has inserted it. Queries search the
//! graph and scan `pending` exactly, so an acknowledged write is always visible. A label leaves
//! `pending` only after its insertion completed.
//!
//! Labels are `seq << 24 | op index`, so they are unique, never reused, and derived from the log
//! (checkpoint files store them): a persisted graph can be matched against the rows on open.

use crate::shared_vector::SharedVector;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    pending: Mutex<BTreeMap<u64, SharedVector>>,
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

    pub fn add_pending(&self, label: u64, vector: SharedVector) {
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

    /// Insert up to `limit` pending rows, STOP_CHECK_ROWS at a time until `stop` or `interrupt()`
    /// is true; in parallel (on the current rayon pool) unless `sequential`. Returns how many
    /// were inserted.
    fn index_chunk(&self, stop: &AtomicBool, limit: usize, sequential: bool, interrupt: &dyn Fn() -> bool) -> crate::Result<usize> {
        let chunk: Vec<(u64, SharedVector)> = lock(&self.pending).iter().take(limit).map(|(l, v)| (*l, v.clone())).collect();
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
            if stop.load(Ordering::Acquire) || (inserted > 0 && interrupt()) {
                break;
            }
            // The graph holds the rows' own vectors (one copy in memory), not copies.
            if sequential || part.len() <= SEQUENTIAL_MAX {
                let h = read(&self.hnsw);
                for (label, vector) in part {
                    h.insert_shared(*label, vector.clone())?;
                }
            } else {
                read(&self.hnsw).insert_shared_batch(part)?;
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

    /// Whether tombstones passed the threshold for a compaction.
    fn compaction_due(&self) -> bool {
        let h = read(&self.hnsw);
        let (live, dead) = (h.len(), h.deleted_count());
        dead >= COMPACT_MIN_TOMBSTONES && dead as f64 > COMPACT_TOMBSTONE_SHARE * (live + dead) as f64
    }

    /// Compact when tombstones pass the threshold; true if it did.
    fn maybe_compact(&self) -> crate::Result<bool> {
        if self.compaction_due() {
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
    /// The indexer is in a throttle pause: new work waits for its end instead of waking it
    /// (every commit group notifies).
    pausing: bool,
}

/// The default share of one core the indexer may use while writes arrive (`Options`).
pub const DEFAULT_WRITE_SHARE: f64 = 0.5;
/// Writes committed this recently count as still arriving: the indexer keeps to its share.
const WRITES_QUIET: Duration = Duration::from_millis(100);
/// Rows per turn while writes arrive; the pause after a turn is sized from its duration.
const THROTTLED_TURN_ROWS: usize = 256;
/// The longest single pause, so a share near 0 still looks at the queue (and a stop) often.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// Whether the commit thread is writing a group now, and when it last started or finished one
/// (in microseconds since `epoch`). A large batch can take longer than WRITES_QUIET to write.
struct WriteActivity {
    epoch: Instant,
    last_us: AtomicU64,
    writing: AtomicBool,
}

impl WriteActivity {
    fn new() -> WriteActivity {
        WriteActivity { epoch: Instant::now(), last_us: AtomicU64::new(0), writing: AtomicBool::new(false) }
    }

    fn stamp(&self) {
        self.stamp_at(Instant::now());
    }

    fn stamp_at(&self, now: Instant) {
        // +1: 0 means "never".
        self.last_us.store(now.saturating_duration_since(self.epoch).as_micros() as u64 + 1, Ordering::Release);
    }

    /// Time left until writes count as stopped, if they still arrive.
    fn quiet_in(&self) -> Option<Duration> {
        self.quiet_in_at(Instant::now())
    }

    fn quiet_in_at(&self, now: Instant) -> Option<Duration> {
        if self.writing.load(Ordering::Acquire) {
            return Some(WRITES_QUIET);
        }
        let last = self.last_us.load(Ordering::Acquire);
        if last == 0 {
            return None;
        }
        let since = Duration::from_micros((now.saturating_duration_since(self.epoch).as_micros() as u64 + 1).saturating_sub(last));
        WRITES_QUIET.checked_sub(since).filter(|d| !d.is_zero())
    }
}

/// One background thread feeding pending rows into the graphs. While writes arrive it inserts
/// on its own thread only and is busy at most `write_share` of the time (0: not at all), so a
/// bulk ingest keeps its speed; once they stop it inserts each chunk on all cores (rayon). Errors
/// are reported through `last_error` and leave rows pending, so queries stay correct (they scan
/// pending rows exactly).
pub struct Indexer {
    queue: Arc<(Mutex<IndexerQueue>, Condvar)>,
    writes: Arc<WriteActivity>,
    pub stopped: Arc<AtomicBool>,
    pub last_error: Arc<Mutex<Option<String>>>,
    /// Graph compactions done, in every collection.
    pub compactions: Arc<Counter>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What the indexer thread needs besides its queue.
struct IndexerContext {
    writes: Arc<WriteActivity>,
    write_share: f64,
    last_error: Arc<Mutex<Option<String>>>,
    compactions: Arc<Counter>,
    stop: Arc<AtomicBool>,
}

impl Indexer {
    /// `write_share` in [0, 1]: the share of one core the indexer may use while writes arrive.
    pub fn start(write_share: f64) -> Indexer {
        let queue = Arc::new((Mutex::new(IndexerQueue { work: VecDeque::new(), stop: false, pausing: false }), Condvar::new()));
        let writes = Arc::new(WriteActivity::new());
        let stopped = Arc::new(AtomicBool::new(false));
        let last_error = Arc::new(Mutex::new(None));
        let compactions = Arc::new(Counter::default());
        let ctx = IndexerContext {
            writes: writes.clone(),
            write_share: write_share.clamp(0.0, 1.0),
            last_error: last_error.clone(),
            compactions: compactions.clone(),
            stop: stopped.clone(),
        };
        let q = queue.clone();
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
                Self::run(q, &ctx, pool.as_ref())
            })
            .ok();
        Indexer { queue, writes, stopped, last_error, compactions, thread: Mutex::new(thread) }
    }

    pub fn notify(&self, index: &Arc<CollectionIndex>) {
        let (m, cv) = &*self.queue;
        let mut q = lock(m);
        if !q.stop && !q.work.iter().any(|w| Arc::ptr_eq(w, index)) {
            q.work.push_back(index.clone());
        }
        let wake = !q.pausing;
        drop(q);
        if wake {
            cv.notify_one();
        }
    }

    /// The commit thread starts writing a group: writes arrive until `writes_finished` and
    /// WRITES_QUIET after it.
    pub fn writes_started(&self) {
        self.writes.stamp();
        self.writes.writing.store(true, Ordering::Release);
    }

    pub fn writes_finished(&self) {
        self.writes.stamp();
        self.writes.writing.store(false, Ordering::Release);
    }

    fn run(queue: Arc<(Mutex<IndexerQueue>, Condvar)>, ctx: &IndexerContext, pool: Option<&rayon::ThreadPool>) {
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
            let turn_started = Instant::now();
            let throttled = ctx.writes.quiet_in().is_some();
            let writes_arriving = || ctx.writes.quiet_in().is_some();
            // A full turn: a chunk on all cores, until writes arrive, then a compaction if due
            // (which also runs on all cores, so never while writes arrive).
            let full_turn = || {
                index.index_chunk(&ctx.stop, CHUNK, false, &writes_arriving).and_then(|n| {
                    index.maybe_compact().map(|compacted| {
                        if compacted {
                            ctx.compactions.add(1);
                        }
                        n
                    })
                })
            };
            let result = if !throttled {
                // A compaction rebuilds on all cores: in the pool, at its low priority.
                let pool = pool.filter(|_| index.pending_len() > SEQUENTIAL_MAX || index.compaction_due());
                pool.map_or_else(full_turn, |p| p.install(full_turn))
            } else if ctx.write_share > 0.0 {
                index.index_chunk(&ctx.stop, THROTTLED_TURN_ROWS, true, &|| false)
            } else {
                Ok(0)
            };
            // While writes arrive, work left for a full turn (rows, or a compaction that is due)
            // keeps the collection queued until they stop.
            let (more, inserted) = match result {
                Ok(n) => (n > 0 || (throttled && (index.pending_len() > 0 || index.compaction_due())), n > 0),
                Err(e) => {
                    *lock(&ctx.last_error) = Some(e.to_string());
                    (false, false)
                }
            };
            let mut q = lock(m);
            if throttled && more {
                // Busy for `busy`, then idle long enough that busy / (busy + idle) <= share; with
                // nothing to do until writes stop (a share of 0, a compaction), idle until then.
                let busy = turn_started.elapsed();
                let idle = if inserted && ctx.write_share > 0.0 {
                    busy.mul_f64((1.0 - ctx.write_share) / ctx.write_share)
                } else {
                    ctx.writes.quiet_in().unwrap_or_default()
                }
                .min(MAX_PAUSE);
                let until = Instant::now() + idle;
                q.pausing = true;
                while !q.stop {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    q = wait_timeout(cv, q, until - now);
                }
                q.pausing = false;
            }
            // More may be pending: requeue behind other collections for fairness. Never after a
            // stop, which has emptied the queue so that it holds no graph alive.
            if more && !q.stop && !q.work.iter().any(|w| Arc::ptr_eq(w, &index)) {
                q.work.push_back(index);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::Metric;
    use crate::hnsw::HnswParams;

    fn index_with_pending(rows: usize) -> Arc<CollectionIndex> {
        let index = CollectionIndex::new(Hnsw::new(HnswParams::new(4, Metric::L2), 16).expect("params"));
        for i in 0..rows {
            let x = i as f32;
            index.add_pending(label_of(i as u64 + 1, 0), vec![x, -x, x * 0.5, 1.0].into());
        }
        index
    }

    /// Polls `pending_len` until it is `want` or 30 s pass; returns the last value seen.
    fn pending_within(index: &CollectionIndex, want: impl Fn(usize) -> bool) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n = index.pending_len();
            if want(n) || Instant::now() >= deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn writes_count_as_arriving_for_the_quiet_window_after_the_last_one() {
        let w = WriteActivity::new();
        let t = w.epoch + Duration::from_secs(5);
        assert_eq!(w.quiet_in_at(t), None, "never stamped");
        w.stamp_at(t);
        assert_eq!(w.quiet_in_at(t), Some(WRITES_QUIET));
        assert_eq!(w.quiet_in_at(t + Duration::from_millis(60)), Some(WRITES_QUIET - Duration::from_millis(60)));
        assert_eq!(w.quiet_in_at(t + WRITES_QUIET), None);
        assert_eq!(w.quiet_in_at(t + Duration::from_secs(60)), None);
        // A group being written counts however long it takes.
        w.writing.store(true, Ordering::Release);
        assert_eq!(w.quiet_in_at(t + Duration::from_secs(60)), Some(WRITES_QUIET));
    }

    #[test]
    fn share_zero_defers_indexing_while_writes_arrive_then_catches_up() {
        let indexer = Indexer::start(0.0);
        let index = index_with_pending(300);
        // Writes "arrive" for the next minute: a stamp in the future keeps the window open
        // without a writer thread.
        indexer.writes.stamp_at(Instant::now() + Duration::from_secs(60));
        indexer.notify(&index);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(index.pending_len(), 300, "nothing is indexed while writes arrive at share 0");
        assert_eq!(read(&index.hnsw).len(), 0);
        // Writes stop: the window closes and the indexer catches up on its own.
        indexer.writes.stamp_at(indexer.writes.epoch);
        assert_eq!(pending_within(&index, |n| n == 0), 0);
        assert_eq!(read(&index.hnsw).len(), 300);
        assert!(lock(&indexer.last_error).is_none());
    }

    /// A stop that ends a throttle pause must not requeue the graph: the stopped queue would
    /// keep it alive as long as the engine lives (a closed store must free its graphs).
    #[test]
    fn a_stop_during_a_pause_leaves_no_graph_queued() {
        let indexer = Indexer::start(0.0);
        let index = index_with_pending(10);
        indexer.writes.stamp_at(Instant::now() + Duration::from_secs(60));
        indexer.notify(&index);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !lock(&indexer.queue.0).pausing && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(lock(&indexer.queue.0).pausing, "the indexer pauses while writes arrive at share 0");
        indexer.stop();
        assert!(lock(&indexer.queue.0).work.is_empty());
        indexer.notify(&index);
        assert!(lock(&indexer.queue.0).work.is_empty(), "a stopped indexer queues nothing");
        assert_eq!(Arc::strong_count(&index), 1);
    }

    #[test]
    fn a_positive_share_makes_progress_while_writes_arrive() {
        let indexer = Indexer::start(0.25);
        let index = index_with_pending(2 * THROTTLED_TURN_ROWS + 10);
        indexer.writes.stamp_at(Instant::now() + Duration::from_secs(60));
        indexer.notify(&index);
        // Throttled turns of THROTTLED_TURN_ROWS each, with pauses between them: all of them
        // get in while writes still "arrive".
        assert_eq!(pending_within(&index, |n| n == 0), 0);
        assert!(indexer.writes.quiet_in().is_some(), "the rows went in while writes were arriving");
        assert_eq!(read(&index.hnsw).len(), 2 * THROTTLED_TURN_ROWS + 10);
    }

    #[test]
    fn a_compaction_due_while_writes_arrive_runs_once_they_stop() {
        let indexer = Indexer::start(0.5);
        let index = index_with_pending(2 * COMPACT_MIN_TOMBSTONES);
        // Writes "arrive" from before the first turn, so every turn until the window closes is
        // a throttled one (a full turn already running could compact at its end).
        indexer.writes.stamp_at(Instant::now() + Duration::from_secs(60));
        indexer.notify(&index);
        assert_eq!(pending_within(&index, |n| n == 0), 0);
        // Tombstones past the threshold, while writes still arrive.
        for i in 0..(3 * COMPACT_MIN_TOMBSTONES / 2) {
            index.remove(label_of(i as u64 + 1, 0));
        }
        assert!(index.compaction_due());
        indexer.notify(&index);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(indexer.compactions.get(), 0, "no all-core rebuild while writes arrive");
        indexer.writes.stamp_at(indexer.writes.epoch);
        let deadline = Instant::now() + Duration::from_secs(30);
        while indexer.compactions.get() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(indexer.compactions.get(), 1);
        assert!(!index.compaction_due());
        assert_eq!(read(&index.hnsw).len(), COMPACT_MIN_TOMBSTONES / 2);
    }

    /// The graph holds the rows' vectors, not copies: after indexing (in chunks small enough to
    /// go one by one and large ones that go in parallel), each vector has exactly two holders,
    /// the row (here the test's handle) and its graph node; compaction keeps sharing them.
    #[test]
    fn indexed_vectors_are_the_rows_own_allocations() {
        for rows in [10usize, 3_000] {
            let index = CollectionIndex::new(Hnsw::new(HnswParams::new(4, Metric::L2), 16).expect("params"));
            let vectors: Vec<SharedVector> = (0..rows).map(|i| SharedVector::from(vec![i as f32, 1.0, -(i as f32), 0.5])).collect();
            for (i, v) in vectors.iter().enumerate() {
                index.add_pending(label_of(i as u64 + 1, 0), v.clone());
            }
            let indexer = Indexer::start(1.0);
            indexer.notify(&index);
            assert_eq!(pending_within(&index, |n| n == 0), 0);
            // The indexer lets go of the chunk it inserted just after the rows leave `pending`.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !vectors.iter().all(|v| SharedVector::strong_count(v) == 2) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(vectors.iter().all(|v| SharedVector::strong_count(v) == 2), "{rows} rows: a vector was copied or leaked");
            index.remove(label_of(1, 0));
            write(&index.hnsw).compact().expect("compact");
            assert_eq!(SharedVector::strong_count(&vectors[0]), 1, "a compacted graph drops a deleted row's vector");
            assert!(vectors[1..].iter().all(|v| SharedVector::strong_count(v) == 2), "{rows} rows: compaction copied a vector");
        }
    }
}
