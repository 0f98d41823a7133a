//! Byte progress of a long operation (restore, snapshot), shared with the thread that polls it.
//!
//! Invariant: `total` is set once the operation has planned its work, before the first byte is
//! counted; `done()` never passes `total()`.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct ByteProgress {
    pub(crate) done: AtomicU64,
    pub(crate) total: AtomicU64,
}

impl ByteProgress {
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed).min(self.total())
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub(crate) fn set_total(&self, n: u64) {
        self.total.store(n, Ordering::Relaxed);
    }

    pub(crate) fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// The work is done: bytes planned but never met (a file removed meanwhile) leave the total,
    /// so a finished operation reads exactly `total` of `total`.
    pub(crate) fn finish(&self) {
        self.total.store(self.done.load(Ordering::Relaxed).min(self.total()), Ordering::Relaxed);
    }
}
