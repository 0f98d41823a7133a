//! Reads: the catalog, `get`, `count` and k-NN queries. Every row returned is first checked
//! against its checksum: a damaged in-memory copy is reported (CAIRN_CORRUPTION for `get`, a
//! skipped record for a query) and never served.

use std::path::Path;

use super::Engine;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::index::IndexStats;
use crate::metrics::{observe_since, EngineMetrics};
use crate::state::{Collection, Hit, Row, SkippedRecord, State, UnreadableRecord};
use crate::sync::{lock, read};

/// A query's results: (id, score, metadata) best first, and the records it could not consider.
#[derive(Debug, Default)]
pub struct QueryOutput {
    pub hits: Vec<(String, f32, String)>,
    pub skipped: Vec<SkippedRecord>,
}

/// Unreadable records listed in one query's report; the rest are in `recoveryReport`.
const MAX_SKIPS_REPORTED: usize = 100;
/// Rows failing their checksum in one query before it stops looking for replacements.
const MAX_FAILED_PER_QUERY: usize = 16;

#[derive(Clone, Debug, serde::Serialize)]
pub struct CollectionInfo {
    pub name: String,
    pub dim: u32,
    pub metric: &'static str,
    pub m: u32,
    pub ef_construction: u32,
    pub count: usize,
}

impl CollectionInfo {
    pub(super) fn of(c: &Collection, count: usize) -> CollectionInfo {
        CollectionInfo {
            name: c.spec.name.clone(),
            dim: c.spec.dim,
            metric: c.spec.metric.as_str(),
            m: c.spec.m,
            ef_construction: c.spec.ef_construction,
            count,
        }
    }
}

impl Engine {
    pub fn collections(&self) -> Result<Vec<CollectionInfo>> {
        self.check_open()?;
        let st = read(&self.shared.state);
        Ok(st.collections.values().map(|c| CollectionInfo::of(c, c.count())).collect())
    }

    /// The row's vector and metadata, after checking them against the row's checksum. A record
    /// known to be damaged, or a copy that fails its checksum, is CAIRN_CORRUPTION naming it.
    pub fn get(&self, collection: &str, id: &str) -> Result<Option<(Vec<f32>, String)>> {
        self.check_open()?;
        let st = read(&self.shared.state);
        self.get_locked(&st, collection, id)
    }

    pub(super) fn get_locked(&self, st: &State, collection: &str, id: &str) -> Result<Option<(Vec<f32>, String)>> {
        let c = st.collection(collection)?;
        if let Some(u) = c.unreadable.get(id) {
            return Err(unreadable(&self.shared.dir, collection, u));
        }
        row_out(&self.shared.dir, collection, id, c.rows.get(id))
    }

    pub(super) fn damaged_in_memory(&self, collection: &str, id: &str) -> Error {
        damaged_in_memory(&self.shared.dir, collection, id)
    }

    pub fn count(&self, collection: &str) -> Result<usize> {
        self.check_open()?;
        Ok(read(&self.shared.state).collection(collection)?.count())
    }

    /// Exact k-NN; returns (id, score, metadata) best first. The ground truth for `query`.
    pub fn query_exact(&self, collection: &str, query: &[f32], k: usize, filter: Option<&Filter>) -> Result<QueryOutput> {
        self.search(collection, query, k, filter, None)
    }

    /// k-NN through the HNSW graph with beam `ef`, merged with an exact scan of rows not yet
    /// indexed; returns (id, score, metadata) best first.
    pub fn query(&self, collection: &str, query: &[f32], k: usize, ef: usize, filter: Option<&Filter>) -> Result<QueryOutput> {
        self.search(collection, query, k, filter, Some(ef))
    }

    pub fn index_stats(&self, collection: &str) -> Result<IndexStats> {
        self.check_open()?;
        let index = read(&self.shared.state).collection(collection)?.index.clone();
        Ok(index.stats())
    }

    /// Block until every row applied so far is in the collection's graph.
    pub fn wait_for_index(&self, collection: &str) -> Result<()> {
        self.check_open()?;
        let index = read(&self.shared.state).collection(collection)?.index.clone();
        index.wait_idle(&self.shared.indexer.stopped);
        match lock(&self.shared.indexer.last_error).clone() {
            Some(e) => Err(Error::Io { path: self.shared.dir.clone(), source: std::io::Error::other(format!("indexer failed: {e}")) }),
            None => Ok(()),
        }
    }

    fn search(&self, collection: &str, query: &[f32], k: usize, filter: Option<&Filter>, ef: Option<usize>) -> Result<QueryOutput> {
        self.check_open()?;
        let st = read(&self.shared.state);
        let c = st.collection(collection)?;
        let search = |want: usize| match ef {
            Some(ef) => c.search(query, want, ef.max(want), filter),
            None => (c.exact_search(query, want, filter, |_| true), false),
        };
        checked_search(&self.shared.metrics, c, query.len(), k, search, |id| c.rows.get(id))
    }
}

