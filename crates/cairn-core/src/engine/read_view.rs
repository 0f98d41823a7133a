//! Read views: `get`, `getMany`, `count`, `scan` and k-NN as of one pinned sequence number,
//! while writes, checkpoints and graph compaction go on (`versions.rs` holds the versions).
//!
//! A view pins `last_seq` under the state's write lock, so no record is half applied when it is
//! taken and every later write keeps the versions it replaces. Releasing it (or dropping it,
//! or closing the store) unpins the seq and frees the versions no other view needs.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::query::{checked_search, row_out, unreadable, CollectionInfo, QueryOutput};
use super::select::{FoundRow, ScannedRow, MAX_SCAN_PAGE};
use super::{Engine, Shared};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::sync::{read, write};
use crate::versions::Visible;

/// A consistent view of the store at `seq`. Reads through it never change.
pub struct ReadView {
    shared: Arc<Shared>,
    seq: u64,
    released: AtomicBool,
}

/// Views open and the prior row versions they keep alive (`Engine::view_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ViewStats {
    pub views: usize,
    pub versions: usize,
    /// The oldest pinned seq, if any view is open.
    pub oldest_seq: Option<u64>,
}

impl Engine {
    /// A view at the last applied sequence number.
    pub fn read_view(&self) -> Result<ReadView> {
        self.check_open()?;
        let seq = write(&self.shared.state).pin();
        Ok(ReadView { shared: self.shared.clone(), seq, released: AtomicBool::new(false) })
    }

    pub fn view_stats(&self) -> ViewStats {
        let (views, versions, oldest_seq) = read(&self.shared.state).pinned();
        ViewStats { views, versions, oldest_seq }
    }
}

impl ReadView {
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Unpin the seq; idempotent. Reads after it fail with `ViewReleased`.
    pub fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            write(&self.shared.state).unpin(self.seq);
        }
    }

    pub fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    fn check(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.is_released() {
            return Err(Error::ViewReleased(self.seq));
        }
        Ok(())
    }

    /// The collections that existed at the view's seq, with their counts then.
    pub fn collections(&self) -> Result<Vec<CollectionInfo>> {
        self.check()?;
        let st = read(&self.shared.state);
        let names: BTreeSet<&str> =
            st.collections.keys().map(String::as_str).chain(st.dropped.iter().map(|(_, c)| c.spec.name.as_str())).collect();
        let all = Filter::all();
        Ok(names
            .into_iter()
            .filter_map(|n| st.collection_at(n, self.seq).ok())
            .map(|c| CollectionInfo::of(c, c.count_at(self.seq, &all)))
            .collect())
    }

    pub fn get(&self, collection: &str, id: &str) -> Result<Option<FoundRow>> {
        Ok(self.get_many(collection, std::slice::from_ref(&id.to_string()))?.pop().flatten())
    }

    /// Rows by id, in input order, as of the view's seq.
    pub fn get_many(&self, collection: &str, ids: &[String]) -> Result<Vec<Option<FoundRow>>> {
        self.check()?;
        let st = read(&self.shared.state);
        let c = st.collection_at(collection, self.seq)?;
        ids.iter()
            .map(|id| match c.visible_at(id, self.seq) {
                Visible::Absent => Ok(None),
                Visible::Row(r) => row_out(&self.shared.dir, collection, id, Some(r)),
                Visible::Unreadable(u) => Err(unreadable(&self.shared.dir, collection, u)),
            })
            .collect()
    }

    pub fn count(&self, collection: &str, filter: &Filter) -> Result<usize> {
        self.check()?;
        let st = read(&self.shared.state);
        Ok(st.collection_at(collection, self.seq)?.count_at(self.seq, filter))
    }

    /// Up to `limit` rows matching `filter` with ids above `after`, in id order.
    pub fn scan(&self, collection: &str, filter: &Filter, after: Option<&str>, limit: usize, vectors: bool) -> Result<Vec<ScannedRow>> {
        self.check()?;
        if limit == 0 || limit > MAX_SCAN_PAGE {
            return Err(Error::InvalidArgument(format!("limit must be between 1 and {MAX_SCAN_PAGE}")));
        }
        let st = read(&self.shared.state);
        let c = st.collection_at(collection, self.seq)?;
        c.scan_at(self.seq, filter, after, limit)
            .into_iter()
            .map(|(id, row)| match row_out(&self.shared.dir, collection, id, Some(row))? {
                Some((vector, metadata)) => Ok((id.to_string(), vectors.then_some(vector), metadata)),
                None => Err(Error::NotFound(format!("row '{id}' vanished from a pinned view"))),
            })
            .collect()
    }

    /// k-NN as of the view's seq: HNSW with beam `ef`, or exact when `ef` is None.
    pub fn query(&self, collection: &str, query: &[f32], k: usize, ef: Option<usize>, filter: Option<&Filter>) -> Result<QueryOutput> {
        self.check()?;
        let st = read(&self.shared.state);
        let c = st.collection_at(collection, self.seq)?;
        let search = |want: usize| c.search_at(self.seq, query, want, ef.map(|e| e.max(want)), filter);
        let row_of = |id: &str| match c.visible_at(id, self.seq) {
            Visible::Row(r) => Some(r),
            _ => None,
        };
        checked_search(&self.shared.metrics, c, query.len(), k, search, row_of)
    }
}

impl Drop for ReadView {
    fn drop(&mut self) {
        self.release();
    }
}
