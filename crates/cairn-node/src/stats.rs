//! `NativeStore.stats()`: the engine's counters and histograms (`cairn_core::metrics`) and the
//! index state, for `db.metrics()`. Counters cross as numbers: exact up to 2^53.

use cairn_core::engine::EngineStats;
use cairn_core::metrics::HistogramSnapshot;
use napi_derive::napi;

use crate::store::NativeStore;

/// A histogram as read: `counts[i]` observations at or below `bounds[i]` and above the bound
/// before it (not cumulative); the last count is above every bound.
#[napi(object)]
pub struct NativeHistogram {
    pub bounds: Vec<f64>,
    pub counts: Vec<f64>,
    /// Sum of the observed values: seconds for latencies, commits for group sizes.
    pub sum: f64,
    pub count: f64,
}

impl From<HistogramSnapshot> for NativeHistogram {
    fn from(h: HistogramSnapshot) -> NativeHistogram {
        NativeHistogram { bounds: h.bounds, counts: h.counts.into_iter().map(|c| c as f64).collect(), sum: h.sum, count: h.count as f64 }
    }
}

#[napi(object)]
pub struct NativeEngineStats {
    #[napi(ts_type = "'none' | 'group' | 'always'")]
    pub sync: String,
    /// Committed batches (WAL records) since open.
    pub commits: f64,
    /// Operations in committed batches since open.
    pub records: f64,
    /// Framed WAL bytes written since open.
    pub wal_bytes: f64,
    /// Seconds per fdatasync of a commit group.
    pub fsync: NativeHistogram,
    /// Commits per group.
    pub group_size: NativeHistogram,
    /// Seconds per successful checkpoint.
    pub checkpoint: NativeHistogram,
    pub query_exact: NativeHistogram,
    pub query_graph: NativeHistogram,
    pub compactions: f64,
    /// Over every collection: rows in the graphs, rows waiting for the indexer, tombstones,
    /// heap bytes of the graphs.
    pub graph_nodes: f64,
    pub index_pending: f64,
    pub graph_tombstones: f64,
    pub graph_bytes: f64,
}

impl From<EngineStats> for NativeEngineStats {
    fn from(s: EngineStats) -> NativeEngineStats {
        NativeEngineStats {
            sync: s.sync.as_str().to_string(),
            commits: s.commits as f64,
            records: s.records as f64,
            wal_bytes: s.wal_bytes as f64,
            fsync: s.fsync.into(),
            group_size: s.group_size.into(),
            checkpoint: s.checkpoint.into(),
            query_exact: s.query_exact.into(),
            query_graph: s.query_graph.into(),
            compactions: s.compactions as f64,
            graph_nodes: s.index.indexed as f64,
            index_pending: s.index.pending as f64,
            graph_tombstones: s.index.tombstones as f64,
            graph_bytes: s.index.bytes as f64,
        }
    }
}

#[napi]
impl NativeStore {
    /// Counters since open and the index state now; cheap (atomic loads and one read lock).
    #[napi]
    pub fn stats(&self) -> NativeEngineStats {
        self.engine.stats().into()
    }
}
