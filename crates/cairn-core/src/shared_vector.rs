//! `SharedVector`: an immutable, reference-counted vector of floats, held once by the row store,
//! the pending queue, retained versions and the graph (issue 13: each vector in memory once).
//!
//! Why not `Arc<[f32]>`: its 16-byte header makes a 128-d vector a 528-byte allocation, which
//! the allocator serves from its 640-byte size class (a quarter more than the floats). Here
//! vectors of one length are slots in shared blocks (2 MiB of floats and up) and
//! their reference counts live in a separate array per block, so a slot is exactly `4 * dim`
//! bytes with no header and no rounding.
//!
//! Invariants:
//! - A slot's floats are written once, by the thread that took the slot, before any handle to it
//!   exists; afterwards they are only read.
//! - A slot is free exactly when its count is 0. Taking and returning slots, and each block's
//!   bookkeeping, happen under the `POOLS` lock; counts change outside it (atomics).
//! - A block is freed when its last slot is returned, except for one empty one-page block per
//!   length kept as a spare (so a length whose only vector is replaced over and over does not
//!   map and unmap a block each time).

use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::mapped::{self, HUGE_PAGE};
use crate::sync::lock;

/// A length's first blocks are one transparent huge page each (`mapped.rs`: searches read
/// vectors at random); every `BLOCKS_PER_SIZE` blocks the size doubles, up to
/// `HUGE_PAGE << MAX_DOUBLINGS`, so a large store keeps its mappings (one per block) few: the
/// kernel's default limit is 65,530 mappings a process. A block holds at least one vector.
const BLOCKS_PER_SIZE: usize = 16;
const MAX_DOUBLINGS: usize = 6;

/// Slots of the next block of vectors of `dim` floats, when `blocks` blocks exist.
fn slots_per_block(dim: usize, blocks: usize) -> usize {
    let bytes = HUGE_PAGE << (blocks / BLOCKS_PER_SIZE).min(MAX_DOUBLINGS);
    (bytes / (4 * dim)).max(1)
}

/// One length's slots: the shared float storage and one reference count per slot.
struct Block {
    dim: usize,
    slots: usize,
    /// `slots * dim` floats in their own mapping (`mapped::map_zeroed`).
    data: NonNull<f32>,
    counts: Box<[AtomicU32]>,
    /// Guarded by `POOLS` (read and written only while it is held).
    book: std::cell::UnsafeCell<Bookkeeping>,
}

/// Which slots of a block are free.
#[derive(Default)]
struct Bookkeeping {
    /// Returned slots, reused first.
    free: Vec<u32>,
    /// Slots at or after this index were never taken.
    untouched_from: usize,
    taken: usize,
    /// Position in the pool's `open` list while the block has a free slot.
    open_at: Option<usize>,
}

impl Block {
    fn bytes(slots: usize, dim: usize) -> usize {
        // Lengths are bounded by the collection's dimension limit long before this could trip.
        (slots * dim * 4).next_multiple_of(HUGE_PAGE)
    }

    fn new(dim: usize, slots: usize) -> NonNull<Block> {
        let block = Box::new(Block {
            dim,
            slots,
            data: mapped::map_zeroed(Block::bytes(slots, dim)).cast(),
            counts: (0..slots).map(|_| AtomicU32::new(0)).collect(),
            book: std::cell::UnsafeCell::new(Bookkeeping::default()),
        });
        NonNull::from(Box::leak(block))
    }

    /// # Safety
    /// `block` came from `Block::new`, no slot of it is taken, and it is in no pool list.
    unsafe fn free(block: NonNull<Block>) {
        // SAFETY: per the contract, this is the last use of the block and its storage.
        let b = unsafe { Box::from_raw(block.as_ptr()) };
        // SAFETY: the mapping was made in `new` with this length and is no longer used.
        unsafe { mapped::unmap(b.data.cast(), Block::bytes(b.slots, b.dim)) };
    }
}

