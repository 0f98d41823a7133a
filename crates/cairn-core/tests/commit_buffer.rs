//! The commit thread keeps the buffer a burst of large batches framed its records in while writes
//! keep coming, and returns it once they stop: a finished bulk load leaves no multi-megabyte
//! buffer behind. Counted by a wrapping global allocator (this test binary's own).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use cairn_core::batch::{CollectionSpec, Op};
use cairn_core::distance::Metric;
use cairn_core::engine::{Engine, Options};
use cairn_core::shared_vector::SharedVector;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same pointer and layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: same pointer and layout.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_large_batch_buffer_is_returned_once_writes_stop() {
    let dir = std::env::temp_dir().join(format!("cairn-commit-buffer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = Engine::open(&dir, Options::default()).expect("open");
    let dim = 256usize;
    let spec = CollectionSpec { name: "c".into(), dim: dim as u32, metric: Metric::L2, m: 16, ef_construction: 100 };
    engine.commit(&[Op::CreateCollection(spec)]).expect("create");
    // About 10 MiB of framed records in one batch (10,000 vectors of 1 KiB).
    let ops: Vec<Op> = (0..10_000)
        .map(|i| Op::Upsert {
            collection: "c".into(),
            id: format!("row-{i}"),
            vector: (0..dim).map(|d| ((i * 31 + d) % 97) as f32).collect::<SharedVector>(),
            metadata: "{}".into(),
        })
        .collect();
    let before = LIVE.load(Ordering::Relaxed);
    engine.commit(&ops).expect("commit");
    drop(ops);
    let framed = 10_000 * (dim * 4);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut held = LIVE.load(Ordering::Relaxed) - before;
    // The rows and graph stay; the record buffer (at least `framed` bytes) must go.
    let rows_only = |held: isize| held < framed as isize;
    while !rows_only(held) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        held = LIVE.load(Ordering::Relaxed) - before;
    }
    engine.wait_for_index("c").expect("index");
    assert!(rows_only(held), "still {held} bytes above the rows' own after the writes stopped");
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}
