//! The process's allocator: mimalloc, without transparent huge pages.
//!
//! mimalloc, not glibc malloc: the engine allocates from rayon, libuv and commit threads, and
//! glibc gives each its own arena that keeps freed pages, so a process opening and closing
//! stores grew without bound (bench/open-close.js). mimalloc returns freed segments to the OS.
//!
//! mimalloc 3 asks for transparent huge pages on its arenas by default. On this project's VMs a
//! 2 MiB fault on memory the host had not backed yet cost far more than 512 small ones: a
//! fresh process opening a 100k x 128 store took 131-651 ms with them and 167-201 ms without;
//! 60k x 784, 237-1509 ms against 292-490 ms; ingest was as fast or faster without them
//! (bench/README.md, "Open + first query"). So they are off, as glibc-based peers have them by
//! default where the kernel's policy is `madvise`; MIMALLOC_ALLOW_THP=1 turns them back on.
//! The default is set where mimalloc is compiled (`.cargo/config.toml`: its first arena is
//! mapped before any code here runs); `test/allocator.test.ts` checks what a process gets.

use napi_derive::napi;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_allow_thp` in mimalloc 3's `mimalloc.h` (libmimalloc-sys names no constant for it).
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;
/// `mi_version()` of the first mimalloc release with that option at that index.
const MI_VERSION_3: i32 = 300;

/// Whether mimalloc may ask for transparent huge pages now (for tests and diagnostics).
#[napi]
pub fn allocator_huge_pages() -> bool {
    // SAFETY: reads the allocator's option table.
    unsafe { libmimalloc_sys::mi_version() >= MI_VERSION_3 && libmimalloc_sys::mi_option_get(MI_OPTION_ALLOW_THP) != 0 }
}
