//! The in-memory state: collections and their rows, as of the last applied sequence number.
//! Only the commit thread and recovery mutate it, always in sequence order.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use crate::batch::{CollectionSpec, Op};
use crate::distance::{dot, Metric};
use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct Row {
    pub vector: Box<[f32]>,
    pub metadata: Box<str>,
    /// Sequence number of the write that produced this row.
    pub seq: u64,
}

/// One immutable checkpoint file of a collection, as listed in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegmentRef {
    pub file: String,
    pub bytes: u64,
    pub xxh3: String,
    pub records: u64,
    pub covered_seq: u64,
}

#[derive(Clone, Debug)]
pub struct Collection {
    /// Sequence number of the create operation; unique for the life of the store.
    pub id: u64,
    pub spec: CollectionSpec,
    pub rows: HashMap<String, Row>,
    /// Ids written since the last checkpoint captured this collection.
    pub dirty: HashSet<String>,
    /// Checkpoint files, oldest first; later files override earlier ones.
    pub segments: Vec<SegmentRef>,
}

#[derive(Default)]
pub struct State {
    pub collections: BTreeMap<String, Collection>,
    pub last_seq: u64,
    pub last_time_ms: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub id: String,
    pub distance: f32,
}

/// Equality filter on top-level metadata fields.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub fields: Vec<(String, serde_json::Value)>,
    /// `"key"` in JSON form, a cheap substring test before parsing a row's metadata.
    needles: Vec<String>,
}

impl Filter {
    pub fn parse(json: &str) -> Result<Filter> {
        let v: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::InvalidArgument(format!("filter is not valid JSON: {e}")))?;
        let serde_json::Value::Object(map) = v else {
            return Err(Error::InvalidArgument("filter must be an object of field: value".into()));
        };
        let needles = map.keys().map(|k| serde_json::Value::String(k.clone()).to_string()).collect();
        Ok(Filter { fields: map.into_iter().collect(), needles })
    }

    pub fn matches(&self, metadata: &str) -> bool {
        if self.fields.is_empty() {
            return true;
        }
        if !self.needles.iter().all(|n| metadata.contains(n.as_str())) {
            return false;
        }
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(metadata) else {
            return false;
        };
        self.fields.iter().all(|(k, v)| map.get(k) == Some(v))
    }
}

struct HeapItem(f32, String);
impl PartialEq for HeapItem {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for HeapItem {}
impl PartialOrd for HeapItem {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for HeapItem {
    // Ties broken by id so that results are deterministic.
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0).then_with(|| self.1.cmp(&o.1))
    }
}

/// Distance from a prepared query to a stored vector. For cosine the query is unit-normalised
/// and the stored vector's norm is divided out, so stored bytes stay exactly as written.
pub fn row_distance(metric: Metric, query: &[f32], v: &[f32]) -> f32 {
    match metric {
        Metric::Cosine => {
            let n = dot(v, v).sqrt();
            if n == 0.0 {
                1.0
            } else {
                1.0 - dot(query, v) / n
            }
        }
        _ => metric.distance(query, v),
    }
}

pub fn prepare_query(metric: Metric, q: &[f32]) -> Vec<f32> {
    match metric {
        Metric::Cosine => crate::distance::normalize(q),
        _ => q.to_vec(),
    }
}

impl Collection {
    pub fn new(id: u64, spec: CollectionSpec) -> Self {
        Collection { id, spec, rows: HashMap::new(), dirty: HashSet::new(), segments: Vec::new() }
    }

    /// Exact k-NN over the rows that `include` accepts.
    pub fn exact_search(&self, query: &[f32], k: usize, filter: Option<&Filter>, include: impl Fn(&str) -> bool) -> Vec<Hit> {
        let q = prepare_query(self.spec.metric, query);
        let mut heap: BinaryHeap<HeapItem> = BinaryHeap::with_capacity(k + 1);
        for (id, row) in &self.rows {
            if !include(id) || !filter.is_none_or(|f| f.matches(&row.metadata)) {
                continue;
            }
            let d = row_distance(self.spec.metric, &q, &row.vector);
            if heap.len() < k {
                heap.push(HeapItem(d, id.clone()));
            } else if let Some(top) = heap.peek() {
                if d < top.0 || (d == top.0 && id < &top.1) {
                    heap.pop();
                    heap.push(HeapItem(d, id.clone()));
                }
            }
        }
        heap.into_sorted_vec().into_iter().map(|HeapItem(distance, id)| Hit { id, distance }).collect()
    }
}

impl State {
    pub fn collection(&self, name: &str) -> Result<&Collection> {
        self.collections.get(name).ok_or_else(|| Error::NotFound(format!("collection '{name}' does not exist")))
    }

    /// Apply one committed batch. Validation happened before the record was written, so an error
    /// here means the log and the state disagree.
    pub fn apply(&mut self, seq: u64, time_ms: u64, ops: Vec<Op>) -> Result<()> {
        for op in ops {
            match op {
                Op::CreateCollection(spec) => {
                    if self.collections.contains_key(&spec.name) {
                        return Err(Error::AlreadyExists(format!("collection '{}' already exists", spec.name)));
                    }
                    self.collections.insert(spec.name.clone(), Collection::new(seq, spec));
                }
                Op::DropCollection { name } => {
                    self.collections
                        .remove(&name)
                        .ok_or_else(|| Error::NotFound(format!("collection '{name}' does not exist")))?;
                }
                Op::Upsert { collection, id, vector, metadata } => {
                    let c = self.collection_mut(&collection)?;
                    if vector.len() != c.spec.dim as usize {
                        return Err(Error::InvalidArgument(format!("vector of id '{id}' has the wrong dimension")));
                    }
                    c.dirty.insert(id.clone());
                    c.rows.insert(id, Row { vector: vector.into_boxed_slice(), metadata: metadata.into_boxed_str(), seq });
                }
                Op::Delete { collection, id } => {
                    let c = self.collection_mut(&collection)?;
                    if c.rows.remove(&id).is_some() {
                        c.dirty.insert(id);
                    }
                }
            }
        }
        self.last_seq = seq;
        self.last_time_ms = time_ms;
        Ok(())
    }

    fn collection_mut(&mut self, name: &str) -> Result<&mut Collection> {
        self.collections.get_mut(name).ok_or_else(|| Error::NotFound(format!("collection '{name}' does not exist")))
    }
}
