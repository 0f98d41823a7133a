//! Each node's upper-level link lists behind one thin pointer per node: 8 bytes a node where a
//! `OnceLock<Box<[AtomicU32]>>` took 24, and about 15 of 16 nodes (level 0 only) have none.
//!
//! A node's lists are one allocation: a length word, then `level * (1 + M)` slots. They are set
//! once, before the node is published (the `VectorSlots::write` contract), with a Release store
//! that the Acquire load of every reader pairs with; they are freed only on drop.

use std::alloc::{alloc_zeroed, dealloc, handle_alloc_error, Layout};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use crate::mapped::ZeroedArray;

pub(super) struct UpperLists {
    /// Null, or an allocation of `1 + len` words whose first holds `len`.
    heads: ZeroedArray<AtomicPtr<AtomicU32>>,
}

fn layout(len: usize) -> Layout {
    // `len` is at most 255 levels times (1 + M) slots: far from overflowing.
    Layout::array::<AtomicU32>(1 + len).expect("upper-level lists fit in memory")
}

impl UpperLists {
    pub(super) fn new(capacity: usize) -> UpperLists {
        UpperLists { heads: ZeroedArray::new(capacity) }
    }

    pub(super) fn len(&self) -> usize {
        self.heads.len()
    }

    /// Gives node `i` `slots` zeroed slots unless it has lists already (then they are kept: a
    /// fresh node never has any, so that only happens if the caller broke the contract).
    pub(super) fn set(&self, i: usize, slots: usize) {
        let fresh = Self::allocate(slots);
        if self.heads[i].compare_exchange(null_mut(), fresh, Ordering::Release, Ordering::Relaxed).is_err() {
            // SAFETY: `fresh` was never shared.
            unsafe { Self::free(fresh) };
        }
    }

    /// Node `i`'s slots, written before anyone can read them (loading a graph).
    pub(super) fn set_mut(&mut self, i: usize, words: impl ExactSizeIterator<Item = u32>) {
        let fresh = Self::allocate(words.len());
        // SAFETY: `fresh` holds `1 + words.len()` words, of which the first is the length.
        let slots = unsafe { std::slice::from_raw_parts(fresh.add(1), words.len()) };
        for (slot, word) in slots.iter().zip(words) {
            slot.store(word, Ordering::Relaxed);
        }
        let old = std::mem::replace(self.heads[i].get_mut(), fresh);
        if !old.is_null() {
            // SAFETY: exclusive access; nothing else holds the old lists.
            unsafe { Self::free(old) };
        }
    }

    /// Node `i`'s slots (level 1's list first), empty when it has none.
    #[inline]
    pub(super) fn get(&self, i: usize) -> &[AtomicU32] {
        let head = self.heads[i].load(Ordering::Acquire);
        if head.is_null() {
            return &[];
        }
        // SAFETY: a non-null head was published whole by `set`/`set_mut` and lives until drop.
        unsafe {
            let len = (*head).load(Ordering::Relaxed) as usize;
            std::slice::from_raw_parts(head.add(1), len)
        }
    }

    /// Room for `capacity` nodes; every node keeps its lists.
    pub(super) fn grow(&mut self, capacity: usize) {
        self.heads.grow(capacity);
    }

    /// Bytes held by the lists themselves (not the per-node pointers).
    pub(super) fn list_bytes(&self) -> usize {
        (0..self.heads.len()).map(|i| self.get(i).len()).filter(|&len| len > 0).map(|len| layout(len).size()).sum()
    }

    fn allocate(slots: usize) -> *mut AtomicU32 {
        let layout = layout(slots);
        // SAFETY: the layout has at least one word; zeroed words are valid `AtomicU32`s.
        let head = unsafe { alloc_zeroed(layout) }.cast::<AtomicU32>();
        if head.is_null() {
            handle_alloc_error(layout);
        }
        // SAFETY: in bounds of the fresh allocation; slot counts are far below u32::MAX.
        unsafe { (*head).store(slots as u32, Ordering::Relaxed) };
        head
    }

    /// # Safety
    /// `head` came from `allocate` and nothing reads it any more.
    unsafe fn free(head: *mut AtomicU32) {
        // SAFETY: per the contract the length word is the one `allocate` wrote.
        unsafe {
            let len = (*head).load(Ordering::Relaxed) as usize;
            dealloc(head.cast(), layout(len));
        }
    }
}

impl Drop for UpperLists {
    fn drop(&mut self) {
        for head in self.heads.iter_mut() {
            let head = *head.get_mut();
            if !head.is_null() {
                // SAFETY: `&mut self`: no reader is left.
                unsafe { Self::free(head) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_set_once_read_back_kept_through_growth_and_freed() {
        let mut lists = UpperLists::new(4);
        assert!(lists.get(0).is_empty());
        lists.set(1, 6);
        assert_eq!(lists.get(1).len(), 6);
        lists.get(1)[5].store(9, Ordering::Relaxed);
        // A second set keeps the first lists.
        lists.set(1, 3);
        assert_eq!(lists.get(1).len(), 6);
        assert_eq!(lists.get(1)[5].load(Ordering::Relaxed), 9);
        lists.set_mut(3, [4u32, 5, 6].into_iter());
        assert_eq!(lists.get(3).iter().map(|s| s.load(Ordering::Relaxed)).collect::<Vec<_>>(), vec![4, 5, 6]);
        assert_eq!(lists.list_bytes(), 7 * 4 + 4 * 4);
        lists.grow(8);
        assert_eq!(lists.len(), 8);
        assert_eq!(lists.get(1)[5].load(Ordering::Relaxed), 9);
        assert_eq!(lists.get(3).len(), 3);
        assert!(lists.get(7).is_empty());
    }
}
