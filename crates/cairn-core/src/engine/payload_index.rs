//! Creating, listing and dropping payload indexes. An index is built over every row under the
//! state's write lock (writes wait for the build), then a checkpoint persists it: its definition
//! in the manifest and its postings in a `.pidx` file. So `createIndex` and `dropIndex` are
//! durable when they resolve. Indexes are local to a store: they are not WAL records, so
//! replicas and restored stores have the ones created on them.

use super::Engine;
use crate::error::{Error, Result};
use crate::payload::{validate_field, IndexKind, MAX_INDEXES};
use crate::sync::{read, write};

/// One payload index as `indexes()` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadIndexInfo {
    pub field: String,
    pub kind: IndexKind,
    /// (key, row) pairs held: a row with an array of n distinct indexed values counts n times.
    pub entries: usize,
}

impl Engine {
    /// Index `field` (a dotted path) of `collection`'s metadata. Creating an index that exists
    /// with the same kind does nothing; with another kind it is CAIRN_ALREADY_EXISTS.
    pub fn create_index(&self, collection: &str, field: &str, kind: IndexKind) -> Result<()> {
        self.check_open()?;
        let path = validate_field(field)?;
        {
            let mut st = write(&self.shared.state);
            let c =
                st.collections.get_mut(collection).ok_or_else(|| Error::NotFound(format!("collection '{collection}' does not exist")))?;
            if let Some(existing) = c.payload.fields.get(field) {
                if existing.kind == kind {
                    return Ok(());
                }
                return Err(Error::AlreadyExists(format!(
                    "field '{field}' already has a {} index; drop it first to index it as {}",
                    existing.kind.as_str(),
                    kind.as_str()
                )));
            }
            if c.payload.fields.len() >= MAX_INDEXES {
                return Err(Error::InvalidArgument(format!("a collection has at most {MAX_INDEXES} payload indexes")));
            }
            c.build_payload_index(field.to_string(), path, kind);
        }
        self.checkpoint().map(|_| ())
    }

    /// Drop the index of `field`; CAIRN_NOT_FOUND when there is none.
    pub fn drop_index(&self, collection: &str, field: &str) -> Result<()> {
        self.check_open()?;
        {
            let mut st = write(&self.shared.state);
            let c =
                st.collections.get_mut(collection).ok_or_else(|| Error::NotFound(format!("collection '{collection}' does not exist")))?;
            if c.payload.fields.remove(field).is_none() {
                return Err(Error::NotFound(format!("collection '{collection}' has no index on field '{field}'")));
            }
            c.payload.changed = true;
        }
        self.checkpoint().map(|_| ())
    }

    pub fn indexes(&self, collection: &str) -> Result<Vec<PayloadIndexInfo>> {
        self.check_open()?;
        let st = read(&self.shared.state);
        let c = st.collection(collection)?;
        Ok(c.payload.fields.values().map(|f| PayloadIndexInfo { field: f.field.clone(), kind: f.kind, entries: f.entries }).collect())
    }
}