/// The blocks of one vector length.
struct Pool {
    dim: usize,
    /// Blocks with at least one free slot.
    open: Vec<NonNull<Block>>,
    /// An empty block kept for reuse (also in `open`).
    spare: Option<NonNull<Block>>,
    blocks: usize,
    /// Slots in those blocks, taken or free.
    slots: usize,
    taken: usize,
}

/// What the vector blocks hold, over every length (`SharedVector::census`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VectorCensus {
    pub blocks: usize,
    /// Bytes of floats in those blocks, taken or free.
    pub block_bytes: usize,
    /// Vectors alive.
    pub vectors: usize,
    /// Bytes of floats of the vectors alive.
    pub vector_bytes: usize,
}

struct Pools(Vec<Pool>);

// SAFETY: the block pointers are owned by the pools and only dereferenced under the lock or
// through a live handle (which keeps its block alive).
unsafe impl Send for Pools {}

static POOLS: Mutex<Pools> = Mutex::new(Pools(Vec::new()));

/// An immutable vector of `f32`, shared by cloning (a reference count, no copy).
pub struct SharedVector {
    /// The slot's first float.
    data: NonNull<f32>,
    block: NonNull<Block>,
}

// SAFETY: the floats are immutable once a handle exists and the counts are atomic; block
// bookkeeping is only touched under the `POOLS` lock.
unsafe impl Send for SharedVector {}
// SAFETY: as above.
unsafe impl Sync for SharedVector {}

impl SharedVector {
    /// A vector of `dim` floats written by `fill` (given the zeroed slot, exactly once).
    pub fn from_fn(dim: usize, fill: impl FnOnce(&mut [f32])) -> SharedVector {
        if dim == 0 {
            // Decoded before its length is checked against the collection's, so it must exist.
            fill(&mut []);
            return SharedVector { data: NonNull::dangling(), block: empty_block() };
        }
        let (block, slot) = take_slot(dim);
        // SAFETY: `block` stays alive while a slot of it is taken.
        let b = unsafe { block.as_ref() };
        // SAFETY: slot < b.slots, so the offset is inside the block's floats.
        let data = unsafe { NonNull::new_unchecked(b.data.as_ptr().add(slot * dim)) };
        // SAFETY: the slot was just taken by this thread: no handle to it exists yet, so this
        // is the only reference to its floats.
        fill(unsafe { std::slice::from_raw_parts_mut(data.as_ptr(), dim) });
        SharedVector { data, block }
    }

    pub fn from_slice(v: &[f32]) -> SharedVector {
        SharedVector::from_fn(v.len(), |slot| slot.copy_from_slice(v))
    }

    /// Decodes little-endian floats (`bytes.len()` a multiple of 4).
    pub fn from_le_bytes(bytes: &[u8]) -> SharedVector {
        debug_assert_eq!(bytes.len() % 4, 0);
        SharedVector::from_fn(bytes.len() / 4, |slot| {
            for (to, from) in slot.iter_mut().zip(bytes.as_chunks::<4>().0) {
                *to = f32::from_le_bytes(*from);
            }
        })
    }

    /// Whether both handles share one slot.
    pub fn ptr_eq(a: &SharedVector, b: &SharedVector) -> bool {
        a.data == b.data
    }

    /// Blocks and vectors held now, over every vector length in the process.
    pub fn census() -> VectorCensus {
        let pools = lock(&POOLS);
        let mut c = VectorCensus::default();
        for p in &pools.0 {
            c.blocks += p.blocks;
            c.block_bytes += p.slots * 4 * p.dim;
            c.vectors += p.taken;
            c.vector_bytes += p.taken * 4 * p.dim;
        }
        c
    }

    /// Handles to this vector, this one included (for tests and diagnostics); 1 for an empty
    /// vector, which is never counted.
    pub fn strong_count(v: &SharedVector) -> usize {
        if v.is_empty() {
            return 1;
        }
        v.count().load(Ordering::Acquire) as usize
    }

