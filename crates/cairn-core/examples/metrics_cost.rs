//! What keeping metrics costs the commit thread per group, measured directly: the updates
//! `finish_group` makes (two clock reads around the fsync, four counter adds, two histogram
//! observations) repeated many times, against an empty loop. Prints nanoseconds per group, to
//! set beside the microseconds a durable commit takes (`node bench/write.js metrics`).
//!
//!   cargo run --release -p cairn-core --example metrics_cost

use std::hint::black_box;
use std::time::Instant;

use cairn_core::metrics::{observe_since, EngineMetrics};

fn main() {
    const GROUPS: u64 = 5_000_000;
    for enabled in [true, false] {
        let m = EngineMetrics::new(enabled);
        let t0 = Instant::now();
        for i in 0..GROUPS {
            let started = m.start();
            black_box(i);
            observe_since(&m.fsync, started);
            if m.enabled {
                let commits = black_box(1 + i % 8);
                m.commits.add(commits);
                m.records.add(commits * 3);
                m.wal_bytes.add(commits * 640);
                m.group_size.observe_count(commits);
            }
        }
        let ns = t0.elapsed().as_nanos() as f64 / GROUPS as f64;
        println!("metrics {}: {ns:.1} ns per commit group", if enabled { "on" } else { "off" });
        black_box(m.fsync.snapshot());
    }
}
