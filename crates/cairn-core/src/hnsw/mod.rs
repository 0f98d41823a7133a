//! HNSW index (Malkov & Yashunin) over vectors identified by opaque u64 labels.
//!
//! - `graph.rs`: node storage, link lists and their per-node locks.
//! - `vectors.rs`: the node vectors, shared with the rows rather than copied.
//! - `build.rs`: concurrent insertion, level draws and the neighbour-selection heuristic.
//! - `search.rs`: layer search, the public k-NN search and per-thread search scratch.
//! - `persist.rs`: the on-disk index format.
//! - `sections.rs`: reading that file section by section into the graph's arrays, checksummed.
//! - `kernel.rs`: vectorised distance kernels.
//!
//! Labels map to internal node ids. An update or a delete never rewrites a node: the old node is
//! tombstoned (kept as a navigation hop, never returned) and an update gets a new node. So every
//! allocated node is either live or a tombstone: `len() + deleted_count()` is the number of node
//! slots in use, and `compact` rebuilds the graph from the live nodes only.
//!
//! Concurrency: `insert`, `insert_batch` and `mark_deleted` take `&self` and run alongside each
//! other and alongside `search`, which never takes a lock (link lists are atomics; writers hold a
//! per-node spinlock). `write_to` holds off writers for its duration. `reserve` and `compact` need
//! `&mut self`.

mod build;
mod graph;
mod kernel;
mod persist;
mod search;
mod sections;
mod upper_lists;
mod vectors;

use crate::shared_vector::SharedVector;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

use crate::distance::{cosine_norm, normalize, Metric};
use crate::error::{Error, Result};
// Poisoning only means another thread panicked while holding a lock; every critical section
// leaves the directory consistent at each step, so the data is still valid.
use crate::sync::{read, write};
use graph::Graph;
pub use persist::{LoadedGraph, INDEX_FORMAT_VERSION, INDEX_MAGIC};

pub const DEFAULT_M: usize = 16;
pub const DEFAULT_EF_CONSTRUCTION: usize = 200;
/// Upper bound on M: link lists are sized 2*M at level 0 and stored as u32 counts.
pub const MAX_M: usize = 512;
/// Node ids are u32 and `u32::MAX` marks "no node" in the entry point and the file format.
pub const MAX_CAPACITY: usize = u32::MAX as usize - 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HnswParams {
    pub dim: usize,
    pub metric: Metric,
    /// Links per node on upper levels; level 0 allows 2*M.
    pub m: usize,
    pub ef_construction: usize,
}

impl HnswParams {
    /// Parameters with the defaults M = 16 and ef_construction = 200.
    pub fn new(dim: usize, metric: Metric) -> HnswParams {
        HnswParams { dim, metric, m: DEFAULT_M, ef_construction: DEFAULT_EF_CONSTRUCTION }
    }

    fn validate(&self) -> Result<()> {
        if self.dim == 0 || self.dim > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!("hnsw dim must be between 1 and 2^32-1, got {}", self.dim)));
        }
        if self.m < 2 || self.m > MAX_M {
            return Err(Error::InvalidArgument(format!("hnsw m must be between 2 and {MAX_M}, got {}", self.m)));
        }
        if self.ef_construction == 0 || self.ef_construction > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!("hnsw ef_construction must be between 1 and 2^32-1, got {}", self.ef_construction)));
        }
        Ok(())
    }
}

/// Label ownership and node allocation; one lock so that an update's "tombstone the old node,
/// point the label at the new one" is atomic with respect to other writers.
#[derive(Default)]
struct LabelDirectory {
    node_of_label: HashMap<u64, u32>,
    /// Next unallocated node id; ids below it are live or tombstoned.
    allocated: u32,
    tombstones: usize,
}

/// Entry node and the graph's top level, packed so searchers read both with one atomic load:
/// bits 0..32 hold the node id, bits 32..64 hold level + 1 (0 means the graph is empty).
struct EntryPoint {
    packed: AtomicU64,
    /// Serialises the rare writers (first node, or a node above the current top level).
    update: Mutex<()>,
}

impl EntryPoint {
    fn empty() -> EntryPoint {
        EntryPoint { packed: AtomicU64::new(0), update: Mutex::new(()) }
    }

    fn pack(node: u32, level: usize) -> u64 {
        ((level as u64 + 1) << 32) | node as u64
    }

    /// `(node, top level)`, or None for an empty graph. Acquire pairs with the Release in `set`, so
    /// the entry node's vector and links are visible.
    fn get(&self) -> Option<(u32, usize)> {
        let packed = self.packed.load(Ordering::Acquire);
        let level_plus_one = packed >> 32;
        (level_plus_one != 0).then(|| (packed as u32, level_plus_one as usize - 1))
    }