    fn slot(&self) -> usize {
        // SAFETY: this handle keeps the block alive.
        let b = unsafe { self.block.as_ref() };
        // SAFETY: `data` was derived from `b.data` by adding `slot * dim` floats.
        (unsafe { self.data.as_ptr().offset_from(b.data.as_ptr()) }) as usize / b.dim
    }

    fn count(&self) -> &AtomicU32 {
        // SAFETY: this handle keeps the block alive.
        let b = unsafe { self.block.as_ref() };
        &b.counts[self.slot()]
    }
}

/// The block of every empty vector: no slots, never freed, in no pool.
fn empty_block() -> NonNull<Block> {
    static EMPTY: OnceLock<usize> = OnceLock::new();
    let addr = *EMPTY.get_or_init(|| {
        let block = Block { dim: 0, slots: 0, data: NonNull::dangling(), counts: Box::new([]), book: Default::default() };
        Box::leak(Box::new(block)) as *mut Block as usize
    });
    NonNull::new(addr as *mut Block).unwrap_or_else(|| unreachable!("a leaked box is not null"))
}

/// Takes a free slot of length `dim` (its count set to 1).
fn take_slot(dim: usize) -> (NonNull<Block>, usize) {
    let mut pools = lock(&POOLS);
    let at = match pools.0.iter().position(|p| p.dim == dim) {
        Some(at) => at,
        None => {
            pools.0.push(Pool { dim, open: Vec::new(), spare: None, blocks: 0, slots: 0, taken: 0 });
            pools.0.len() - 1
        }
    };
    let pool = &mut pools.0[at];
    let block = match pool.open.last() {
        Some(block) => *block,
        None => {
            let slots = slots_per_block(dim, pool.blocks);
            let block = Block::new(dim, slots);
            pool.blocks += 1;
            pool.slots += slots;
            // SAFETY: a fresh block; the lock is held.
            unsafe { (*block.as_ref().book.get()).open_at = Some(pool.open.len()) };
            pool.open.push(block);
            block
        }
    };
    if pool.spare == Some(block) {
        pool.spare = None;
    }
    // SAFETY: blocks in a pool are alive; the lock is held, so the bookkeeping is ours.
    let b = unsafe { block.as_ref() };
    // SAFETY: as above.
    let book = unsafe { &mut *b.book.get() };
    let slot = match book.free.pop() {
        Some(slot) => slot as usize,
        None => {
            book.untouched_from += 1;
            book.untouched_from - 1
        }
    };
    book.taken += 1;
    pool.taken += 1;
    if book.taken == b.slots {
        // Full: leaves the open list (it is the last entry).
        pool.open.pop();
        book.open_at = None;
    }
    b.counts[slot].store(1, Ordering::Relaxed);
    (block, slot)
}

/// Returns a slot whose count reached 0.
fn return_slot(block: NonNull<Block>, slot: usize) {
    let mut pools = lock(&POOLS);
    // SAFETY: the block is alive (this slot was still taken); the lock is held.
    let b = unsafe { block.as_ref() };
    // SAFETY: as above.
    let book = unsafe { &mut *b.book.get() };
    let Some(pool) = pools.0.iter_mut().find(|p| p.dim == b.dim) else {
        unreachable!("a taken slot's pool exists");
    };
    book.free.push(slot as u32);
    book.taken -= 1;
    pool.taken -= 1;
    if book.open_at.is_none() {
        book.open_at = Some(pool.open.len());
        pool.open.push(block);
    }
    if book.taken > 0 {
        return;
    }
    // Only a one-page block is kept as the spare: a larger one would hold its pages after a
    // large store closed.
    let small = Block::bytes(b.slots, b.dim) == HUGE_PAGE;
    match pool.spare {
        None if small => pool.spare = Some(block),
        Some(spare) if spare == block => {}
        _ => {
            let Some(at) = book.open_at.take() else { unreachable!("an empty block is open") };
            pool.open.swap_remove(at);
            if let Some(moved) = pool.open.get(at) {
                // SAFETY: blocks in a pool are alive; the lock is held.
                unsafe { (*moved.as_ref().book.get()).open_at = Some(at) };
            }
            pool.blocks -= 1;
            pool.slots -= b.slots;
            // SAFETY: no slot is taken and the block left the open list (it is not the spare).
            unsafe { Block::free(block) };
        }
    }
}

