//! Payload indexes: per-field postings over row metadata, which the query planner uses to
//! estimate a filter's selectivity, enumerate its candidate rows, and test a row against an
//! indexed condition without parsing its metadata.
//!
//! - `key.rs`: the ordered key one indexed value becomes.
//! - `field_index.rs`: one field's postings (key -> labels) and reverse map (label -> keys).
//! - `plan.rs`: what the indexes can answer about a filter.
//! - `persist.rs`: the checkpointed file (docs/format.md, "Payload index file").
//!
//! Invariant: a collection's indexes hold exactly the keys of its live rows (not of unreadable
//! records, whose metadata is unknown). `Collection::put_row` and `remove_row` keep them in step
//! with every applied write, and open rebuilds them from the rows when their file is missing
//! or does not verify.

mod field_index;
mod key;
mod persist;
mod plan;

use std::collections::BTreeMap;

pub use field_index::FieldIndex;
pub use key::Key;
pub use persist::{decode_payload_file, encode_payload_file, PAYLOAD_FILE_VERSION, PAYLOAD_MAGIC};
pub use plan::Candidates;

use crate::error::{Error, Result};

/// Which values of a field an index holds; values of other types are not indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    Keyword,
    Number,
    Bool,
}

impl IndexKind {
    pub fn parse(s: &str) -> Option<IndexKind> {
        match s {
            "keyword" => Some(IndexKind::Keyword),
            "number" => Some(IndexKind::Number),
            "bool" => Some(IndexKind::Bool),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IndexKind::Keyword => "keyword",
            IndexKind::Number => "number",
            IndexKind::Bool => "bool",
        }
    }

    fn code(self) -> u8 {
        match self {
            IndexKind::Keyword => 1,
            IndexKind::Number => 2,
            IndexKind::Bool => 3,
        }
    }

    fn from_code(c: u8) -> Option<IndexKind> {
        match c {
            1 => Some(IndexKind::Keyword),
            2 => Some(IndexKind::Number),
            3 => Some(IndexKind::Bool),
            _ => None,
        }
    }
}

/// One index as the manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PayloadIndexDef {
    pub field: String,
    pub kind: IndexKind,
}

/// Most payload indexes one collection may have.
pub const MAX_INDEXES: usize = 64;

/// Check an index's field path: dotted, no empty segment, no operator.
pub fn validate_field(field: &str) -> Result<Vec<String>> {
    let path: Vec<String> = field.split('.').map(str::to_string).collect();
    if field.len() > 1024 || path.iter().any(|s| s.is_empty() || s.starts_with('$')) {
        return Err(Error::InvalidArgument(format!(
            "field '{field}' must be a dotted path of non-empty names not starting with '$', at most 1024 bytes"
        )));
    }
    Ok(path)
}

/// A collection's payload indexes, by field.
#[derive(Default)]
pub struct PayloadIndexes {
    pub fields: BTreeMap<String, FieldIndex>,
    /// Changed since the last checkpoint captured them.
    pub changed: bool,
}

impl PayloadIndexes {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn defs(&self) -> Vec<PayloadIndexDef> {
        self.fields.values().map(|f| PayloadIndexDef { field: f.field.clone(), kind: f.kind }).collect()
    }

    /// A row was written (`old`: the label and metadata it replaced).
    pub fn on_put(&mut self, label: u64, metadata: &str, old: Option<(u64, &str)>) {
        if self.fields.is_empty() {
            return;
        }
        self.changed = true;
        if let Some((old_label, old_meta)) = old {
            self.on_remove(old_label, old_meta);
        }
        let doc = parse_metadata(metadata);
        for f in self.fields.values_mut() {
            f.add(label, &doc);
        }
    }

    pub fn on_remove(&mut self, label: u64, _metadata: &str) {
        if self.fields.is_empty() {
            return;
        }
        self.changed = true;
        for f in self.fields.values_mut() {
            f.remove(label);
        }
    }
}

pub fn parse_metadata(metadata: &str) -> serde_json::Value {
    serde_json::from_str(metadata).unwrap_or(serde_json::Value::Null)
}
