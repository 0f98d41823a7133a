//! Record-level repair from another node's copy (replication's read-repair and scrub's replica
//! source). The engine serves its own copy of a row only after checking it against the row's
//! checksum, and installs a fetched copy only in place of the same version of the row (same
//! label, i.e. the same write) that is known damaged here: a row written or deleted since is
//! never replaced by an older copy.
//!
//! A repair is a durable local repair, not a write: it takes no sequence number and adds nothing
//! to the WAL, so the replicated history stays the primary's. It is made durable by rewriting
//! the collection's checkpoint files (a full base, as scrub's engine rebuild does) under the
//! checkpoint lock, which also drops the record from the manifest's unreadable list.

use super::Engine;
use crate::error::{Error, Result};
use crate::shared_vector::SharedVector;
use crate::state::Row;
use crate::sync::{read, write};

/// This node's copy of one record, as another node asks for it.
#[derive(Clone, Debug, PartialEq)]
pub enum RowCopy {
    /// The row passed its checksum here.
    Found { label: u64, vector: Vec<f32>, metadata: String },
    /// No such row (never written, or deleted).
    Absent,
    /// Known damaged here (unreadable on disk, or its in-memory copy fails its checksum).
    Damaged { label: u64 },
}

/// A record this node cannot serve: unreadable on disk or failing its in-memory checksum.
#[derive(Clone, Debug, PartialEq)]
pub struct DamagedRow {
    pub collection: String,
    pub id: String,
    pub label: u64,
    pub reason: String,
}

/// What `install_row_repair` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowRepairOutcome {
    /// Installed and made durable by the checkpoint at this seq.
    Installed { checkpoint_seq: u64 },
    /// The row is no longer the damaged version (written, deleted or repaired meanwhile).
    Moot,
}

impl Engine {
    /// This node's verified copy of `id` in `collection`.
    pub fn row_copy(&self, collection: &str, id: &str) -> Result<RowCopy> {
        self.check_open()?;
        let st = read(&self.shared.state);
        let c = st.collection(collection)?;
        if let Some(u) = c.unreadable.get(id) {
            return Ok(RowCopy::Damaged { label: u.label });
        }
        Ok(match c.rows.get(id) {
            None => RowCopy::Absent,
            Some(r) if r.verify(id) => RowCopy::Found { label: r.label, vector: r.vector.to_vec(), metadata: r.metadata.to_string() },
            Some(r) => RowCopy::Damaged { label: r.label },
        })
    }

    /// Every record this node cannot serve, at most `limit`: the unreadable ones, then rows
    /// whose in-memory copy fails its checksum (each row is checked: O(rows)).
    pub fn damaged_rows(&self, limit: usize) -> Result<Vec<DamagedRow>> {
        self.check_open()?;
        let st = read(&self.shared.state);
        let mut out = Vec::new();
        for c in st.collections.values() {
            for u in c.unreadable.values() {
                out.push(DamagedRow {
                    collection: c.spec.name.clone(),
                    id: u.id.clone(),
                    label: u.label,
                    reason: format!("{} at offset {} of {}", u.reason, u.offset, u.file),
                });
            }
            for (id, r) in c.rows.iter() {
                if !r.verify(id) {
                    out.push(DamagedRow {
                        collection: c.spec.name.clone(),
                        id: id.to_string(),
                        label: r.label,
                        reason: "in-memory copy fails its checksum".into(),
                    });
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        out.truncate(limit);
        out.sort_by(|a, b| (&a.collection, &a.id).cmp(&(&b.collection, &b.id)));
        Ok(out)
    }

    /// Install a copy of a damaged record fetched from another node (already verified and voted
    /// on by the caller). Only replaces the same version (`label`) still damaged here; the
    /// vector and metadata are checked as a write's would be. Durable before it returns.
    pub fn install_row_repair(
        &self,
        collection: &str,
        id: &str,
        label: u64,
        vector: Vec<f32>,
        metadata: String,
    ) -> Result<RowRepairOutcome> {
        self.check_open()?;
        let collection_id = {
            let st = read(&self.shared.state);
            let c = st.collection(collection)?;
            if vector.len() != c.spec.dim as usize {
                return Err(Error::InvalidArgument(format!(
                    "repair copy of '{id}' has {} dimensions, collection '{collection}' has {}",
                    vector.len(),
                    c.spec.dim
                )));
            }
            c.id
        };
        if vector.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(format!("repair copy of '{id}' has NaN or Infinity in its vector")));
        }
        if serde_json::from_str::<serde_json::Value>(&metadata).map(|v| !v.is_object()).unwrap_or(true) {
            return Err(Error::InvalidArgument(format!("repair copy of '{id}' has metadata that is not a JSON object")));
        }
        let mut moot = true;
        let seq = self.rewrite_collection_files(collection_id, |_, _| {
            // Under the checkpoint lock, then the state lock: the commit thread cannot apply a
            // newer version between the check and the install.
            let mut st = write(&self.shared.state);
            let Some(c) = st.collections.get_mut(collection).filter(|c| c.id == collection_id) else { return Ok(()) };
            let still_damaged = match (c.unreadable.get(id), c.rows.get(id)) {
                (Some(u), _) => u.label == label,
                (None, Some(r)) => r.label == label && !r.verify(id),
                (None, None) => false,
            };
            if !still_damaged {
                return Ok(());
            }
            // Removed first: `put_row` of the same label would unlink the replacement.
            c.remove_row(id);
            c.put_row(id, Row::new(id, SharedVector::from_slice(&vector), metadata.into(), label));
            // The checkpoint writes the graph once the row is in it: the indexer must know.
            self.shared.indexer.notify(&c.index);
            moot = false;
            Ok(())
        })?;
        Ok(if moot { RowRepairOutcome::Moot } else { RowRepairOutcome::Installed { checkpoint_seq: seq } })
    }
}