impl Clone for SharedVector {
    fn clone(&self) -> SharedVector {
        if self.is_empty() {
            return SharedVector { data: self.data, block: self.block };
        }
        // Relaxed, as in `Arc`: a new handle is made from an existing one, which keeps the slot
        // alive, so no ordering with other accesses is needed.
        self.count().fetch_add(1, Ordering::Relaxed);
        SharedVector { data: self.data, block: self.block }
    }
}

impl Drop for SharedVector {
    fn drop(&mut self) {
        if self.is_empty() {
            return;
        }
        // Release/Acquire, as in `Arc`: every use of the slot through other handles happens
        // before it is reused.
        if self.count().fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        return_slot(self.block, self.slot());
    }
}

impl SharedVector {
    /// The first float, without reading the block for the length (a caller that knows it, as
    /// the graph does, saves a memory access per vector on its hot path).
    #[inline]
    pub fn data_ptr(&self) -> *const f32 {
        self.data.as_ptr()
    }
}

impl std::ops::Deref for SharedVector {
    type Target = [f32];

    #[inline]
    fn deref(&self) -> &[f32] {
        // SAFETY: this handle keeps the block alive; the slot holds `dim` floats, immutable
        // while a handle exists.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.block.as_ref().dim) }
    }
}

impl AsRef<[f32]> for SharedVector {
    fn as_ref(&self) -> &[f32] {
        self
    }
}

impl std::fmt::Debug for SharedVector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for SharedVector {
    fn eq(&self, other: &SharedVector) -> bool {
        **self == **other
    }
}

impl From<&[f32]> for SharedVector {
    fn from(v: &[f32]) -> SharedVector {
        SharedVector::from_slice(v)
    }
}

impl From<Vec<f32>> for SharedVector {
    fn from(v: Vec<f32>) -> SharedVector {
        SharedVector::from_slice(&v)
    }
}

