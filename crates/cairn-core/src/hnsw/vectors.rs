//! The graph's node vectors, held by reference rather than copied: a node inserted from a row
//! shares the row's allocation (`SharedVector`), so each vector is in memory once (issue 13).
//!
//! - `owners` holds each node's vector handle; the hot path reads its data pointer alone (no
//!   reference-count traffic, no read of the block for the length: the graph knows `dim`).
//! - A graph read from a file (`persist.rs`, `LoadedGraph`) starts with no vectors: its nodes
//!   take the rows' (`LoadedGraph::adopt_row_vector`) and the rest are read back from the file
//!   (`LoadedGraph::finish`).
//! - For cosine the graph keeps the row's vector as it is and each node's norm beside it;
//!   distances divide by it (`Hnsw::distance_to`). A node whose vector is already unit-normalised
//!   (read from a file and not shared) has norm 1.
//!
//! Write-once contract as for the rest of a node (graph.rs): a slot is written only by the thread
//! that allocated the node, before the node is published with Release ordering.

use crate::shared_vector::SharedVector;
use std::cell::UnsafeCell;

/// What keeps a node's vector alive (None for a free slot).
type Owner = UnsafeCell<Option<SharedVector>>;

pub(super) struct VectorSlots {
    owners: Box<[Owner]>,
    norms: Box<[UnsafeCell<f32>]>,
    dim: usize,
}

// SAFETY: the handles in `owners` are owned by this value and their floats immutable once
// written; slots are written under the write-once contract above, so
// sharing across threads never races, and moving the value moves ownership with it.
unsafe impl Sync for VectorSlots {}
// SAFETY: as above; nothing is tied to the creating thread.
unsafe impl Send for VectorSlots {}

fn cells<T>(n: usize, make: impl Fn() -> T) -> Box<[UnsafeCell<T>]> {
    (0..n).map(|_| UnsafeCell::new(make())).collect()
}

impl VectorSlots {
    pub(super) fn new(dim: usize, capacity: usize) -> VectorSlots {
        VectorSlots { owners: cells(capacity, || None), norms: cells(capacity, || 1.0), dim }
    }

    /// Makes node `id` use `vector`, of norm `norm` (1 except for cosine).
    ///
    /// # Safety
    /// The caller must own node `id` exclusively: it was allocated to this caller, and no other
    /// thread can have obtained the id yet (it is not in any link list nor the entry point).
    pub(super) unsafe fn write(&self, id: u32, vector: SharedVector, norm: f32) {
        debug_assert_eq!(vector.len(), self.dim);
        let i = id as usize;
        // SAFETY: exclusivity per the function contract.
        unsafe {
            *self.owners[i].get() = Some(vector);
            *self.norms[i].get() = norm;
        }
    }

    /// Node `id`'s vector; empty for a slot never written (search never reaches one).
    #[inline]
    pub(super) fn get(&self, id: u32) -> &[f32] {
        // SAFETY: the slot is not being written: it is published (written once, then immutable)
        // or never handed out by the graph.
        match unsafe { &*self.owners[id as usize].get() } {
            // SAFETY: the handle points at `dim` floats and keeps them alive.
            Some(vector) => unsafe { std::slice::from_raw_parts(vector.data_ptr(), self.dim) },
            None => &[],
        }
    }

    /// Address of node `id`'s handle, for a cache hint: reading a vector first loads its handle,
    /// so fetching handles early keeps that load from stalling the later vector prefetch.
    #[inline]
    pub(super) fn handle_address(&self, id: u32) -> *const i8 {
        self.owners.get(id as usize).map_or(std::ptr::null(), |cell| cell.get().cast_const().cast())
    }

    /// Whether node `id` has a vector (a graph read with `Hnsw::read_file` has none until its
    /// rows lend theirs and `LoadedGraph::finish` reads the rest).
    pub(super) fn is_set(&self, id: u32) -> bool {
        // SAFETY: as in `get`.
        unsafe { &*self.owners[id as usize].get() }.is_some()
    }

    #[inline]
    pub(super) fn norm(&self, id: u32) -> f32 {
        // SAFETY: as in `get`.
        unsafe { *self.norms[id as usize].get() }
    }

    /// The vector of node `id`, if it has one.
    pub(super) fn shared(&self, id: u32) -> Option<SharedVector> {
        // SAFETY: as in `get`.
        unsafe { (*self.owners[id as usize].get()).clone() }
    }

    /// Swaps in `vector` for node `id` (the same vector, held elsewhere); exclusive access, so no
    /// reader can hold the old one.
    pub(super) fn replace(&mut self, id: u32, vector: SharedVector, norm: f32) {
        let i = id as usize;
        *self.owners[i].get_mut() = Some(vector);
        *self.norms[i].get_mut() = norm;
    }

    /// Moves every slot into storage for `capacity` nodes (larger than now).
    pub(super) fn grow(&mut self, capacity: usize) {
        let mut grown = VectorSlots::new(self.dim, capacity);
        for (to, from) in grown.owners.iter_mut().zip(self.owners.iter_mut()) {
            *to.get_mut() = from.get_mut().take();
        }
        for (to, from) in grown.norms.iter_mut().zip(self.norms.iter_mut()) {
            *to.get_mut() = *from.get_mut();
        }
        *self = grown;
    }

    /// Heap bytes of the slots. The vectors themselves are the rows'
    /// memory and counted there; a node whose row is gone (deleted or overwritten) keeps its
    /// vector alive until compaction, uncounted.
    pub(super) fn heap_bytes(&self) -> usize {
        self.owners.len() * (std::mem::size_of::<Option<SharedVector>>() + 4)
    }
}