    fn set(&self, node: u32, level: usize) {
        self.packed.store(EntryPoint::pack(node, level), Ordering::Release);
    }
}

pub struct Hnsw {
    params: HnswParams,
    /// `params.metric`'s distance, vectorised for this CPU.
    distance: kernel::DistanceFn,
    /// Cosine: node vectors are kept as the rows hold them and distances divide by their norms.
    cosine: bool,
    graph: Graph,
    directory: RwLock<LabelDirectory>,
    entry: EntryPoint,
    /// Inserts and deletes hold it shared; `write_to` holds it exclusively, so a persisted file
    /// never contains a half-inserted node.
    insert_gate: RwLock<()>,
    /// Counter behind the level draws (each insert hashes the next value), persisted so a loaded
    /// index keeps drawing fresh levels.
    level_draws: AtomicU64,
    /// 1/ln(M): expected fraction of nodes on level l is M^-l.
    level_mult: f64,
}

impl Hnsw {
    pub fn new(params: HnswParams, capacity: usize) -> Result<Hnsw> {
        params.validate()?;
        if capacity > MAX_CAPACITY || capacity.checked_mul(params.dim).is_none() {
            return Err(Error::InvalidArgument(format!("hnsw capacity {capacity} is too large")));
        }
        Ok(Hnsw {
            params,
            distance: kernel::kernel_for(params.metric),
            cosine: params.metric == Metric::Cosine,
            graph: Graph::new(params.dim, params.m, capacity),
            directory: RwLock::new(LabelDirectory::default()),
            entry: EntryPoint::empty(),
            insert_gate: RwLock::new(()),
            level_draws: AtomicU64::new(0),
            level_mult: 1.0 / (params.m as f64).ln(),
        })
    }

    pub fn params(&self) -> &HnswParams {
        &self.params
    }

    /// Node slots, live plus tombstoned plus free.
    pub fn capacity(&self) -> usize {
        self.graph.capacity()
    }

    /// Free node slots. Every insert (including an update of an existing label) takes one.
    pub fn remaining_capacity(&self) -> usize {
        self.graph.capacity() - read(&self.directory).allocated as usize
    }

    /// Grows storage to `new_capacity` node slots (clamped to `MAX_CAPACITY`); never shrinks.
    pub fn reserve(&mut self, new_capacity: usize) {
        let mut new_capacity = new_capacity.min(MAX_CAPACITY);
        if new_capacity.checked_mul(self.params.dim).is_none() {
            new_capacity = usize::MAX / self.params.dim;
        }
        self.graph.grow(new_capacity);
    }

    pub fn mark_deleted(&self, label: u64) {
        let _gate = read(&self.insert_gate);
        let mut directory = write(&self.directory);
        if let Some(node) = directory.node_of_label.remove(&label) {
            if self.graph.set_tombstone(node) {
                directory.tombstones += 1;
            }
        }
    }

    /// Every live label, in no particular order (used to match a loaded graph against rows).
    pub fn labels(&self) -> Vec<u64> {
        read(&self.directory).node_of_label.keys().copied().collect()
    }

    pub fn contains(&self, label: u64) -> bool {
        read(&self.directory).node_of_label.contains_key(&label)
    }

