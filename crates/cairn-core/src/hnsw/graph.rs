//! Node storage of the HNSW graph: the node vectors (shared with the rows, `vectors.rs`), flat
//! level-0 link lists, per-node upper-level link lists, labels, levels, tombstones and one
//! spinlock per node.
//!
//! Concurrency model (the reason most fields are atomics):
//! - A node id is allocated once; the allocating thread alone writes its vector, label, level and
//!   upper-link storage, and only then publishes the id (stores it into a link list or into the
//!   entry point with Release ordering).
//! - Link lists are arrays of `AtomicU32`: slot 0 is the count, the rest are neighbour ids.
//!   Writers serialise on the node's spinlock; readers never lock. They load the count and the ids
//!   with Acquire, so a reader may see a mix of an old and a new list, but every id it can see is a
//!   published node whose vector write happens-before the load.
//! - Nothing is ever written to a published node's vector, label or level until the owner has
//!   `&mut` access (`grow`, drop).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

use super::upper_lists::UpperLists;
use crate::mapped::ZeroedArray;

pub(super) use super::vectors::VectorSlots;

/// Highest level a node can be drawn at. With mult = 1/ln(M) and M >= 2 a level above 16 has
/// probability below 2^-23 per node; capping keeps link storage and the file format bounded.
pub(super) const MAX_LEVEL: usize = 16;

const CACHE_LINE_FLOATS: usize = 64 / std::mem::size_of::<f32>();

/// Cache hint; a no-op off x86_64.
#[inline(always)]
fn prefetch(address: *const i8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint and never faults, whatever the address; SSE is part of the
    // x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Read-only view of one link list. Slot 0 holds the count.
#[derive(Clone, Copy)]
pub(super) struct Links<'a> {
    slots: &'a [AtomicU32],
}

impl<'a> Links<'a> {
    #[inline]
    pub(super) fn len(&self) -> usize {
        match self.slots.first() {
            // The clamp keeps a torn or corrupt count from indexing past the list.
            Some(count) => (count.load(Ordering::Acquire) as usize).min(self.slots.len() - 1),
            None => 0,
        }
    }

    #[inline]
    pub(super) fn get(&self, i: usize) -> u32 {
        self.slots[1 + i].load(Ordering::Acquire)
    }

    pub(super) fn to_vec(self) -> Vec<u32> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
}

/// Exclusive right to rewrite one node's link lists; released on drop.
pub(super) struct LinkLock<'a> {
    flag: &'a AtomicBool,
}

impl Drop for LinkLock<'_> {
    fn drop(&mut self) {
        self.flag.store(false, Ordering::Release);
    }
}

/// See `Graph::load_view`. Laid out as in the file: `level0_links` 1 + 2M slots per node
/// (count, then ids), the rest one entry per node. Vectors are not a section here: see `LoadedGraph`.
pub(super) struct LoadView<'a> {
    pub(super) level0_links: &'a mut [AtomicU32],
    pub(super) upper_links: &'a mut UpperLists,
    pub(super) level0_in_degree: &'a mut [AtomicU32],
    pub(super) levels: &'a mut [AtomicU8],
    pub(super) labels: &'a mut [AtomicU64],
    pub(super) tombstones: &'a mut [AtomicBool],
}

pub(super) struct Graph {
    /// Link slots per upper level (count + `max_upper` ids).
    max_upper: usize,
    /// Link slots per level-0 list (count + `max_level0` ids); `max_level0 = 2 * M`.
    max_level0: usize,
    capacity: usize,
    pub(super) vectors: VectorSlots,
    level0_links: ZeroedArray<AtomicU32>,
    upper_links: UpperLists,
    /// Number of level-0 lists that contain each node. Kept so that link pruning can avoid
    /// removing a node's last incoming link, which would make it unreachable by search.
    level0_in_degree: ZeroedArray<AtomicU32>,
    levels: ZeroedArray<AtomicU8>,
    labels: ZeroedArray<AtomicU64>,
    tombstones: ZeroedArray<AtomicBool>,
    link_locks: ZeroedArray<AtomicBool>,
}

