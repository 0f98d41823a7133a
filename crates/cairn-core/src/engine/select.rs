//! Reads and deletes by filter: `count_where`, `scan` (id order, resumable after an id),
//! `get_many` and `delete_where` (resolved on the commit thread). The payload indexes enumerate candidates when they can; every
//! other row is tested by the filter. Rows returned are checked against their checksum first.

use std::ops::Bound;

use super::Engine;
use crate::batch::{self, Op};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::state::{Collection, Row, RowId, State};
use crate::sync::read;

/// A row `get_many` returns: vector and metadata JSON text.
pub type FoundRow = (Vec<f32>, String);

/// A row `scan` returns: id, vector (when asked for) and metadata JSON text.
pub type ScannedRow = (String, Option<Vec<f32>>, String);

/// Most rows one `scan` page may return.
pub const MAX_SCAN_PAGE: usize = 100_000;

/// Live rows matching `f`, in no particular order. Unreadable records (metadata unknown) are
/// never included.
fn matching<'a>(c: &'a Collection, f: &Filter) -> Vec<(&'a RowId, &'a Row)> {
    if f.matches_everything() {
        return c.rows.iter().collect();
    }
    if let Some(cands) = c.payload.candidates(&f.root) {
        return cands
            .labels
            .iter()
            .filter_map(|l| c.live.id(*l))
            .filter_map(|id| c.rows.get_key_value(id))
            .filter(|(_, row)| cands.exact || c.row_matches(row, f))
            .collect();
    }
    c.matching_labels(f).filter_map(|l| c.live.id(l)).filter_map(|id| c.rows.get_key_value(id)).collect()
}

impl Engine {
    /// Number of live rows matching `filter` (every live record, unreadable ones included, when
    /// the filter is `{}`).
    pub fn count_where(&self, collection: &str, filter: &Filter) -> Result<usize> {
        self.check_open()?;
        let st = read(&self.shared.state);
        let c = st.collection(collection)?;
        if filter.matches_everything() {
            return Ok(c.count());
        }
        if let Some(cands) = c.payload.candidates(&filter.root) {
            if cands.exact {
                return Ok(cands.labels.iter().filter(|l| c.live.contains(**l)).count());
            }
            return Ok(matching(c, filter).len());
        }
        Ok(c.matching_labels(filter).count())
    }

    /// Up to `limit` rows matching `filter` with ids above `after`, in id order. A page is read
    /// under one read lock, so it is consistent; pages together see each row that stayed live
    /// throughout exactly once, whatever is written between them.
    pub fn scan(&self, collection: &str, filter: &Filter, after: Option<&str>, limit: usize, vectors: bool) -> Result<Vec<ScannedRow>> {
        self.check_open()?;
        if limit == 0 || limit > MAX_SCAN_PAGE {
            return Err(Error::InvalidArgument(format!("limit must be between 1 and {MAX_SCAN_PAGE}")));
        }
        let st = read(&self.shared.state);
        let c = st.collection(collection)?;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut page: Vec<(&RowId, &Row)> = Vec::with_capacity(limit.min(1024));
        // Few candidates: sort them rather than walk every id after the cursor.
        let few = (!filter.matches_everything()).then(|| c.payload.estimate(&filter.root)).flatten().is_some_and(|n| n * 4 < c.rows.len());
        if few {
            let mut all: Vec<(&RowId, &Row)> = matching(c, filter).into_iter().filter(|(id, _)| after.is_none_or(|a| &***id > a)).collect();
            all.sort_unstable_by(|a, b| a.0.cmp(b.0));
            all.truncate(limit);
            page = all;
        } else {
            for id in c.order.range::<str, _>((lower, Bound::Unbounded)) {
                let Some((id, row)) = c.rows.get_key_value(&**id) else { continue };
                if filter.matches_everything() || c.row_matches(row, filter) {
                    page.push((id, row));
                    if page.len() == limit {
                        break;
                    }
                }
            }
        }
        page.into_iter()
            .map(|(id, row)| {
                if !row.verify(id) {
                    return Err(self.damaged_in_memory(collection, id));
                }
                Ok((id.to_string(), vectors.then(|| row.vector.to_vec()), row.metadata.to_string()))
            })
            .collect()
    }

    /// Rows by id, in input order; None for an id with no row. Like `get`, a damaged record
    /// fails the whole call with CAIRN_CORRUPTION naming it.
    pub fn get_many(&self, collection: &str, ids: &[String]) -> Result<Vec<Option<FoundRow>>> {
        self.check_open()?;
        // One lock for the whole list, so the rows are one consistent state.
        let st = read(&self.shared.state);
        ids.iter().map(|id| self.get_locked(&st, collection, id)).collect()
    }

    /// Delete every live row matching `filter` in one batch; returns (seq, deleted). The rows
    /// are resolved on the commit thread against the state as of the record before the batch
    /// (`delete_payload`), so the delete is atomic with respect to concurrent writes. With
    /// nothing to delete, nothing is written and the seq is the last one.
    pub fn delete_where(&self, collection: &str, filter: &Filter) -> Result<(u64, usize)> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.submit_delete_where(
            collection.to_string(),
            filter.clone(),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(Error::Closed))
    }
}

/// The batch payload (docs/format.md, "Batch payload") deleting every live row of `collection`
/// matching `filter`, in id order, and how many: committed as one record, it is atomic and
/// replicates and restores like any batch. Empty when nothing matches.
pub(super) fn delete_payload(st: &State, collection: &str, filter: &Filter) -> Result<(Vec<u8>, usize)> {
    let c = st.collection(collection)?;
    let mut ids: Vec<&str> = matching(c, filter).into_iter().map(|(id, _)| &**id).collect();
    if filter.matches_everything() {
        ids.extend(c.unreadable.keys().map(String::as_str));
    }
    ids.sort_unstable();
    if ids.len() > crate::index::MAX_OPS_PER_BATCH {
        return Err(Error::InvalidArgument(format!(
            "deleteWhere matches {} rows; one batch holds at most {}",
            ids.len(),
            crate::index::MAX_OPS_PER_BATCH
        )));
    }
    if ids.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let ops: Vec<Op> = ids.iter().map(|id| Op::Delete { collection: collection.to_string(), id: (*id).to_string() }).collect();
    Ok((batch::encode(&ops), ops.len()))
}
