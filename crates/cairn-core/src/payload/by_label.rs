//! Each live row's metadata by label, for the filter test a graph search makes at every node it
//! admits: one hash lookup, and for small metadata (up to `INLINE` bytes) no second memory
//! access, where going label -> id -> row -> metadata cost three cache misses per node.
//!
//! Invariant: holds exactly the labels of `Collection::live`, each with its row's metadata text
//! (`put_row`, `remove_row` and `rebuild_derived` keep it so).

use std::sync::Arc;

use crate::keyed_hash::IdMap;

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

#[derive(Default)]
pub struct MetadataByLabel(IdMap<u64, Text>);

impl MetadataByLabel {
    pub fn insert(&mut self, label: u64, text: &Arc<str>) {
        self.0.insert(label, Text::of(text));
    }

    pub fn remove(&mut self, label: u64) {
        self.0.remove(&label);
    }

    /// The live row's metadata; None when no live row has this label.
    #[inline]
    pub fn get(&self, label: u64) -> Option<&str> {
        self.0.get(&label).map(Text::as_str)
    }

    /// Every live label with its metadata, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &str)> {
        self.0.iter().map(|(label, text)| (*label, text.as_str()))
    }

    pub fn rebuild<'a>(&mut self, rows: impl ExactSizeIterator<Item = (u64, &'a Arc<str>)>) {
        self.0.clear();
        self.0.reserve(rows.len());
        for (label, text) in rows {
            self.insert(label, text);
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_metadata_read_back_as_written() {
        let mut m = MetadataByLabel::default();
        let small: Arc<str> = r#"{"b":7,"é":"x"}"#.into();
        let exact: Arc<str> = "x".repeat(INLINE).into();
        let large: Arc<str> = format!(r#"{{"t":"{}"}}"#, "y".repeat(100)).into();
        m.insert(1, &small);
        m.insert(2, &exact);
        m.insert(3, &large);
        assert_eq!(m.get(1), Some(&*small));
        assert_eq!(m.get(2), Some(&*exact));
        assert_eq!(m.get(3), Some(&*large));
        m.remove(2);
        assert_eq!(m.get(2), None);
        assert_eq!(m.len(), 2);
        assert_eq!(std::mem::size_of::<Text>(), 24);
    }
}
