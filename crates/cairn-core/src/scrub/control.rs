//! Scan control: one per scrub, shared by every file and range task on every thread.
//! Invariant: the token bucket holds the aggregate read rate of all of them, and every read
//! (`admit`) checks cancellation first, also while it sleeps off the rate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::checksum::blocks::{DeltaBuffer, RangeFold};
use crate::error::{Error, Result};
use crate::storage::FileId;

/// Read size when unthrottled. Reads of up to 128 KiB into a reused buffer copy out of the page
/// cache at about 8 GB/s here; from 192 KiB up the same copy costs 4 times as much kernel time
/// (measured on the 2-core dev VM: 125 against 500 ms per GB), and the buffer must stay in the
/// CPU cache for the checks that follow the read.
pub(super) const CHUNK: usize = 128 << 10;

/// Shared by every file and range task of one scrub, on every thread: a token bucket that holds
/// the aggregate read rate, cancellation, a progress counter, and the files being hashed by
/// ranges.
pub struct ScanControl {
    /// Bytes per second; None is unthrottled.
    rate: Option<f64>,
    bucket: Mutex<Bucket>,
    cancelled: AtomicBool,
    read: AtomicU64,
    /// Files being hashed by ranges, by id (`split_open`).
    splits: Mutex<HashMap<u32, SplitFile>>,
    next_split: AtomicU32,
    /// Delta buffers of folded ranges, for the next ranges.
    spare: Mutex<Vec<DeltaBuffer>>,
}

/// Spare delta buffers kept (64 bytes per KiB of a range): enough for a few workers.
const KEEP_SPARE: usize = 8;

/// A file hashed by ranges on several threads; each range is folded in as it completes.
pub(super) struct SplitFile {
    pub(super) total: u64,
    pub(super) fold: RangeFold,
    /// Identity of the file the first range read: every range must read the same one.
    pub(super) identity: Option<FileId>,
    pub(super) read: u64,
    /// Why the ranges cannot prove the file intact (the caller then verifies it whole).
    pub(super) failed: Option<String>,
    pub(super) cancelled: bool,
}

struct Bucket {
    /// May go negative: a reader that overdraws sleeps off the debt, and so do the readers after it.
    tokens: f64,
    last: Instant,
}

impl ScanControl {
    pub fn new(bytes_per_sec: Option<f64>) -> ScanControl {
        ScanControl {
            rate: bytes_per_sec.filter(|r| r.is_finite() && *r > 0.0),
            bucket: Mutex::new(Bucket { tokens: 0.0, last: Instant::now() }),
            cancelled: AtomicBool::new(false),
            read: AtomicU64::new(0),
            splits: Mutex::new(HashMap::new()),
            next_split: AtomicU32::new(1),
            spare: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn take_spare(&self) -> DeltaBuffer {
        self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default()
    }

    pub(super) fn keep_spare(&self, buffers: Vec<DeltaBuffer>) {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        for b in buffers {
            if spare.len() < KEEP_SPARE {
                spare.push(b);
            }
        }
    }

    /// Start hashing a file of `total` bytes by ranges (`hash_range`, then `split_finish`).
    pub fn split_open(&self, total: u64) -> u32 {
        let id = self.next_split.fetch_add(1, Ordering::Relaxed);
        let split = SplitFile { total, fold: RangeFold::new(total), identity: None, read: 0, failed: None, cancelled: false };
        self.splits().insert(id, split);
        id
    }

    pub(super) fn splits(&self) -> MutexGuard<'_, HashMap<u32, SplitFile>> {
        self.splits.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn with_split<T>(&self, id: u32, f: impl FnOnce(&mut SplitFile) -> T) -> Result<T> {
        self.splits().get_mut(&id).map(f).ok_or_else(|| Error::InvalidArgument(format!("split {id} is not open")))
    }

    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Bytes read so far by every task of this scrub.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Read size: a throttled scan reads about 1/20 s worth at a time so the rate is smooth.
    pub(super) fn chunk(&self) -> usize {
        match self.rate {
            None => CHUNK,
            Some(r) => ((r / 20.0) as usize).clamp(64 << 10, CHUNK),
        }
    }

    /// Count `n` bytes actually read (after `admit`): progress reports bytes read, never the
    /// size of the reads asked for, so it cannot pass the total of the files read.
    pub(super) fn record(&self, n: usize) {
        self.read.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Account for `n` bytes about to be read, sleeping as long as the rate requires.
    /// False when the scrub was cancelled (also while sleeping).
    pub(super) fn admit(&self, n: usize) -> bool {
        if self.is_cancelled() {
            return false;
        }
        let Some(rate) = self.rate else { return true };
        let wait = {
            let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            // A burst of at most 1/10 s after an idle spell.
            b.tokens = (b.tokens + rate * now.duration_since(b.last).as_secs_f64()).min(rate / 10.0);
            b.last = now;
            b.tokens -= n as f64;
            if b.tokens < 0.0 {
                -b.tokens / rate
            } else {
                0.0
            }
        };
        let until = Instant::now() + Duration::from_secs_f64(wait);
        loop {
            if self.is_cancelled() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(20)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{expected, Dir};
    use super::super::{verify_file_on, FileKind};
    use super::*;

    #[test]
    fn throttle_holds_the_rate_and_cancel_stops_a_scan() {
        let dir = Dir::fault();
        let path = dir.join("x.hnsw");
        let data = vec![7u8; 3 << 20];
        dir.put(&path, &data);
        let ctl = ScanControl::new(Some(6.0 * 1024.0 * 1024.0));
        let t = Instant::now();
        let c = verify_file_on(dir.storage.as_ref(), &path, FileKind::Blob, Some(expected(&data)), &ctl);
        let secs = t.elapsed().as_secs_f64();
        assert!(c.findings.is_empty());
        // 3 MiB at 6 MiB/s is 0.5 s; generous bounds, never a tight timing assertion.
        assert!(secs > 0.3, "took {secs}s");
        let ctl = ScanControl::new(Some(1024.0 * 1024.0));
        ctl.cancel();
        assert!(verify_file_on(dir.storage.as_ref(), &path, FileKind::Blob, None, &ctl).cancelled);
    }
}
