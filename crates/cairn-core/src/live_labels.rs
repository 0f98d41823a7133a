//! Each live row's id and metadata by label. The graph deals in labels: a search maps every node
//! it admits to its row's metadata for the filter test, and every hit to its id. For small
//! metadata (up to `INLINE` bytes) that is one hash lookup and no second memory access, where
//! going label -> id -> row -> metadata cost three cache misses per node. Id and metadata share
//! one entry, so a write updates one map where two cost the commit thread two cache misses per
//! row (`examples/apply_cost.rs`).
//!
//! Invariant: holds exactly the labels of `Collection::rows`, each with the id its row is stored
//! under (the same allocation) and the row's metadata text (`put_row`, `remove_row` and open's
//! `load.rs` keep it so).

use std::sync::Arc;

use crate::keyed_hash::IdMap;

/// A record id as the row maps hold it (`state::RowId`, spelled out here: `state.rs` uses this
/// module).
type RowId = Arc<str>;

/// Longest metadata kept inline (the enum is then 24 bytes, as the `Arc<str>` arm needs).
const INLINE: usize = 22;

enum Text {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<str>),
}

impl Text {
    fn of(text: &Arc<str>) -> Text {
        if text.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            Text::Inline { len: text.len() as u8, bytes }
        } else {
            Text::Shared(text.clone())
        }
    }

    #[inline]
    fn as_str(&self) -> &str {
        match self {
            // SAFETY: the first `len` bytes were copied whole from a `str` in `of`.
            Text::Inline { len, bytes } => unsafe { std::str::from_utf8_unchecked(&bytes[..*len as usize]) },
            Text::Shared(s) => s,
        }
    }
}

struct Entry {
    id: RowId,
    text: Text,
}

#[derive(Default)]
pub struct LiveLabels(IdMap<u64, Entry>);

impl LiveLabels {
    /// The row stored under `id` now has `label`; `text` is its metadata.
    pub fn insert(&mut self, label: u64, id: RowId, text: &Arc<str>) {
        self.0.insert(label, Entry { id, text: Text::of(text) });
    }

    pub fn remove(&mut self, label: u64) {
        self.0.remove(&label);
    }

    /// The id of the live row with `label`; None when no live row has it.
    #[inline]
    pub fn id(&self, label: u64) -> Option<&RowId> {
        self.0.get(&label).map(|e| &e.id)
    }

    /// The live row's metadata; None when no live row has this label.
    #[inline]
    pub fn metadata(&self, label: u64) -> Option<&str> {
        self.0.get(&label).map(|e| e.text.as_str())
    }

    /// Every live label with its row's metadata, in no particular order.
    pub fn metadata_by_label(&self) -> impl Iterator<Item = (u64, &str)> {
        self.0.iter().map(|(label, e)| (*label, e.text.as_str()))
    }

    #[inline]
    pub fn contains(&self, label: u64) -> bool {
        self.0.contains_key(&label)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn reserve(&mut self, additional: usize) {
        self.0.reserve(additional);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_small_and_large_metadata_read_back_as_written() {
        let mut m = LiveLabels::default();
        let small: Arc<str> = r#"{"b":7,"é":"x"}"#.into();
        let exact: Arc<str> = "x".repeat(INLINE).into();
        let large: Arc<str> = format!(r#"{{"t":"{}"}}"#, "y".repeat(100)).into();
        let ids: Vec<RowId> = ["a", "b", "c"].into_iter().map(RowId::from).collect();
        m.insert(1, ids[0].clone(), &small);
        m.insert(2, ids[1].clone(), &exact);
        m.insert(3, ids[2].clone(), &large);
        assert_eq!(m.metadata(1), Some(&*small));
        assert_eq!(m.metadata(2), Some(&*exact));
        assert_eq!(m.metadata(3), Some(&*large));
        assert!(m.id(3).is_some_and(|id| Arc::ptr_eq(id, &ids[2])), "the row's own id allocation");
        m.remove(2);
        assert_eq!((m.metadata(2), m.id(2), m.contains(2)), (None, None, false));
        assert_eq!(m.len(), 2);
        assert_eq!(std::mem::size_of::<Text>(), 24);
    }
}