    pub fn len(&self) -> usize {
        read(&self.directory).node_of_label.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tombstoned nodes: deleted labels and the superseded nodes of updated labels. They stay in
    /// the graph (as hops) until `compact`.
    pub fn deleted_count(&self) -> usize {
        read(&self.directory).tombstones
    }

    /// Heap bytes held by the index: preallocated node storage for `capacity` nodes, upper-level
    /// link lists and the label map. The vectors are the rows' (shared, see `vectors.rs`) and not
    /// counted. Per-thread search scratch (2 bytes per node slot per thread that has searched) is
    /// not owned by the index and not counted.
    pub fn memory_bytes(&self) -> usize {
        let directory = read(&self.directory);
        // hashbrown keeps capacity*8/7 buckets rounded up to a power of two, each holding the
        // (u64, u32) entry padded to 16 bytes plus one control byte.
        let map_capacity = directory.node_of_label.capacity();
        let buckets = if map_capacity == 0 { 0 } else { (map_capacity * 8 / 7).next_power_of_two() };
        let map_bytes = buckets * (std::mem::size_of::<(u64, u32)>() + 1);
        self.graph.heap_bytes() + map_bytes
    }

    /// Rebuilds the graph from the live nodes only, in parallel, keeping capacity and labels.
    /// Tombstones stop costing memory, hops and link slots, and recall returns to that of a fresh
    /// build.
    pub fn compact(&mut self) -> Result<()> {
        let items = self.live_nodes();
        *self = self.rebuilt_from(&items)?;
        Ok(())
    }

    /// Like `compact`, but builds the new index beside this one, so searches (and inserts) can go
    /// on meanwhile; the caller swaps it in. Inserts and deletes are held off only while the live
    /// vectors are collected; any that land after that are not in the result, so the caller
    /// must replay them (or hold off writes) before swapping.
    pub fn compacted(&self) -> Result<Hnsw> {
        let items = {
            // Exclusive gate: no node is half-written while its vector is taken.
            let _gate = write(&self.insert_gate);
            self.live_nodes()
        };
        self.rebuilt_from(&items)
    }

    /// Label, vector (shared, not copied, where the node owns one) and norm of every live node.
    fn live_nodes(&self) -> Vec<(u64, SharedVector, f32)> {
        let allocated = read(&self.directory).allocated;
        (0..allocated)
            .filter(|&node| !self.graph.is_tombstoned(node))
            .map(|node| {
                let vector = self.graph.vectors.shared(node).unwrap_or_else(|| self.graph.vector(node).into());
                (self.graph.label(node), vector, self.graph.norm(node))
            })
            .collect()
    }

    /// A fresh index with this one's parameters and capacity holding exactly `items`.
    fn rebuilt_from(&self, items: &[(u64, SharedVector, f32)]) -> Result<Hnsw> {
        let rebuilt = Hnsw::new(self.params, self.graph.capacity())?;
        rebuilt.level_draws.store(self.level_draws.load(Ordering::Relaxed), Ordering::Relaxed);
        // The nodes keep their vectors and norms as they are (no renormalising, which would
        // perturb unit vectors read from a file by rounding).
        rebuilt.insert_many(items)?;
        Ok(rebuilt)
    }

    /// Makes the node of `label`, in a graph read from a file, use `row` (the row's vector)
    /// instead of a copy from the file, so each vector is in memory once. The row is the
    /// authority: its record passed its checksum on load, and a label names one write, so the
    /// file's copy is the same vector (normalised, for cosine). False when the label has no
    /// live node.
    pub(super) fn adopt_row_vector(&mut self, label: u64, row: &SharedVector) -> bool {
        let Some(&node) = self.directory.get_mut().unwrap_or_else(PoisonError::into_inner).node_of_label.get(&label) else {
            return false;
        };
        let norm = self.norm_of(row);
        self.graph.vectors.replace(node, row.clone(), norm);
        true
    }

    /// The node's vector as a query: unit-normalised for cosine, as search queries are.
    fn node_query(&self, node: u32) -> std::borrow::Cow<'_, [f32]> {
        let vector = self.graph.vector(node);
        if self.cosine {
            let norm = self.graph.norm(node);
            std::borrow::Cow::Owned(vector.iter().map(|x| x / norm).collect())
        } else {
            std::borrow::Cow::Borrowed(vector)
        }
    }

