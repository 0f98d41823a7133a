//! Bytes the engine holds per row, counted by a wrapping global allocator (requested sizes, so
//! allocator size-class rounding is not included) plus what it maps outside the allocator
//! (vector blocks, large graph arrays; mapped, not necessarily resident): after the upserts,
//! after the graph has caught up, and after a checkpoint. Set beside `node bench/hnsw.js`'s peak RSS to see where a row's
//! memory goes.
//!
//!   cargo run --release -p cairn-core --example row_memory [rows] [dim] [ids] [metadata]
//!
//! `ids`: `short` (the row number, as bench/hnsw.js uses) or `uuid` (36 characters, as most
//! applications and the LangChain adapter use); `metadata`: `none` (`{}`) or `small`
//! (`{"i":n,"tag":"t"}`, as bench/write.js uses). Defaults: 100000 128 short none.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

use cairn_core::batch::{CollectionSpec, Op};
use cairn_core::distance::Metric;
use cairn_core::engine::{Engine, Options};
use cairn_core::mapped::mapped_bytes;
use cairn_core::shared_vector::SharedVector;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static COUNT: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        COUNT.fetch_add(1, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        COUNT.fetch_sub(1, Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Prints what is held now beyond `base`: the allocator's live bytes plus the memory mapped
/// outside it (vector blocks and large graph arrays, `cairn_core::mapped`). With the graph's own
/// bytes (`graph_bytes`, without the vectors it shares) and the vector blocks taken out, what is
/// left is the row store.
fn report(what: &str, rows: usize, base: (isize, usize), graph_bytes: usize) {
    let live = LIVE.load(Ordering::Relaxed) - base.0;
    let count = COUNT.load(Ordering::Relaxed) as isize - base.1 as isize;
    let mapped = mapped_bytes() as isize;
    let c = SharedVector::census();
    let per_row = |bytes: f64| bytes / rows as f64;
    let held = (live + mapped) as f64;
    println!(
        "{what:<14} {:>7.1} MiB held, per row: {:>5.0} B = vector blocks {:>4.0} + graph {:>4.0} + rows {:>4.0} ({:.1} allocations)",
        held / (1 << 20) as f64,
        per_row(held),
        per_row(c.block_bytes as f64),
        per_row(graph_bytes as f64),
        per_row(held - graph_bytes as f64 - c.block_bytes as f64),
        count as f64 / rows as f64,
    );
    println!(
        "{:14} vector blocks: {} holding {:.1} MiB for {} vectors of {:.1} MiB",
        "",
        c.blocks,
        c.block_bytes as f64 / (1 << 20) as f64,
        c.vectors,
        c.vector_bytes as f64 / (1 << 20) as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows: usize = args.get(1).map_or(100_000, |s| s.parse().expect("rows"));
    let dim: usize = args.get(2).map_or(128, |s| s.parse().expect("dim"));
    let uuid_ids = match args.get(3).map_or("short", String::as_str) {
        "short" => false,
        "uuid" => true,
        other => panic!("ids must be short or uuid, not {other}"),
    };
    let small_metadata = match args.get(4).map_or("none", String::as_str) {
        "none" => false,
        "small" => true,
        other => panic!("metadata must be none or small, not {other}"),
    };
    println!(
        "{rows} rows x {dim}, {} ids, metadata {}",
        if uuid_ids { "uuid" } else { "short" },
        if small_metadata { "small" } else { "none" }
    );
    let dir = std::env::temp_dir().join(format!("cairn-row-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let base = (LIVE.load(Ordering::Relaxed), COUNT.load(Ordering::Relaxed));
    let engine = Engine::open(&dir, Options::default()).expect("open");
    let spec = CollectionSpec { name: "c".into(), dim: dim as u32, metric: Metric::L2, m: 16, ef_construction: 200 };
    engine.commit(&[Op::CreateCollection(spec)]).expect("create");
    let graph = |e: &Engine| e.index_stats("c").expect("stats").bytes;
    report("open + create", rows, base, graph(&engine));
    let mut seed = 1u32;
    for from in (0..rows).step_by(10_000) {
        let ops: Vec<Op> = (from..(from + 10_000).min(rows))
            .map(|i| {
                let v: SharedVector = (0..dim)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                        seed as f32 / u32::MAX as f32
                    })
                    .collect();
                let id = if uuid_ids { format!("{:08x}-0000-4000-8000-{:012x}", i, i * 7919) } else { i.to_string() };
                let metadata = if small_metadata { format!("{{\"i\":{i},\"tag\":\"t\"}}") } else { "{}".to_string() };
                Op::Upsert { collection: "c".into(), id, vector: v, metadata: metadata.into() }
            })
            .collect();
        engine.commit(&ops).expect("commit");
    }
    report("upserted", rows, base, graph(&engine));
    engine.wait_for_index("c").expect("index");
    report("indexed", rows, base, graph(&engine));
    engine.checkpoint().expect("checkpoint");
    report("checkpointed", rows, base, graph(&engine));
    drop(engine);
    report("closed", rows, base, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
