//! The process's allocator: mimalloc, with transparent huge pages unless MIMALLOC_ALLOW_THP=0.
//!
//! mimalloc, not glibc malloc: the engine allocates from rayon, libuv and commit threads, and
//! glibc gives each its own arena that keeps freed pages, so a process opening and closing
//! stores grew without bound (bench/open-close.js). mimalloc returns freed segments to the OS.
//!
//! Transparent huge pages: mimalloc 3 asks for them on its arenas (so every large structure,
//! graph arenas included, gets them where the kernel's policy is `madvise`), and they stay on.
//! Measured on this project's 2-core VM, same minutes, alternating (bench/README.md, "Huge
//! pages"): searches at ef 32 and 64 are 15-20% faster with them (fewer TLB misses on random
//! node and vector reads); a fresh process opening a store pays for them instead, because a
//! 2 MiB fault on memory the host has not backed yet costs far more than 512 small ones (100k x
//! 128: 131-651 ms with, 167-201 ms without; 60k x 784: 237-1509 ms against 292-490 ms).
//! `MIMALLOC_ALLOW_THP=0` in the environment turns them off for deployments where open latency
//! matters more than search speed; `test/allocator.test.ts` checks both settings.

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
