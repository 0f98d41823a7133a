//! The commit thread's per-record work for bulk upserts, without I/O: decoding a batch payload
//! and applying it to the in-memory state, timed separately, per record. The rows accumulate as
//! in `bench/write.js batch` (10,000 records per batch, 128-d, small metadata, new ids), so the
//! later batches pay for the larger maps. Set beside the commit thread's CPU in bench/README.
//!
//!   cargo run --release -p cairn-core --example apply_cost [batches] [records] [dim]
//!
//! Defaults: 100 10000 128.

use std::time::Instant;

use cairn_core::batch::{decode, encode, metadata_text, CollectionSpec, Op};
use cairn_core::distance::Metric;
use cairn_core::shared_vector::SharedVector;
use cairn_core::state::State;

// The addon's allocator: under glibc malloc the same work costs a third more.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(i: usize, default: usize) -> usize {
    std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() {
    let (batches, records, dim) = (arg(1, 100), arg(2, 10_000), arg(3, 128));
    let mut state = State::default();
    let spec = CollectionSpec { name: "bench".into(), dim: dim as u32, metric: Metric::Cosine, m: 16, ef_construction: 200 };
    state.apply(1, 0, vec![Op::CreateCollection(spec)]).expect("create");
    let pool: Vec<Vec<f32>> = (0..4096).map(|p| (0..dim).map(|i| ((p * 31 + i * 7) % 1000) as f32 / 1000.0 - 0.5).collect()).collect();
    let (mut decode_ns, mut apply_ns) = (0u128, 0u128);
    for b in 0..batches {
        let ops: Vec<Op> = (0..records)
            .map(|r| {
                let n = b * records + r;
                Op::Upsert {
                    collection: "bench".into(),
                    id: format!("doc-{n}"),
                    vector: SharedVector::from_slice(&pool[n % pool.len()]),
                    metadata: metadata_text(&format!(r#"{{"source":"bench","n":{n},"tag":"{}"}}"#, if n % 7 == 0 { "x" } else { "y" })),
                }
            })
            .collect();
        let payload = encode(&ops);
        drop(ops);
        let t0 = Instant::now();
        let ops = decode(&payload).expect("decode");
        let t1 = Instant::now();
        state.apply(b as u64 + 2, 0, ops).expect("apply");
        let t2 = Instant::now();
        decode_ns += (t1 - t0).as_nanos();
        apply_ns += (t2 - t1).as_nanos();
    }
    let per = |ns: u128| ns as f64 / (batches * records) as f64 / 1000.0;
    println!(
        "{batches} batches x {records} records, dim {dim}: decode {:.3} µs/record, apply {:.3} µs/record",
        per(decode_ns),
        per(apply_ns)
    );
}
