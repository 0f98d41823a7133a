//! Large, long-lived arrays that searches read at random (vector blocks, level-0 link lists) in
//! their own anonymous mappings, aligned to a transparent huge page and advised to use them.
//!
//! Why not the allocator: its huge pages are shared with short-lived allocations, so they held
//! freed memory beside these arrays (peak RSS of a 100k x 128 build), and whether an array got
//! huge pages at all depended on where the allocator placed it. Here every byte of a mapping is
//! the array's, it goes back to the OS on drop, and searches get huge pages exactly where the TLB
//! needs them.

use std::alloc::{alloc_zeroed, dealloc, handle_alloc_error, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::sync::lock;

/// A transparent huge page on x86-64 and most aarch64 kernels.
pub const HUGE_PAGE: usize = 2 << 20;

static HUGE_PAGES: AtomicBool = AtomicBool::new(true);
static MAPPED: AtomicUsize = AtomicUsize::new(0);
/// Live `DeferHugePages` guards. Changed only while `DEFERRED` is locked, so a mapping made
/// while one is alive is either in the list the drain takes or advised at once.
static DEFERRING: AtomicUsize = AtomicUsize::new(0);
/// Mappings (start, bytes) made while a guard was alive and not yet advised.
static DEFERRED: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

/// While one of these is alive (an open loading a store), new mappings are not advised to use
/// huge pages: a fresh process's first touch of memory is much cheaper in small pages on VMs
/// whose host backs guest memory lazily (2 MiB zeroed at a time; `bench/open.js`). When the last
/// guard drops, a `cairn-huge-pages` thread advises those mappings and collapses them into huge
/// pages (`MADV_COLLAPSE`), so searches get huge pages soon after the open, not during it.
pub struct DeferHugePages(());

impl DeferHugePages {
    pub fn new() -> DeferHugePages {
        let _list = lock(&DEFERRED);
        DEFERRING.fetch_add(1, Ordering::Relaxed);
        DeferHugePages(())
    }
}

impl Default for DeferHugePages {
    fn default() -> Self {
        DeferHugePages::new()
    }
}

impl Drop for DeferHugePages {
    fn drop(&mut self) {
        let list = lock(&DEFERRED);
        if DEFERRING.fetch_sub(1, Ordering::Relaxed) > 1 || list.is_empty() {
            return;
        }
        drop(list);
        let spawned = std::thread::Builder::new().name("cairn-huge-pages".into()).spawn(advise_deferred);
        if spawned.is_err() {
            // No thread to spare: advise now (cheap) and let the kernel collapse them later.
            for (start, bytes) in std::mem::take(&mut *lock(&DEFERRED)) {
                advise_huge(start, bytes);
            }
        }
    }
}

/// How long after an open the collapse starts: a range being collapsed stalls every access to
/// it until its copy is done, which the first queries after an open should not wait for.
const COLLAPSE_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// Advises and collapses the deferred mappings one at a time, at low priority, after
/// `COLLAPSE_AFTER`. The list stays locked meanwhile, so `unmap` cannot release a range while it
/// is being collapsed. Stops if another open begins: its guard's drop starts this again.
fn advise_deferred() {
    #[cfg(target_os = "linux")]
    // SAFETY: lowers this thread's own scheduling priority (a TID is a PRIO_PROCESS target on
    // Linux); failure leaves it at the default.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10)
    };
    std::thread::sleep(COLLAPSE_AFTER);
    loop {
        let mut list = lock(&DEFERRED);
        if DEFERRING.load(Ordering::Relaxed) > 0 {
            return;
        }
        let Some((start, bytes)) = list.pop() else { return };
        advise_huge(start, bytes);
        #[cfg(target_os = "linux")]
        // SAFETY: advice on a live mapping of ours (unmapping it takes this lock first). A kernel
        // without MADV_COLLAPSE refuses it, and khugepaged collapses the range later instead.
        unsafe {
            libc::madvise(start as *mut libc::c_void, bytes, libc::MADV_COLLAPSE)
        };
        drop(list);
    }
}

