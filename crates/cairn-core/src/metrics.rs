//! Counters and fixed-bucket histograms the engine keeps about its own work, read by the
//! binding for `db.metrics()`.
//!
//! Invariant: every update is a relaxed atomic add on the thread doing the work (commit thread,
//! checkpoint caller, indexer, query task), with no lock and no allocation, so keeping metrics
//! costs the hot path a few uncontended adds. A reader sees each value monotonic; values read
//! together may be a few updates apart, which Prometheus tolerates.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic count.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (inclusive, seconds) of the latency buckets: 10 µs to 10 s.
pub const LATENCY_BOUNDS: [f64; 16] = [1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.5, 1.0, 10.0];

/// Upper bounds (inclusive) of the group-size buckets: commits per fsync group.
pub const GROUP_BOUNDS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// A histogram over fixed bounds: one count per bucket plus one above the last bound, and the
/// sum of the observed values in `unit`s (nanoseconds for latencies, ones for sizes), so that
/// the sum is an exact integer.
pub struct Histogram {
    bounds: &'static [f64],
    /// `bounds.len() + 1` counts, not cumulative; the last is above every bound.
    buckets: Box<[AtomicU64]>,
    sum_units: AtomicU64,
    unit: f64,
}

/// What a histogram held when it was read. `counts` are per bucket (not cumulative), the last
/// one above every bound; `sum` is in the histogram's natural unit (seconds, or commits).
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64], unit: f64) -> Histogram {
        Histogram { bounds, buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum_units: AtomicU64::new(0), unit }
    }

    pub fn latency() -> Histogram {
        Histogram::new(&LATENCY_BOUNDS, 1e-9)
    }

    pub fn sizes(bounds: &'static [f64]) -> Histogram {
        Histogram::new(bounds, 1.0)
    }

    fn observe_units(&self, value: f64, units: u64) {
        let i = self.bounds.partition_point(|b| *b < value);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_units.fetch_add(units, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.observe_units(d.as_secs_f64(), nanos);
    }

    pub fn observe_count(&self, n: u64) {
        self.observe_units(n as f64, n);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        HistogramSnapshot {
            bounds: self.bounds.to_vec(),
            count: counts.iter().sum(),
            counts,
            sum: self.sum_units.load(Ordering::Relaxed) as f64 * self.unit,
        }
    }
}

/// Everything the engine counts. One per open store. When not `enabled` (`Options::metrics`),
/// nothing is counted or timed and every figure stays zero.
pub struct EngineMetrics {
    pub enabled: bool,
    /// Committed batches (one WAL record each), local or replicated.
    pub commits: Counter,
    /// Operations (upserts, deletes, collection creates and drops) in committed batches.
    pub records: Counter,
    /// Framed WAL bytes written for committed batches.
    pub wal_bytes: Counter,
    /// Seconds per WAL fdatasync of a commit group (not taken in sync mode `none`).
    pub fsync: Histogram,
    /// Commits per group written with one write (and one fsync unless sync is `none`).
    pub group_size: Histogram,
    pub checkpoint: Histogram,
    /// Exact-scan queries (requested exact, a small collection or a selective filter).
    pub query_exact: Histogram,
    /// Queries answered through the HNSW graph (plus the exact scan of pending rows).
    pub query_graph: Histogram,
}

impl EngineMetrics {
    pub fn new(enabled: bool) -> EngineMetrics {
        EngineMetrics { enabled, ..EngineMetrics::default() }
    }

    /// The start of a timed operation, or None when metrics are off (no clock read).
    pub fn start(&self) -> Option<Instant> {
        self.enabled.then(Instant::now)
    }
}

/// Record the time since `started` (from `EngineMetrics::start`) in `h`.
pub fn observe_since(h: &Histogram, started: Option<Instant>) {
    if let Some(s) = started {
        h.observe_duration(s.elapsed());
    }
}

impl Default for EngineMetrics {
    fn default() -> Self {
        EngineMetrics {
            enabled: true,
            commits: Counter::default(),
            records: Counter::default(),
            wal_bytes: Counter::default(),
            fsync: Histogram::latency(),
            group_size: Histogram::sizes(&GROUP_BOUNDS),
            checkpoint: Histogram::latency(),
            query_exact: Histogram::latency(),
            query_graph: Histogram::latency(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds_and_sum_is_exact() {
        let h = Histogram::sizes(&GROUP_BOUNDS);
        for n in [1, 2, 3, 4, 5, 2000] {
            h.observe_count(n);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 6);
        assert_eq!(s.sum, 2015.0);
        // 1 -> le=1; 2 -> le=2; 3,4 -> le=4; 5 -> le=8; 2000 -> above every bound.
        assert_eq!(s.counts, [1, 1, 2, 1, 0, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn latency_histogram_sums_seconds() {
        let h = Histogram::latency();
        h.observe_duration(Duration::from_micros(100));
        h.observe_duration(Duration::from_millis(3));
        let s = h.snapshot();
        assert_eq!(s.count, 2);
        assert!((s.sum - 0.0031).abs() < 1e-12, "{}", s.sum);
        assert_eq!(s.counts[3], 1, "100 µs is in the le=1e-4 bucket");
        assert_eq!(s.counts[8], 1, "3 ms is in the le=5e-3 bucket");
    }
}
