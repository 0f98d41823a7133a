//! Faulting fresh memory in ahead of its first write, on a background thread.
//!
//! On a VM whose host backs guest memory lazily, the first touch of fresh memory costs far more
//! than the write that causes it: the commit thread spent 12-17 ms of a 10,000-record batch
//! faulting in the 5 MB of vector slots it wrote (bench/README). `SharedVector::prepare` asks
//! this thread to fault in the slots the next batch will take, while the caller encodes it.
//!
//! Invariant: populating never reads or writes the memory (`MADV_POPULATE_WRITE` only faults
//! pages in, as a write would, without the write). A range unmapped meanwhile fails harmlessly
//! (ENOMEM), and a range mapped again for another use only gets its pages early, its contents
//! unchanged. `forget` drops the queued ranges of a mapping that is being unmapped.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::sync::{lock, wait_timeout};

/// Ranges are populated in pieces of this size, so `forget` can catch most of a large one.
const PIECE: usize = 2 << 20;
/// The thread exits after this long with nothing to do.
const IDLE_EXIT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Queue {
    ranges: VecDeque<(usize, usize)>,
    worker: bool,
    /// The kernel refused the advice (before Linux 5.14): nothing is queued any more.
    unsupported: bool,
}

static QUEUE: Mutex<Queue> = Mutex::new(Queue { ranges: VecDeque::new(), worker: false, unsupported: false });
static WORK: Condvar = Condvar::new();

/// Queue `[start, start + bytes)`, part of a live private anonymous mapping, to be faulted in.
pub(crate) fn request(start: usize, bytes: usize) {
    if bytes == 0 || !cfg!(target_os = "linux") {
        return;
    }
    let mut q = lock(&QUEUE);
    if q.unsupported {
        return;
    }
    let mut at = start;
    while at < start + bytes {
        let piece = PIECE.min(start + bytes - at);
        q.ranges.push_back((at, piece));
        at += piece;
    }
    if q.worker {
        WORK.notify_one();
        return;
    }
    q.worker = true;
    if std::thread::Builder::new().name("cairn-populate".into()).spawn(run).is_err() {
        // No thread to spare: the memory is faulted in by its first write, as without this.
        q.worker = false;
        q.ranges.clear();
    }
}

/// Drops queued ranges inside `[start, start + bytes)`, which is being unmapped.
pub(crate) fn forget(start: usize, bytes: usize) {
    let mut q = lock(&QUEUE);
    if !q.ranges.is_empty() {
        q.ranges.retain(|&(s, _)| s < start || s >= start + bytes);
    }
}

fn run() {
    let mut q = lock(&QUEUE);
    loop {
        if let Some((start, bytes)) = q.ranges.pop_front() {
            drop(q);
            let refused = !populate(start, bytes);
            q = lock(&QUEUE);
            if refused {
                q.unsupported = true;
                q.ranges.clear();
            }
            continue;
        }
        q = wait_timeout(&WORK, q, IDLE_EXIT);
        if q.ranges.is_empty() {
            q.worker = false;
            return;
        }
    }
}

/// Faults the range in; false when the kernel does not know the advice.
fn populate(start: usize, bytes: usize) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: advice only; it never reads or writes the memory (module invariant).
        let r = unsafe { libc::madvise(start as *mut libc::c_void, bytes, libc::MADV_POPULATE_WRITE) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (start, bytes);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapped::{self, HUGE_PAGE};

    /// Resident bytes of `[start, start + bytes)`, from `mincore`.
    fn resident(start: usize, bytes: usize) -> usize {
        let page = 4096;
        let mut vec = vec![0u8; bytes.div_ceil(page)];
        // SAFETY: the range is a live mapping of this test; mincore only fills `vec`.
        let r = unsafe { libc::mincore(start as *mut libc::c_void, bytes, vec.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|&&b| b & 1 == 1).count() * page
    }

    #[test]
    fn requested_ranges_become_resident_and_keep_their_zeroes() {
        let bytes = 4 * HUGE_PAGE;
        let map = mapped::map_zeroed(bytes);
        let start = map.as_ptr() as usize;
        assert_eq!(resident(start, bytes), 0, "a fresh mapping has no pages yet");
        request(start + HUGE_PAGE, 2 * HUGE_PAGE);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while resident(start + HUGE_PAGE, 2 * HUGE_PAGE) < 2 * HUGE_PAGE {
            if lock(&QUEUE).unsupported {
                eprintln!("MADV_POPULATE_WRITE unsupported by this kernel: nothing to check");
                // SAFETY: the mapping was made above and nothing else uses it.
                unsafe { mapped::unmap(map, bytes) };
                return;
            }
            assert!(std::time::Instant::now() < deadline, "the populate thread did not fault the range in");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(resident(start, HUGE_PAGE), 0, "memory outside the range is left alone");
        // SAFETY: the mapping is live and zeroed; populating must not have written it.
        let all = unsafe { std::slice::from_raw_parts(map.as_ptr(), bytes) };
        assert!(all.iter().all(|&b| b == 0));
        // SAFETY: as above.
        unsafe { mapped::unmap(map, bytes) };
    }

    #[test]
    fn a_range_unmapped_before_its_turn_is_dropped_and_one_unmapped_after_is_harmless() {
        let bytes = 2 * HUGE_PAGE;
        let map = mapped::map_zeroed(bytes);
        let start = map.as_ptr() as usize;
        request(start, bytes);
        // SAFETY: nothing reads the mapping; `unmap` forgets its queued ranges first.
        unsafe { mapped::unmap(map, bytes) };
        assert!(lock(&QUEUE).ranges.iter().all(|&(s, _)| s < start || s >= start + bytes));
        // Populating an address range nothing maps fails with ENOMEM, which is not a refusal.
        if !lock(&QUEUE).unsupported {
            assert!(populate(start, bytes));
        }
    }
}
