//! The process's allocator: mimalloc, with transparent huge pages unless MIMALLOC_ALLOW_THP=0.
//!
//! mimalloc, not glibc malloc: the engine allocates from rayon, libuv and commit threads, and
//! glibc gives each its own arena that keeps freed pages, so a process opening and closing
//! stores grew without bound (bench/open-close.js). mimalloc returns freed segments to the OS.
//!
//! Transparent huge pages: searches are 15-20% faster at ef 32 and 64 with them on the vectors
//! and link lists (fewer TLB misses on random reads; bench/README.md, "Huge pages"). Those
//! arrays live in mappings of their own that ask for huge pages (cairn-core `mapped.rs`).
//! mimalloc's own arena does not: it is committed on demand (`arena_eager_commit` 0, set below
//! before the first allocation unless MIMALLOC_ARENA_EAGER_COMMIT is set), which leaves it in
//! small pages. Eagerly committed, the kernel backed it with huge pages that also held the
//! allocator's free memory: 20-30 MiB of a 100k x 128 build's peak RSS (bench/README.md,
//! "One mapping per vector block").
//!
//! `MIMALLOC_ALLOW_THP=0` in the environment turns huge pages off for the whole process, for
//! deployments where a fresh process's open latency matters more than search speed (a 2 MiB
//! fault on memory the host has not backed yet costs far more than 512 small ones);
//! `test/allocator.test.ts` checks both settings.

use napi_derive::napi;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc 3's `mimalloc.h`.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Runs when the addon is loaded, before the other constructors (napi-rs registers exports from
/// unprioritised ones, and those allocate): mimalloc reserves its first arena on the first
/// allocation and reads the option then.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array.00101"]
static CONFIGURE_ALLOCATOR: extern "C" fn() = configure_allocator;

#[cfg(target_os = "linux")]
extern "C" fn configure_allocator() {
    // getenv, not std::env: nothing may allocate before the option is set.
    // SAFETY: a NUL-terminated name; the result is only compared with null.
    let set_by_operator = !unsafe { libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()) }.is_null();
    if !set_by_operator {
        // SAFETY: sets one option's value; valid at any time, and this is before its first read.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
    }
}

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