    /// A query as searched: a normalised copy for cosine, borrowed unchanged otherwise.
    fn prepare<'a>(&self, vector: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
        match self.params.metric {
            Metric::Cosine => std::borrow::Cow::Owned(normalize(vector)),
            Metric::L2 | Metric::Ip => std::borrow::Cow::Borrowed(vector),
        }
    }

    /// The norm a stored vector's distances divide by: its length for cosine, else 1.
    fn norm_of(&self, vector: &[f32]) -> f32 {
        if self.cosine {
            cosine_norm(vector)
        } else {
            1.0
        }
    }

    fn check_vector(&self, vector: &[f32]) -> Result<()> {
        if vector.len() != self.params.dim {
            return Err(Error::InvalidArgument(format!("vector has dimension {}, index expects {}", vector.len(), self.params.dim)));
        }
        if vector.iter().any(|x| !x.is_finite()) {
            return Err(Error::InvalidArgument("vector contains NaN or Infinity".to_string()));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod test_data {
    /// splitmix64: a tiny deterministic generator for test vectors.
    pub struct TestRng(pub u64);

    impl TestRng {
        pub fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        pub fn unit(&mut self) -> f32 {
            (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
        }

        pub fn vectors(&mut self, n: usize, dim: usize) -> Vec<Vec<f32>> {
            (0..n).map(|_| (0..dim).map(|_| self.unit() * 2.0 - 1.0).collect()).collect()
        }
    }

    pub fn brute_force(metric: crate::distance::Metric, data: &[(u64, Vec<f32>)], query: &[f32], k: usize) -> Vec<u64> {
        let prepare = |v: &[f32]| match metric {
            crate::distance::Metric::Cosine => crate::distance::normalize(v),
            _ => v.to_vec(),
        };
        let q = prepare(query);
        let mut scored: Vec<(f32, u64)> = data.iter().map(|(label, v)| (metric.distance(&q, &prepare(v)), *label)).collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        scored.into_iter().take(k).map(|(_, label)| label).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_data::TestRng;
    use super::*;

    fn small_index(metric: Metric, capacity: usize) -> Hnsw {
        Hnsw::new(HnswParams { dim: 8, metric, m: 8, ef_construction: 64 }, capacity).expect("valid params")
    }

    #[test]
    fn invalid_params_are_rejected() {
        let bad_dim = HnswParams { dim: 0, ..HnswParams::new(4, Metric::L2) };
        assert!(matches!(Hnsw::new(bad_dim, 10), Err(Error::InvalidArgument(_))));
        let bad_m = HnswParams { m: 1, ..HnswParams::new(4, Metric::L2) };
        assert!(matches!(Hnsw::new(bad_m, 10), Err(Error::InvalidArgument(_))));
        let bad_ef = HnswParams { ef_construction: 0, ..HnswParams::new(4, Metric::L2) };
        assert!(matches!(Hnsw::new(bad_ef, 10), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn hnsw_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Hnsw>();
    }

    #[test]
    fn capacity_exhaustion_is_an_error_until_reserve() {
        let mut index = small_index(Metric::L2, 2);
        let mut rng = TestRng(1);
        let vectors = rng.vectors(3, 8);
        index.insert(1, &vectors[0]).expect("room for two");
        index.insert(2, &vectors[1]).expect("room for two");
        assert!(matches!(index.insert(3, &vectors[2]), Err(Error::InvalidArgument(_))));
        assert!(!index.contains(3));
        index.reserve(4);
        assert_eq!(index.capacity(), 4);
        index.insert(3, &vectors[2]).expect("room after reserve");
        assert_eq!(index.len(), 3);
        assert_eq!(index.search(&vectors[2], 1, 16, None)[0].0, 3);
        assert_eq!(index.search(&vectors[0], 1, 16, None)[0].0, 1);
    }

    #[test]
    fn wrong_dimension_and_non_finite_vectors_are_rejected() {
        let index = small_index(Metric::L2, 4);
        assert!(matches!(index.insert(1, &[0.0; 3]), Err(Error::InvalidArgument(_))));
        let mut v = vec![0.0; 8];
        v[3] = f32::NAN;
        assert!(matches!(index.insert(1, &v), Err(Error::InvalidArgument(_))));
        assert!(index.is_empty());
        assert_eq!(index.remaining_capacity(), 4);
    }

    #[test]
    fn mark_deleted_is_idempotent_and_ignores_unknown_labels() {
        let index = small_index(Metric::L2, 8);
        let mut rng = TestRng(2);
        for (label, v) in rng.vectors(4, 8).iter().enumerate() {
            index.insert(label as u64, v).expect("capacity");
        }
        index.mark_deleted(2);
        index.mark_deleted(2);
        index.mark_deleted(77);
        assert_eq!(index.len(), 3);
        assert_eq!(index.deleted_count(), 1);
        assert!(!index.contains(2));
        assert!(index.contains(1));
    }

    #[test]
    fn compact_drops_tombstones_and_keeps_live_labels() {
        let mut index = small_index(Metric::Cosine, 300);
        let mut rng = TestRng(3);
        let vectors = rng.vectors(200, 8);
        for (label, v) in vectors.iter().enumerate() {
            index.insert(label as u64, v).expect("capacity");
        }
        for label in (0..200).step_by(2) {
            index.mark_deleted(label);
        }
        let beside = index.compacted().expect("compacted");
        index.compact().expect("compact");
        for compacted in [&index, &beside] {
            assert_eq!(compacted.len(), 100);
            assert_eq!(compacted.deleted_count(), 0);
            assert_eq!(compacted.capacity(), 300);
        }
        assert_eq!(index.len(), 100);
        assert_eq!(index.deleted_count(), 0);
        assert_eq!(index.capacity(), 300);
        for label in (1..200).step_by(2) {
            let hits = index.search(&vectors[label as usize], 1, 32, None);
            assert_eq!(hits[0].0, label, "a live vector finds itself after compact");
        }
    }

    #[test]
    fn memory_estimate_covers_the_vector_arena() {
        let index = small_index(Metric::L2, 1000);
        assert!(index.memory_bytes() >= 1000 * 8 * 4);
    }
}