impl Graph {
    pub(super) fn new(dim: usize, m: usize, capacity: usize) -> Graph {
        let max_level0 = 2 * m;
        Graph {
            max_upper: m,
            max_level0,
            capacity,
            vectors: VectorSlots::new(dim, capacity),
            level0_links: ZeroedArray::new(capacity * (1 + max_level0)),
            upper_links: UpperLists::new(capacity),
            level0_in_degree: ZeroedArray::new(capacity),
            levels: ZeroedArray::new(capacity),
            labels: ZeroedArray::new(capacity),
            tombstones: ZeroedArray::new(capacity),
            link_locks: ZeroedArray::new(capacity),
        }
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Maximum neighbours of a node at `level` (2*M at level 0, M above).
    #[inline]
    pub(super) fn max_links(&self, level: usize) -> usize {
        if level == 0 {
            self.max_level0
        } else {
            self.max_upper
        }
    }

    /// Makes room for `new_capacity` nodes. Exclusive access makes it race-free; ids and link
    /// lists are unchanged. Large arrays are lengthened in place (`ZeroedArray::grow` moves their
    /// pages), so a graph is never held twice while it grows.
    pub(super) fn grow(&mut self, new_capacity: usize) {
        if new_capacity <= self.capacity {
            return;
        }
        self.vectors.grow(new_capacity);
        self.level0_links.grow(new_capacity * (1 + self.max_level0));
        self.upper_links.grow(new_capacity);
        self.level0_in_degree.grow(new_capacity);
        self.levels.grow(new_capacity);
        self.labels.grow(new_capacity);
        self.tombstones.grow(new_capacity);
        // No lock is held under exclusive access: the grown locks are all free.
        self.link_locks.grow(new_capacity);
        self.capacity = new_capacity;
    }

    /// Records a freshly allocated node's label and level and gives it empty upper-level lists.
    /// Must run before the node is published (same contract as `VectorSlots::write`).
    pub(super) fn init_node(&self, id: u32, label: u64, level: usize) {
        let i = id as usize;
        self.labels[i].store(label, Ordering::Relaxed);
        self.levels[i].store(level as u8, Ordering::Relaxed);
        // The tombstone is left alone: a concurrent delete of the label may already have set it.
        if level > 0 {
            // A fresh id has no upper storage yet (`set` keeps any it had).
            self.upper_links.set(i, level * (1 + self.max_upper));
        }
    }

    #[inline]
    pub(super) fn vector(&self, id: u32) -> &[f32] {
        self.vectors.get(id)
    }

    /// The norm `vector(id)` is divided by for cosine (1 for a unit vector and other metrics).
    #[inline]
    pub(super) fn norm(&self, id: u32) -> f32 {
        self.vectors.norm(id)
    }

    #[inline]
    pub(super) fn label(&self, id: u32) -> u64 {
        self.labels[id as usize].load(Ordering::Relaxed)
    }

    #[inline]
    pub(super) fn level(&self, id: u32) -> usize {
        self.levels[id as usize].load(Ordering::Relaxed) as usize
    }

    #[inline]
    pub(super) fn is_tombstoned(&self, id: u32) -> bool {
        self.tombstones[id as usize].load(Ordering::Relaxed)
    }

    /// Returns true if this call set the tombstone (it was live before).
    pub(super) fn set_tombstone(&self, id: u32) -> bool {
        !self.tombstones[id as usize].swap(true, Ordering::Relaxed)
    }

    #[inline]
    fn link_slots(&self, id: u32, level: usize) -> &[AtomicU32] {
        let i = id as usize;
        if level == 0 {
            let stride = 1 + self.max_level0;
            &self.level0_links[i * stride..(i + 1) * stride]
        } else {
            let stride = 1 + self.max_upper;
            let lists = self.upper_links.get(i);
            // A node above its own level has no list; an empty view keeps callers panic-free.
            if level * stride <= lists.len() {
                &lists[(level - 1) * stride..level * stride]
            } else {
                &[]
            }
        }
    }

    #[inline]
    pub(super) fn links(&self, id: u32, level: usize) -> Links<'_> {
        Links { slots: self.link_slots(id, level) }
    }

    /// Starts loading the vector of `id` into cache (every line of it: the hardware prefetcher
    /// would otherwise miss on the first few lines of each randomly placed vector).
    #[inline]
    pub(super) fn prefetch_vector(&self, id: u32) {
        let vector = self.vectors.get(id);
        for line in vector.chunks(CACHE_LINE_FLOATS) {
            prefetch(line.as_ptr().cast());
        }
    }

    /// Starts loading the handle through which `vector(id)` is read (see `prefetch_vector`).
    #[inline]
    pub(super) fn prefetch_vector_handle(&self, id: u32) {
        prefetch(self.vectors.handle_address(id));
    }

    /// Starts loading the link list of `id` on `level` into cache.
    #[inline]
    pub(super) fn prefetch_links(&self, id: u32, level: usize) {
        let slots = self.link_slots(id, level);
        prefetch(slots.as_ptr().cast());
    }