fn advise_huge(start: usize, bytes: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: advice only, on a live mapping of ours; without it the memory works the same.
    unsafe {
        libc::madvise(start as *mut libc::c_void, bytes, libc::MADV_HUGEPAGE)
    };
    let _ = (start, bytes);
}

/// Drops deferred ranges inside [start, start + bytes), which is being unmapped or moved.
fn forget_deferred(start: usize, bytes: usize) {
    let mut list = lock(&DEFERRED);
    if !list.is_empty() {
        list.retain(|&(s, _)| s < start || s >= start + bytes);
    }
}

/// Bytes currently mapped here, in this process (vector blocks and large graph arrays): memory
/// the allocator does not see.
pub fn mapped_bytes() -> usize {
    MAPPED.load(Ordering::Relaxed)
}

/// Whether mappings made from now on ask for transparent huge pages (default yes). The Node
/// binding follows the allocator's setting (`MIMALLOC_ALLOW_THP`).
pub fn use_huge_pages(on: bool) {
    HUGE_PAGES.store(on, Ordering::Relaxed);
}

/// Maps `bytes` (a multiple of `HUGE_PAGE`) of zeroed memory aligned to `HUGE_PAGE`.
pub(crate) fn map_zeroed(bytes: usize) -> NonNull<u8> {
    debug_assert!(bytes > 0 && bytes.is_multiple_of(HUGE_PAGE));
    let failed = || handle_alloc_error(Layout::from_size_align(bytes, HUGE_PAGE).unwrap_or(Layout::new::<u8>()));
    let Some(span) = bytes.checked_add(HUGE_PAGE) else { failed() };
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing.
    let base = unsafe {
        libc::mmap(std::ptr::null_mut(), span, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    if base == libc::MAP_FAILED {
        failed();
    }
    let head = (base as usize).next_multiple_of(HUGE_PAGE) - base as usize;
    // SAFETY: both trimmed ranges lie inside the mapping just made and are unused.
    unsafe {
        if head > 0 {
            libc::munmap(base, head);
        }
        let tail = span - head - bytes;
        if tail > 0 {
            libc::munmap(base.cast::<u8>().add(head + bytes).cast(), tail);
        }
    }
    // SAFETY: `head < HUGE_PAGE`, so the start lies inside the mapping.
    let start = unsafe { base.cast::<u8>().add(head) };
    if HUGE_PAGES.load(Ordering::Relaxed) {
        let deferred = DEFERRING.load(Ordering::Relaxed) > 0 && {
            let mut list = lock(&DEFERRED);
            let deferring = DEFERRING.load(Ordering::Relaxed) > 0;
            if deferring {
                list.push((start as usize, bytes));
            }
            deferring
        };
        if !deferred {
            advise_huge(start as usize, bytes);
        }
    }
    MAPPED.fetch_add(bytes, Ordering::Relaxed);
    // SAFETY: a successful mmap never returns null.
    unsafe { NonNull::new_unchecked(start) }
}

/// # Safety
/// `start` and `bytes` are those of a `map_zeroed` mapping that nothing uses any more.
pub(crate) unsafe fn unmap(start: NonNull<u8>, bytes: usize) {
    forget_deferred(start.as_ptr() as usize, bytes);
    MAPPED.fetch_sub(bytes, Ordering::Relaxed);
    // SAFETY: per the contract.
    unsafe { libc::munmap(start.as_ptr().cast(), bytes) };
}

/// Types whose all-zero bit pattern is a valid value (0, 0.0 or false).
///
/// # Safety
/// Implementors must be valid when every byte is zero.
pub(crate) unsafe trait ZeroIsValid {}
// SAFETY: each is an integer, bool or f32 in a transparent wrapper; zero bytes are 0, false, 0.0.
unsafe impl ZeroIsValid for AtomicU8 {}
// SAFETY: as above.
unsafe impl ZeroIsValid for AtomicU32 {}
// SAFETY: as above.
unsafe impl ZeroIsValid for AtomicU64 {}
// SAFETY: as above.
unsafe impl ZeroIsValid for AtomicBool {}
// SAFETY: zero bytes are 0.0.
unsafe impl ZeroIsValid for f32 {}
// SAFETY: zero bytes are the null pointer.
unsafe impl<T> ZeroIsValid for AtomicPtr<T> {}

/// `len` zeroed values: in a mapping of their own when they fill at least a huge page, else from
/// the allocator (a small array would waste most of a huge page). Either way the memory comes
/// zeroed without being written, so pages never used are never made resident.
pub(crate) struct ZeroedArray<T: ZeroIsValid> {
    start: NonNull<T>,
    len: usize,
    /// Bytes mapped, or 0 when the array came from the allocator.
    mapped: usize,
}

// SAFETY: the array owns its memory exclusively, like a Box<[T]>.
unsafe impl<T: ZeroIsValid + Send> Send for ZeroedArray<T> {}
// SAFETY: as above; shared access only hands out &[T].
unsafe impl<T: ZeroIsValid + Sync> Sync for ZeroedArray<T> {}

impl<T: ZeroIsValid> ZeroedArray<T> {
    pub(crate) fn new(len: usize) -> ZeroedArray<T> {
        // The same bound Vec enforces; capacities are validated long before this could trip.
        let layout = Layout::array::<T>(len).expect("array size overflows isize");
        if layout.size() == 0 {
            return ZeroedArray { start: NonNull::dangling(), len, mapped: 0 };
        }
        if layout.size() >= HUGE_PAGE {
            let mapped = layout.size().next_multiple_of(HUGE_PAGE);
            return ZeroedArray { start: map_zeroed(mapped).cast(), len, mapped };
        }
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) }.cast::<T>();
        let Some(start) = NonNull::new(ptr) else { handle_alloc_error(layout) };
        ZeroedArray { start, len, mapped: 0 }
    }
}

