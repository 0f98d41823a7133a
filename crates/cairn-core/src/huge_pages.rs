//! Transparent huge pages for large buffers that are filled right after they are allocated
//! (a graph's arenas, a checkpoint file read whole on open). With 4 KiB pages, filling a few
//! hundred MiB of fresh memory costs one page fault per 4 KiB, which is most of the time of an
//! open; 2 MiB pages take 512 times fewer. Where the kernel's policy is `madvise` (a common
//! default), memory gets huge pages only when asked like this. Only a hint: contents and
//! behaviour are unchanged, and a kernel without them ignores it.

/// Buffers below this are left alone (at most a few huge pages: not worth a system call).
pub const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// Ask for huge pages on the whole 4 KiB pages inside `len` bytes at `ptr`.
pub fn advise_huge_pages(ptr: *const u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        if len < HUGE_PAGE_MIN_BYTES {
            return;
        }
        let start = (ptr as usize).next_multiple_of(PAGE);
        let end = (ptr as usize + len) / PAGE * PAGE;
        if end > start {
            // SAFETY: the range lies within one live allocation of the caller; MADV_HUGEPAGE
            // changes neither its contents nor its mapping, only how the kernel backs it.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}