/// A record known to be damaged: CAIRN_CORRUPTION naming it.
pub(super) fn unreadable(dir: &Path, collection: &str, u: &UnreadableRecord) -> Error {
    Error::corruption(
        dir.join(&u.file),
        u.offset,
        format!("record '{}' of collection '{collection}' is damaged ({}) and could not be repaired", u.id, u.reason),
    )
}

pub(super) fn damaged_in_memory(dir: &Path, collection: &str, id: &str) -> Error {
    Error::corruption(dir, 0, format!("in-memory copy of record '{id}' of collection '{collection}' fails its checksum"))
}

/// A row `get` returns, after checking it against its checksum.
pub(super) fn row_out(dir: &Path, collection: &str, id: &str, row: Option<&Row>) -> Result<Option<(Vec<f32>, String)>> {
    match row {
        None => Ok(None),
        Some(r) if r.verify(id) => Ok(Some((r.vector.to_vec(), r.metadata.to_string()))),
        Some(_) => Err(damaged_in_memory(dir, collection, id)),
    }
}

/// Run `search(want)` and return its best `k` hits whose rows (`row_of`) pass their checksum.
/// A row that fails is skipped and reported, and the search runs again for one more candidate
/// in its place.
pub(super) fn checked_search<'a>(
    metrics: &EngineMetrics,
    c: &Collection,
    dim: usize,
    k: usize,
    search: impl Fn(usize) -> (Vec<Hit>, bool),
    row_of: impl Fn(&str) -> Option<&'a Row>,
) -> Result<QueryOutput> {
    let collection = &c.spec.name;
    if dim != c.spec.dim as usize {
        return Err(Error::InvalidArgument(format!(
            "query vector has dimension {dim} but collection '{collection}' has dim {}",
            c.spec.dim
        )));
    }
    if k == 0 {
        return Err(Error::InvalidArgument("k must be a positive integer".into()));
    }
    let started = metrics.start();
    let mut failed: Vec<String> = Vec::new();
    loop {
        let want = k + failed.len();
        let (hits, graph) = search(want);
        let mut newly_failed = false;
        let mut out = Vec::with_capacity(k);
        for h in hits {
            if failed.contains(&h.id) {
                continue;
            }
            let Some(row) = row_of(&h.id) else { continue };
            if !row.verify(&h.id) {
                failed.push(h.id);
                newly_failed = true;
                continue;
            }
            if out.len() < k {
                out.push((h.id, c.spec.metric.score(h.distance), row.metadata.to_string()));
            }
        }
        if newly_failed && failed.len() <= MAX_FAILED_PER_QUERY {
            continue;
        }
        let mut skipped = c.unreadable_skips(MAX_SKIPS_REPORTED);
        skipped.extend(failed.iter().map(|id| SkippedRecord { id: id.clone(), reason: "in-memory copy fails its checksum".to_string() }));
        observe_since(if graph { &metrics.query_graph } else { &metrics.query_exact }, started);
        return Ok(QueryOutput { hits: out, skipped });
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::batch::{CollectionSpec, Op};
    use crate::distance::Metric;
    use crate::engine::Options;
    use crate::sync::write;
    use crate::wal::writer::Prealloc;

    /// A row whose in-memory copy no longer matches its checksum is never returned: `get` fails
    /// naming it, and a query skips it, reports it, and still returns k other rows.
    #[test]
    fn a_damaged_in_memory_row_is_reported_not_served() {
        let opts = Options { storage: Arc::new(crate::fault::FaultStorage::new()), prealloc: Prealloc::Off, ..Options::default() };
        let e = Engine::open(Path::new("/store"), opts).expect("open");
        let spec = CollectionSpec { name: "c".into(), dim: 2, metric: Metric::L2, m: 16, ef_construction: 64 };
        e.commit(&[Op::CreateCollection(spec)]).expect("create");
        let ups: Vec<Op> = (0..10)
            .map(|i| Op::Upsert {
                collection: "c".into(),
                id: format!("r{i}"),
                vector: vec![i as f32, 0.0].into(),
                metadata: "null".into(),
            })
            .collect();
        e.commit(&ups).expect("upsert");
        write(&e.shared.state).collections.get_mut("c").and_then(|c| c.rows.get_mut("r0")).expect("r0").damage_for_test();

        let err = e.get("c", "r0").expect_err("damaged row served");
        assert_eq!(err.code(), "CAIRN_CORRUPTION");
        assert!(err.to_string().contains("'r0'"), "{err}");
        assert!(e.get("c", "r1").expect("get").is_some());
        for out in [e.query_exact("c", &[0.0, 0.0], 3, None).expect("exact"), e.query("c", &[0.0, 0.0], 3, 16, None).expect("query")] {
            let ids: Vec<&str> = out.hits.iter().map(|h| h.0.as_str()).collect();
            assert_eq!(ids, ["r1", "r2", "r3"], "the nearest row is damaged: the next three answer");
            assert_eq!(out.skipped.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["r0"]);
        }
        e.close().expect("close");
    }
}