impl<T: ZeroIsValid> ZeroedArray<T> {
    /// Lengthens the array to `new_len` (no-op if not longer), keeping its values; the new tail
    /// is zero. A mapped array's pages are moved into the larger mapping (`mremap`), not copied:
    /// growing a large graph never holds its arrays twice.
    pub(crate) fn grow(&mut self, new_len: usize) {
        if new_len <= self.len {
            return;
        }
        let grown = ZeroedArray::<T>::new(new_len);
        #[cfg(target_os = "linux")]
        if self.mapped > 0 && grown.mapped > 0 {
            // Before the move: a deferred collapse must not meet the range once it is unmapped.
            // `grown` is registered (or advised) on its own, the moved pages included.
            forget_deferred(self.start.as_ptr() as usize, self.mapped);
            // SAFETY: both are mappings of ours; `grown` is at least as large as `self`. The old
            // pages replace the start of `grown` (MREMAP_FIXED unmaps what was there, untouched
            // zero pages) and leave `self`'s range unmapped, so `self` must not unmap it again.
            let moved = unsafe {
                libc::mremap(
                    self.start.as_ptr().cast(),
                    self.mapped,
                    self.mapped,
                    libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                    grown.start.as_ptr().cast::<libc::c_void>(),
                )
            };
            if moved != libc::MAP_FAILED {
                MAPPED.fetch_sub(self.mapped, Ordering::Relaxed);
                self.mapped = 0;
                self.len = 0;
                self.start = NonNull::dangling();
                *self = grown;
                return;
            }
        }
        // SAFETY: `grown` holds at least `self.len` values; the two never overlap, and values
        // of these types are plain bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.start.as_ptr(), grown.start.as_ptr(), self.len) };
        *self = grown;
    }
}

impl<T: ZeroIsValid> std::ops::Deref for ZeroedArray<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: `start` holds `len` initialised values (zero is valid for T) owned by self.
        unsafe { std::slice::from_raw_parts(self.start.as_ptr(), self.len) }
    }
}

impl<T: ZeroIsValid> std::ops::DerefMut for ZeroedArray<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, borrowed exclusively through &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), self.len) }
    }
}