/// Collects into a `Vec` first: the length must be known before a slot is taken.
impl FromIterator<f32> for SharedVector {
    fn from_iter<I: IntoIterator<Item = f32>>(iter: I) -> SharedVector {
        SharedVector::from_slice(&iter.into_iter().collect::<Vec<f32>>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks and taken slots of the pool for `dim` (the pools are process-wide, so each test
    /// uses a length no other test uses).
    fn census(dim: usize) -> (usize, usize) {
        let pools = lock(&POOLS);
        let Some(pool) = pools.0.iter().find(|p| p.dim == dim) else { return (0, 0) };
        let taken = pool
            .open
            .iter()
            // SAFETY: blocks in a pool are alive; the lock is held.
            .map(|b| unsafe { (*b.as_ref().book.get()).taken })
            .sum();
        (pool.open.len(), taken)
    }

    #[test]
    fn a_vector_reads_back_what_it_was_made_from_and_clones_share_its_slot() {
        let v = SharedVector::from_slice(&[1.0, -2.5, 3.25]);
        let w = v.clone();
        assert_eq!(&*w, &[1.0, -2.5, 3.25]);
        assert!(SharedVector::ptr_eq(&v, &w));
        let bytes: Vec<u8> = [0.5f32, 7.0, -1.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let d = SharedVector::from_le_bytes(&bytes);
        assert_eq!(&*d, &[0.5, 7.0, -1.0]);
        assert!(!SharedVector::ptr_eq(&v, &d));
        assert_eq!(SharedVector::from(vec![1.0, -2.5, 3.25]), v, "equality compares the floats");
    }

    #[test]
    fn an_empty_vector_exists_and_is_never_counted() {
        let e = SharedVector::from_le_bytes(&[]);
        let f = e.clone();
        assert!(e.is_empty() && f.is_empty());
        assert_eq!(SharedVector::strong_count(&f), 1);
        drop(e);
        assert_eq!(&*f, &[] as &[f32]);
        assert_eq!(SharedVector::from_slice(&[]), f);
    }

    #[test]
    fn a_slot_is_reused_only_after_its_last_handle_is_dropped() {
        const DIM: usize = 1_009;
        let a = SharedVector::from_slice(&[1.0; DIM]);
        let held = a.clone();
        let a_data = a.data;
        drop(a);
        let b = SharedVector::from_slice(&[2.0; DIM]);
        assert_ne!(b.data, a_data, "a slot with a live handle is not handed out again");
        assert_eq!(&*held, &[1.0; DIM], "the clone still reads its floats");
        drop(held);
        let c = SharedVector::from_slice(&[3.0; DIM]);
        assert_eq!(c.data, a_data, "the returned slot is taken next");
        assert_eq!(&*b, &[2.0; DIM]);
        assert_eq!(&*c, &[3.0; DIM]);
    }

    #[test]
    fn blocks_fill_then_return_to_one_spare_when_every_vector_is_dropped() {
        const DIM: usize = 997;
        // The first blocks are all of one size.
        let per_block = slots_per_block(DIM, 0);
        let n = per_block * 3 + 5;
        let vectors: Vec<SharedVector> = (0..n).map(|i| SharedVector::from_fn(DIM, |s| s.fill(i as f32))).collect();
        for (i, v) in vectors.iter().enumerate() {
            assert!(v.iter().all(|x| *x == i as f32), "vector {i} keeps its own floats");
        }
        // Three full blocks have left the open list; the fourth holds the rest.
        assert_eq!(census(DIM), (1, 5));
        drop(vectors);
        assert_eq!(census(DIM), (1, 0), "every block but one spare is freed");
    }

    #[test]
    fn blocks_grow_with_their_count_so_large_stores_map_few() {
        let dim = 128;
        assert_eq!(slots_per_block(dim, 0), HUGE_PAGE / 512);
        assert_eq!(slots_per_block(dim, BLOCKS_PER_SIZE - 1), HUGE_PAGE / 512);
        assert_eq!(slots_per_block(dim, BLOCKS_PER_SIZE), 2 * HUGE_PAGE / 512);
        assert_eq!(slots_per_block(dim, 1_000_000), (HUGE_PAGE << MAX_DOUBLINGS) / 512);
        assert_eq!(slots_per_block(1 << 20, 0), 1, "a vector longer than a block gets one of its own");
        // 100M vectors of 1,536 floats (614 GB) in under a few thousand mappings.
        let (mut blocks, mut slots) = (0, 0);
        while slots < 100_000_000 {
            slots += slots_per_block(1_536, blocks);
            blocks += 1;
        }
        assert!(blocks < 10_000, "{blocks} blocks");
    }

    #[test]
    fn handles_cloned_and_dropped_across_threads_keep_every_vector_intact() {
        const DIM: usize = 773;
        let originals: Vec<SharedVector> = (0..2_000).map(|i| SharedVector::from_fn(DIM, |s| s.fill(i as f32))).collect();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let originals = &originals;
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    for round in 0..20 {
                        for (i, v) in originals.iter().enumerate().skip((t + round) % 3).step_by(3) {
                            mine.push((i, v.clone()));
                        }
                        // Allocate and drop new vectors meanwhile: slots churn in every block.
                        let fresh: Vec<SharedVector> = (0..50).map(|j| SharedVector::from_fn(DIM, |s| s.fill(-(j as f32)))).collect();
                        for (j, f) in fresh.iter().enumerate() {
                            assert!(f.iter().all(|x| *x == -(j as f32)));
                        }
                        mine.retain(|(i, _)| i % 2 == round % 2);
                    }
                    for (i, v) in &mine {
                        assert!(v.iter().all(|x| *x == *i as f32), "vector {i} intact");
                    }
                });
            }
        });
        for (i, v) in originals.iter().enumerate() {
            assert!(v.iter().all(|x| *x == i as f32), "vector {i} intact after the threads");
        }
        drop(originals);
        assert_eq!(census(DIM).1, 0, "every slot returned");
    }
}
