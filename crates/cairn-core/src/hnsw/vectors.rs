//! The graph's node vectors, held by reference rather than copied: a node inserted from a row
//! shares the row's allocation (`Arc<[f32]>`), so each vector is in memory once (issue 13).
//!
//! - `data` holds each node's data pointer, read on the hot path (8 bytes, no reference-count
//!   traffic); `owners` keeps what it points into alive.
//! - A graph read from a file by the engine's open (`Hnsw::read_file`) starts with no vectors:
//!   its nodes take the rows' (`LoadedGraph::adopt_row_vector`) and the rest are read back from
//!   the file (`LoadedGraph::finish`). One read from bytes (`Hnsw::read_from`) points into a
//!   block holding the file's vector section until `release_loaded` copies the rest out.
//! - For cosine the graph keeps the row's vector as it is and each node's norm beside it;
//!   distances divide by it (`Hnsw::distance_to`). A node whose vector is already unit-normalised
//!   (read from a file and not shared) has norm 1.
//!
//! Write-once contract as for the rest of a node (graph.rs): a slot is written only by the thread
//! that allocated the node, before the node is published with Release ordering.

use std::cell::UnsafeCell;
use std::sync::Arc;

/// What keeps a node's vector alive (None for a free slot or one pointing into a loaded block).
type Owner = UnsafeCell<Option<Arc<[f32]>>>;

pub(super) struct VectorSlots {
    data: Box<[UnsafeCell<*const f32>]>,
    owners: Box<[Owner]>,
    norms: Box<[UnsafeCell<f32>]>,
    /// The vector section of the file this graph was read from (`dim` floats per node), while
    /// nodes still point into it.
    loaded: Option<Box<[f32]>>,
    dim: usize,
}

// SAFETY: `data` pointers point into `owners`' allocations or into `loaded`, both owned by this
// value and immutable once written; slots are written under the write-once contract above, so
// sharing across threads never races, and moving the value moves ownership with it.
unsafe impl Sync for VectorSlots {}
// SAFETY: as above; nothing is tied to the creating thread.
unsafe impl Send for VectorSlots {}

fn cells<T>(n: usize, make: impl Fn() -> T) -> Box<[UnsafeCell<T>]> {
    (0..n).map(|_| UnsafeCell::new(make())).collect()
}

impl VectorSlots {
    pub(super) fn new(dim: usize, capacity: usize) -> VectorSlots {
        VectorSlots {
            data: cells(capacity, std::ptr::null),
            owners: cells(capacity, || None),
            norms: cells(capacity, || 1.0),
            loaded: None,
            dim,
        }
    }

    /// Makes node `id` use `vector`, of norm `norm` (1 except for cosine).
    ///
    /// # Safety
    /// The caller must own node `id` exclusively: it was allocated to this caller, and no other
    /// thread can have obtained the id yet (it is not in any link list nor the entry point).
    pub(super) unsafe fn write(&self, id: u32, vector: Arc<[f32]>, norm: f32) {
        debug_assert_eq!(vector.len(), self.dim);
        let i = id as usize;
        // SAFETY: exclusivity per the function contract.
        unsafe {
            *self.data[i].get() = vector.as_ptr();
            *self.owners[i].get() = Some(vector);
            *self.norms[i].get() = norm;
        }
    }

    /// Node `id`'s vector; empty for a slot never written (search never reaches one).
    #[inline]
    pub(super) fn get(&self, id: u32) -> &[f32] {
        // SAFETY: the slot is not being written: it is published (written once, then immutable)
        // or never handed out by the graph.
        let data = unsafe { *self.data[id as usize].get() };
        if data.is_null() {
            return &[];
        }
        // SAFETY: a non-null pointer points at `dim` floats kept alive by `owners` or `loaded`.
        unsafe { std::slice::from_raw_parts(data, self.dim) }
    }

    /// Whether node `id` has a vector (a graph read with `Hnsw::read_file` has none until its
    /// rows lend theirs and `LoadedGraph::finish` reads the rest).
    pub(super) fn is_set(&self, id: u32) -> bool {
        // SAFETY: as in `get`.
        !unsafe { *self.data[id as usize].get() }.is_null()
    }

    #[inline]
    pub(super) fn norm(&self, id: u32) -> f32 {
        // SAFETY: as in `get`.
        unsafe { *self.norms[id as usize].get() }
    }

    /// The owned vector of node `id`, if it has one (not one pointing into a loaded block).
    pub(super) fn shared(&self, id: u32) -> Option<Arc<[f32]>> {
        // SAFETY: as in `get`.
        unsafe { (*self.owners[id as usize].get()).clone() }
    }

    /// Points nodes `0..n` at `block` (`dim` floats each, unit-normalised for cosine), the vector
    /// section of a file being loaded.
    pub(super) fn point_into(&mut self, block: Box<[f32]>) {
        let nodes = block.len() / self.dim.max(1);
        for (i, slot) in self.data.iter_mut().enumerate().take(nodes) {
            // In bounds: i < nodes, so the slice ends inside the block.
            *slot.get_mut() = block[i * self.dim..].as_ptr();
        }
        self.loaded = Some(block);
    }

    /// Swaps in `vector` for node `id` (the same vector, held elsewhere); exclusive access, so no
    /// reader can hold the old one.
    pub(super) fn replace(&mut self, id: u32, vector: Arc<[f32]>, norm: f32) {
        let i = id as usize;
        *self.data[i].get_mut() = vector.as_ptr();
        *self.owners[i].get_mut() = Some(vector);
        *self.norms[i].get_mut() = norm;
    }

    /// Gives every node still pointing into the loaded block a copy of its own, then frees it.
    pub(super) fn release_loaded(&mut self) {
        let Some(block) = self.loaded.take() else { return };
        let range = block.as_ptr_range();
        for i in 0..self.data.len() {
            let data = *self.data[i].get_mut();
            if range.contains(&data) {
                // SAFETY: `data` points at `dim` floats inside `block`, still alive here.
                let copy: Arc<[f32]> = unsafe { std::slice::from_raw_parts(data, self.dim) }.into();
                *self.data[i].get_mut() = copy.as_ptr();
                *self.owners[i].get_mut() = Some(copy);
            }
        }
    }

    /// Moves every slot into storage for `capacity` nodes (larger than now).
    pub(super) fn grow(&mut self, capacity: usize) {
        let mut grown = VectorSlots::new(self.dim, capacity);
        for (to, from) in grown.data.iter_mut().zip(self.data.iter_mut()) {
            *to.get_mut() = *from.get_mut();
        }
        for (to, from) in grown.owners.iter_mut().zip(self.owners.iter_mut()) {
            *to.get_mut() = from.get_mut().take();
        }
        for (to, from) in grown.norms.iter_mut().zip(self.norms.iter_mut()) {
            *to.get_mut() = *from.get_mut();
        }
        // The block's heap address does not change when the box moves.
        grown.loaded = self.loaded.take();
        *self = grown;
    }

    /// Heap bytes of the slots and of a loaded block. The vectors themselves are the rows'
    /// memory and counted there; a node whose row is gone (deleted or overwritten) keeps its
    /// vector alive until compaction, uncounted.
    pub(super) fn heap_bytes(&self) -> usize {
        let slots = self.data.len() * (std::mem::size_of::<*const f32>() + std::mem::size_of::<Option<Arc<[f32]>>>() + 4);
        slots + self.loaded.as_ref().map_or(0, |b| b.len() * 4)
    }
}