impl<T: ZeroIsValid> Drop for ZeroedArray<T> {
    fn drop(&mut self) {
        // The element types need no drop (integers, atomics, floats, pointers owned elsewhere).
        if self.mapped > 0 {
            // SAFETY: the mapping was made by `map_zeroed` with this length and dies with self.
            unsafe { unmap(self.start.cast(), self.mapped) };
            return;
        }
        let layout = Layout::array::<T>(self.len).expect("checked in new");
        if layout.size() > 0 {
            // SAFETY: allocated in `new` with this layout.
            unsafe { dealloc(self.start.as_ptr().cast(), layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_small_and_mapped_start_zeroed_and_keep_what_is_written() {
        for len in [0, 1, 1_000, HUGE_PAGE / 4 - 1, HUGE_PAGE / 4, 3 * HUGE_PAGE / 4 + 7] {
            let mut a = ZeroedArray::<AtomicU32>::new(len);
            assert_eq!(a.len(), len);
            assert!(a.iter().all(|x| x.load(Ordering::Relaxed) == 0), "len {len} starts zeroed");
            for (i, x) in a.iter_mut().enumerate() {
                *x.get_mut() = i as u32 ^ 0x5a5a;
            }
            assert!(a.iter().enumerate().all(|(i, x)| x.load(Ordering::Relaxed) == i as u32 ^ 0x5a5a), "len {len} keeps its values");
            let mapped = a.mapped > 0;
            assert_eq!(mapped, len * 4 >= HUGE_PAGE, "len {len}: mapped only when it fills a huge page");
            if mapped {
                assert_eq!(a.start.as_ptr() as usize % HUGE_PAGE, 0, "a mapping starts on a huge page");
            }
        }
    }

    #[test]
    fn growing_keeps_values_zeroes_the_tail_and_moves_mapped_pages() {
        // small -> small, small -> mapped, mapped -> mapped (pages moved), and not shorter.
        for (from, to) in [(10, 1_000), (1_000, HUGE_PAGE / 2), (HUGE_PAGE / 4, HUGE_PAGE + 3), (HUGE_PAGE, HUGE_PAGE / 2)] {
            let mut a = ZeroedArray::<AtomicU32>::new(from);
            for (i, x) in a.iter_mut().enumerate() {
                *x.get_mut() = (i as u32).wrapping_mul(2_654_435_761) | 1;
            }
            a.grow(to);
            let len = from.max(to);
            assert_eq!(a.len(), len);
            for (i, x) in a.iter().enumerate() {
                let want = if i < from { (i as u32).wrapping_mul(2_654_435_761) | 1 } else { 0 };
                assert_eq!(x.load(Ordering::Relaxed), want, "{from} -> {to}: value {i}");
            }
            if a.mapped > 0 {
                assert_eq!(a.start.as_ptr() as usize % HUGE_PAGE, 0, "{from} -> {to}: still on a huge page");
            }
        }
    }

    /// VmFlags of the mapping holding `addr` (from /proc/self/smaps), if any.
    #[cfg(target_os = "linux")]
    fn vm_flags(addr: usize) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                        inside = a <= addr && addr < b;
                        continue;
                    }
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return Some(flags.trim().to_string());
                }
            }
        }
        None
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn mappings_made_while_deferring_get_huge_page_advice_after_the_last_guard() {
        let advised = |addr: usize| vm_flags(addr).expect("mapping listed").split(' ').any(|f| f == "hg");
        let deferred = |addr: usize| lock(&DEFERRED).iter().any(|&(s, _)| s == addr);
        let guard = DeferHugePages::new();
        let kept = ZeroedArray::<AtomicU32>::new(HUGE_PAGE);
        let dropped = ZeroedArray::<AtomicU32>::new(HUGE_PAGE);
        let (kept_at, dropped_at) = (kept.start.as_ptr() as usize, dropped.start.as_ptr() as usize);
        assert!(deferred(kept_at) && deferred(dropped_at));
        assert!(!advised(kept_at), "advised while an open was loading");
        drop(dropped);
        assert!(!deferred(dropped_at), "an unmapped range stays listed");
        drop(guard);
        // Other tests' opens may hold guards of their own; the last one to drop drains the list.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while (deferred(kept_at) || !advised(kept_at)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(advised(kept_at), "never advised after the guard dropped");
        let plain = ZeroedArray::<AtomicU32>::new(HUGE_PAGE);
        if DEFERRING.load(Ordering::Relaxed) == 0 {
            assert!(advised(plain.start.as_ptr() as usize), "a mapping outside an open is advised at once");
        }
    }
}