    /// Spins until this thread holds node `id`'s link lock. Critical sections are a few hundred
    /// distance computations at most, so spinning (then yielding) beats a parked mutex here.
    pub(super) fn lock_links(&self, id: u32) -> LinkLock<'_> {
        let flag = &self.link_locks[id as usize];
        let mut spins = 0u32;
        while flag.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        LinkLock { flag }
    }

    /// How many level-0 lists contain `id` (exact once concurrent link updates have finished).
    ///
    /// The count never exceeds the real number: a link is counted after it is written and
    /// released (`release_level0_link`) before it is removed. So a count of 1 or more means a
    /// link exists, and since no release takes a live node from 1 to 0, it keeps existing.
    #[inline]
    pub(super) fn level0_in_degree(&self, id: u32) -> u32 {
        self.level0_in_degree[id as usize].load(Ordering::Relaxed)
    }

    /// Uncounts one level-0 link to `id` so the caller may remove it from the list it holds
    /// locked. Refused (false) for the last counted link of a live node, which must then stay.
    /// Deciding and decrementing in one atomic step is what stops two inserters pruning two
    /// different lists from each dropping one of a node's last two links.
    pub(super) fn release_level0_link(&self, id: u32) -> bool {
        let tombstoned = self.is_tombstoned(id);
        self.level0_in_degree[id as usize]
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |count| (count > 1 || (tombstoned && count > 0)).then(|| count - 1))
            .is_ok()
    }

    /// Replaces the list of `id` at `level`. The caller holds `id`'s link lock and, on level 0,
    /// has released every id it drops from the list (`release_level0_link`). Ids are stored
    /// before the count so a reader never sees a count covering unwritten slots of this list.
    pub(super) fn set_links(&self, _lock: &LinkLock<'_>, id: u32, level: usize, neighbours: &[u32]) {
        let previous = if level == 0 { self.links(id, 0).to_vec() } else { Vec::new() };
        let slots = self.link_slots(id, level);
        let Some((count, ids)) = slots.split_first() else {
            return;
        };
        let n = neighbours.len().min(ids.len());
        let neighbours = &neighbours[..n];
        for (slot, &neighbour) in ids.iter().zip(neighbours) {
            slot.store(neighbour, Ordering::Release);
        }
        count.store(n as u32, Ordering::Release);
        if level == 0 {
            for added in neighbours.iter().filter(|id| !previous.contains(id)) {
                self.level0_in_degree[*added as usize].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Appends `neighbour` if the list has room; returns false when it is full.
    pub(super) fn push_link(&self, _lock: &LinkLock<'_>, id: u32, level: usize, neighbour: u32) -> bool {
        let slots = self.link_slots(id, level);
        let Some((count, ids)) = slots.split_first() else {
            return false;
        };
        let n = count.load(Ordering::Relaxed) as usize;
        if n >= ids.len() {
            return false;
        }
        ids[n].store(neighbour, Ordering::Release);
        count.store(n as u32 + 1, Ordering::Release);
        if level == 0 {
            self.level0_in_degree[neighbour as usize].fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Exclusive views of every per-node array, for filling a fresh graph from a persisted index
    /// without atomics or publication. The loader must leave the arrays consistent: link lists
    /// within their counts naming nodes of the right level, `level0_in_degree` counting them, and
    /// upper-level lists present exactly for levels 1..=level.
    pub(super) fn load_view(&mut self) -> LoadView<'_> {
        LoadView {
            level0_links: &mut self.level0_links,
            upper_links: &mut self.upper_links,
            level0_in_degree: &mut self.level0_in_degree,
            levels: &mut self.levels,
            labels: &mut self.labels,
            tombstones: &mut self.tombstones,
        }
    }

    /// Heap bytes held for `capacity` nodes (arenas are preallocated, so this does not depend on
    /// how many nodes are in use, except for upper-level lists). Vectors shared with the rows are
    /// not counted (see `VectorSlots::heap_bytes`).
    pub(super) fn heap_bytes(&self) -> usize {
        self.vectors.heap_bytes()
            + self.level0_links.len() * std::mem::size_of::<AtomicU32>()
            + self.upper_links.len() * std::mem::size_of::<usize>()
            + self.level0_in_degree.len() * std::mem::size_of::<AtomicU32>()
            + self.upper_links.list_bytes()
            + self.levels.len()
            + self.labels.len() * std::mem::size_of::<AtomicU64>()
            + self.tombstones.len()
            + self.link_locks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_round_trip_and_respect_capacity() {
        let graph = Graph::new(4, 2, 3);
        graph.init_node(0, 10, 1);
        let lock = graph.lock_links(0);
        assert!(graph.push_link(&lock, 0, 0, 1));
        graph.set_links(&lock, 0, 1, &[2, 1, 7]);
        drop(lock);
        assert_eq!(graph.links(0, 0).to_vec(), vec![1]);
        // Level 1 holds at most M = 2 links; the extra id is dropped, not written out of bounds.
        assert_eq!(graph.links(0, 1).to_vec(), vec![2, 1]);
        assert_eq!(graph.links(0, 2).len(), 0, "a level above the node's own has no list");
        assert_eq!(graph.links(1, 1).len(), 0);
    }

    #[test]
    fn grow_keeps_nodes_and_links() {
        let mut graph = Graph::new(2, 2, 2);
        // SAFETY: single-threaded test; node 1 is unpublished.
        unsafe { graph.vectors.write(1, crate::shared_vector::SharedVector::from_slice(&[3.0f32, 4.0]), 1.0) };
        graph.init_node(1, 99, 2);
        let lock = graph.lock_links(1);
        graph.set_links(&lock, 1, 2, &[0]);
        drop(lock);
        graph.grow(10);
        assert_eq!(graph.capacity(), 10);
        assert_eq!(graph.vector(1), &[3.0, 4.0]);
        assert_eq!(graph.label(1), 99);
        assert_eq!(graph.level(1), 2);
        assert_eq!(graph.links(1, 2).to_vec(), vec![0]);
    }
}
