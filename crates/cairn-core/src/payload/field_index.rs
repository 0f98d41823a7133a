//! One field's index: postings from key to the labels of live rows holding it (any element of
//! an array counts), and the reverse map from label to its keys, so that an indexed condition
//! is tested on a row without parsing its metadata.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{IndexKind, Key};
use crate::filter::eval::resolve;
use crate::keyed_hash::{IdMap, IdSet};

pub struct FieldIndex {
    pub field: String,
    pub path: Vec<String>,
    pub kind: IndexKind,
    pub postings: BTreeMap<Key, IdSet<u64>>,
    /// Keys of each live row that has any (rows without one are absent).
    pub keys_of: IdMap<u64, Box<[Key]>>,
    /// (key, label) pairs held.
    pub entries: usize,
}

impl FieldIndex {
    pub fn new(field: String, path: Vec<String>, kind: IndexKind) -> FieldIndex {
        FieldIndex { field, path, kind, postings: BTreeMap::new(), keys_of: IdMap::default(), entries: 0 }
    }

    /// The distinct keys of a row's metadata: its value at the path, or each element of an array.
    pub fn keys(&self, doc: &Value) -> Vec<Key> {
        let mut keys: Vec<Key> = match resolve(doc, &self.path) {
            None => Vec::new(),
            Some(Value::Array(items)) => items.iter().filter_map(|v| Key::of_value(self.kind, v)).collect(),
            Some(v) => Key::of_value(self.kind, v).into_iter().collect(),
        };
        keys.sort();
        keys.dedup();
        keys
    }

    pub fn add(&mut self, label: u64, doc: &Value) {
        let keys = self.keys(doc);
        self.insert(label, keys);
    }

    pub fn insert(&mut self, label: u64, keys: Vec<Key>) {
        if keys.is_empty() {
            return;
        }
        for k in &keys {
            if self.postings.entry(k.clone()).or_default().insert(label) {
                self.entries += 1;
            }
        }
        self.keys_of.insert(label, keys.into_boxed_slice());
    }

    pub fn remove(&mut self, label: u64) {
        let Some(keys) = self.keys_of.remove(&label) else { return };
        for k in keys.iter() {
            if let Some(set) = self.postings.get_mut(k) {
                if set.remove(&label) {
                    self.entries -= 1;
                }
                if set.is_empty() {
                    self.postings.remove(k);
                }
            }
        }
    }

    pub fn label_keys(&self, label: u64) -> &[Key] {
        self.keys_of.get(&label).map_or(&[], |k| k)
    }
}
