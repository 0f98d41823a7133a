//! The in-memory state: collections and their rows, as of the last applied sequence number.
//! Only the commit thread and recovery mutate it, always in sequence order.

use crate::shared_vector::SharedVector;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use crate::batch::{CollectionSpec, Op};
use crate::distance::{dot, Metric};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::hnsw::{Hnsw, HnswParams};
use crate::index::{label_of, CollectionIndex};
use crate::keyed_hash::IdMap;
use crate::live_labels::LiveLabels;
use crate::payload::{parse_metadata, FieldIndex, IndexKind, PayloadIndexes};
use crate::sync::read;
use hashbrown::hash_map::EntryRef;

/// `Collection::dirty` is not deduped before it holds this many ids.
const DIRTY_DEDUP_MIN: usize = 4_096;

/// Sort `ids` and drop repeats; returns the length left.
fn sort_dedup(ids: &mut Vec<RowId>) -> usize {
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

/// Collections this small are always searched exactly: it is as fast and has perfect recall.
pub const EXACT_MAX_ROWS: usize = 2_048;
/// A filter estimated to match less than this share of rows is answered by an exact scan (over
/// its candidates when payload indexes enumerate them, else over every row).
pub const SELECTIVE_FILTER_SHARE: f64 = 0.05;
const SELECTIVITY_SAMPLE: usize = 512;

#[derive(Clone, Debug)]
pub struct Row {
    pub vector: SharedVector,
    pub metadata: Arc<str>,
    /// `seq << 24 | op index` of the write that produced this row; its node in the graph.
    pub label: u64,
    /// xxh3 of id, label, vector and metadata, taken when the row was built from bytes that had
    /// just passed their on-disk checksum. Every read checks it, so a damaged copy in memory is
    /// reported rather than returned.
    sum: u64,
}

impl Row {
    pub fn new(id: &str, vector: SharedVector, metadata: Arc<str>, label: u64) -> Row {
        let sum = row_sum(id, label, &vector, &metadata);
        Row { vector, metadata, label, sum }
    }

    /// Damage the in-memory copy the way a stray write or a flipped DRAM bit would.
    #[cfg(test)]
    pub(crate) fn damage_for_test(&mut self) {
        self.metadata = format!("{} ", self.metadata).into();
    }

    /// Whether this row, stored under `id`, still has the bytes it was built with.
    pub fn verify(&self, id: &str) -> bool {
        row_sum(id, self.label, &self.vector, &self.metadata) == self.sum
    }
}

fn row_sum(id: &str, label: u64, vector: &[f32], metadata: &str) -> u64 {
    use xxhash_rust::xxh3::xxh3_64_with_seed;
    // Three one-shot hashes chained through the seed: the streaming hasher costs several times
    // more for inputs this small, and this runs for every row applied or loaded.
    let head = xxh3_64_with_seed(id.as_bytes(), label);
    let meta = xxh3_64_with_seed(metadata.as_bytes(), head);
    // SAFETY: f32 has no padding or invalid bit patterns; the bytes are only hashed.
    let bytes = unsafe { std::slice::from_raw_parts(vector.as_ptr().cast::<u8>(), std::mem::size_of_val(vector)) };
    xxh3_64_with_seed(bytes, meta)
}

/// A record whose stored bytes are damaged and could not be repaired (docs/format.md,
/// "Manifest"): its identity is certain, its vector and metadata are not. Reads of it fail with
/// CAIRN_CORRUPTION and queries report it as skipped, until it is written or deleted again.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnreadableRecord {
    pub id: String,
    pub label: u64,
    /// The damaged file, relative to the store directory (where its bytes are kept).
    pub file: String,
    pub offset: u64,
    pub reason: String,
}

/// An id's state just before the write at `until` changed it.
#[derive(Clone, Debug)]
pub struct Version {
    pub until: u64,
    pub prior: Prior,
}

#[derive(Clone, Debug)]
pub enum Prior {
    Absent,
    Row(Row),
    /// A record whose stored bytes were damaged: it existed, its contents are unknown.
    Unreadable(UnreadableRecord),
}

/// Prior versions by id (`Collection::history`; the logic is in `versions.rs`).
pub type History = BTreeMap<String, Vec<Version>>;

/// A record a query could not consider, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedRecord {
    pub id: String,
    pub reason: String,
}

/// One immutable checkpoint file of a collection, as listed in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileRef {
    pub file: String,
    pub bytes: u64,
    pub xxh3: String,
    pub records: u64,
    pub covered_seq: u64,
}

/// A record id as the row maps hold it: one allocation shared by `rows`, `live`, `order` and
/// `dirty`, where a `String` in each cost four (bench: `examples/row_memory.rs`).
pub type RowId = Arc<str>;

pub struct Collection {
    /// Sequence number of the create operation; unique for the life of the store.
    pub id: u64,
    pub spec: CollectionSpec,
    pub rows: IdMap<RowId, Row>,
    /// Ids written (upserted or deleted) since the last checkpoint captured this collection, in
    /// write order and with repeats: a push per write, where a set cost a hash probe and, as it
    /// grew, a rehash that read every id again. The capture sorts and dedups it; so does
    /// `mark_dirty` once it is twice the larger of the rows and its last deduped length, which
    /// bounds it by twice the rows plus the deleted ids.
    /// It holds `rows`' allocation of each id, except that an id deleted and written again
    /// keeps its earlier one here until the capture.
    pub dirty: Vec<RowId>,
    /// `dirty.len()` after its last dedup.
    dirty_deduped: usize,
    /// Checkpoint files, oldest first; later files override earlier ones.
    pub data_files: Vec<FileRef>,
    /// The persisted graph named by the manifest, if any.
    pub index_file: Option<FileRef>,
    pub index: Arc<CollectionIndex>,
    /// Label -> id and metadata of every live row (`live_labels.rs`).
    pub live: LiveLabels,
    /// Records that exist but cannot be read (never also in `rows`).
    pub unreadable: IdMap<String, UnreadableRecord>,
    /// Ids of `rows` in order, for `scan`.
    pub order: BTreeSet<RowId>,
    /// Payload indexes over the rows' metadata (`payload/`).
    pub payload: PayloadIndexes,
    /// The persisted payload indexes named by the manifest, if any.
    pub payload_file: Option<FileRef>,
    /// Prior versions of ids changed while a read view was pinned (`versions.rs`).
    pub history: History,
}

#[derive(Default)]
pub struct State {
    pub collections: BTreeMap<String, Collection>,
    pub last_seq: u64,
    pub last_time_ms: u64,
    /// Indexes that received pending rows since the engine last drained this list.
    pub touched: Vec<Arc<CollectionIndex>>,
    /// Set by a close that dropped every row and graph: lookups fail with `Closed`, never
    /// with a misleading `NotFound`, for a reader that passed the open check before the close.
    pub released: bool,
    /// Seqs pinned by open read views (and transactions), with how many views pin each.
    pub pins: BTreeMap<u64, usize>,
    /// Collections dropped while a view was pinned, with the seq of the drop, kept for views
    /// older than it (`versions.rs`).
    pub dropped: Vec<(u64, Collection)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub id: String,
    pub distance: f32,
}

pub(crate) struct HeapItem(pub(crate) f32, pub(crate) String);
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
    pub fn new(id: u64, spec: CollectionSpec) -> Result<Self> {
        Ok(Self::with_index(id, spec.clone(), Hnsw::new(Self::hnsw_params(&spec), 1024)?))
    }

    pub fn hnsw_params(spec: &CollectionSpec) -> HnswParams {
        HnswParams { dim: spec.dim as usize, metric: spec.metric, m: spec.m as usize, ef_construction: spec.ef_construction as usize }
    }

    pub fn with_index(id: u64, spec: CollectionSpec, hnsw: Hnsw) -> Self {
        Collection {
            id,
            spec,
            rows: IdMap::default(),
            dirty: Vec::new(),
            dirty_deduped: 0,
            data_files: Vec::new(),
            index_file: None,
            index: CollectionIndex::new(hnsw),
            live: LiveLabels::default(),
            unreadable: IdMap::default(),
            order: BTreeSet::new(),
            payload: PayloadIndexes::default(),
            payload_file: None,
            history: History::default(),
        }
    }

    /// Live records, including unreadable ones.
    pub fn count(&self) -> usize {
        self.rows.len() + self.unreadable.len()
    }

    /// What a query over this collection could not consider: every unreadable record (its
    /// vector and metadata are unknown, so it might have matched), at most `limit` of them.
    pub fn unreadable_skips(&self, limit: usize) -> Vec<SkippedRecord> {
        let mut out: Vec<SkippedRecord> = self
            .unreadable
            .values()
            .map(|u| SkippedRecord {
                id: u.id.clone(),
                reason: format!("stored record is damaged ({} at offset {} of {}) and was not repaired", u.reason, u.offset, u.file),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.truncate(limit);
        out
    }

    /// Insert or replace the row of `id` and mark it dirty, keeping `live`, `order`, the
    /// payload indexes and the graph index's pending set in step. Each map gets the allocation
    /// `rows` has for the id, so an id is allocated once however often it is overwritten. `rows`
    /// is probed once: this runs for every row the commit thread applies.
    pub fn put_row(&mut self, id: &str, row: Row) {
        if !self.unreadable.is_empty() {
            self.unreadable.remove(id);
        }
        let (label, meta) = (row.label, row.metadata.clone());
        self.index.add_pending(label, row.vector.clone());
        let (held, old) = match self.rows.entry_ref(id) {
            EntryRef::Occupied(mut e) => {
                let old = e.insert(row);
                (e.key().clone(), Some(old))
            }
            EntryRef::Vacant(e) => {
                let held = RowId::from(id);
                e.insert_with_key(held.clone(), row);
                (held, None)
            }
        };
        self.mark_dirty(held.clone());
        self.live.insert(label, held.clone(), &meta);
        match old {
            Some(old) => {
                self.live.remove(old.label);
                self.index.remove(old.label);
                self.payload.on_put(label, &meta, Some((old.label, &old.metadata)));
            }
            None => {
                self.order.insert(held);
                self.payload.on_put(label, &meta, None);
            }
        }
    }

    /// Remove the row (or unreadable record) of `id` and mark it dirty; false if there was none.
    pub fn remove_row(&mut self, id: &str) -> bool {
        match self.rows.remove_entry(id) {
            Some((held, old)) => {
                self.live.remove(old.label);
                self.index.remove(old.label);
                self.order.remove(id);
                self.payload.on_remove(old.label, &old.metadata);
                self.mark_dirty(held);
                true
            }
            None => {
                let was = self.unreadable.remove(id).is_some();
                if was {
                    self.mark_dirty(RowId::from(id));
                }
                was
            }
        }
    }

    fn mark_dirty(&mut self, id: RowId) {
        self.dirty.push(id);
        // Distinct dirty ids are at most the rows plus the ids deleted since the capture: a bulk
        // load of new ids never sorts here, and repeats are dropped once they double the list.
        if self.dirty.len() >= 2 * self.dirty_deduped.max(self.rows.len()).max(DIRTY_DEDUP_MIN) {
            self.dirty_deduped = sort_dedup(&mut self.dirty);
        }
    }

    /// `dirty`, sorted by id and without repeats, for a checkpoint to capture; leaves it empty
    /// and releases its memory (it is as large as the most writes between two checkpoints).
    pub fn take_dirty(&mut self) -> Vec<RowId> {
        let mut ids = std::mem::take(&mut self.dirty);
        self.dirty_deduped = 0;
        sort_dedup(&mut ids);
        ids
    }

    /// Rebuild the payload indexes from `rows` unless `payload` (loaded from their file) already
    /// holds them; after a load that filled `rows` (and `live` and `order`) directly.
    pub fn rebuild_derived(&mut self, payload: Option<PayloadIndexes>) {
        match payload {
            Some(p) => self.payload = p,
            None => {
                let defs = self.payload.defs();
                self.payload = PayloadIndexes::default();
                for d in defs {
                    if let Ok(path) = crate::payload::validate_field(&d.field) {
                        self.build_payload_index(d.field, path, d.kind);
                    }
                }
            }
        }
    }

    /// Index `field` over every row (replacing an index of it).
    pub fn build_payload_index(&mut self, field: String, path: Vec<String>, kind: IndexKind) {
        let mut idx = FieldIndex::new(field.clone(), path, kind);
        for row in self.rows.values() {
            idx.add(row.label, &parse_metadata(&row.metadata));
        }
        self.payload.fields.insert(field, idx);
        self.payload.changed = true;
    }

    /// Does the live row with `label` match? Indexed conditions are answered from the payload
    /// indexes; only a filter they cannot settle parses the row's metadata.
    pub fn accepts(&self, label: u64, filter: Option<&Filter>) -> bool {
        // `live` has exactly the live labels: one lookup answers both questions.
        let Some(text) = self.live.metadata(label) else { return false };
        let Some(f) = filter else { return true };
        if let Some(answer) = self.payload.eval_label(&f.root, label) {
            return answer;
        }
        f.matches(text)
    }

    /// Does this row (stored under its label) match?
    pub fn row_matches(&self, row: &Row, filter: &Filter) -> bool {
        match self.payload.eval_label(&filter.root, row.label) {
            Some(answer) => answer,
            None => filter.matches(&row.metadata),
        }
    }

    /// Labels of the live rows matching `f`, tested on the metadata `live` holds (a dense walk
    /// that touches a row only once it matches).
    pub fn matching_labels<'a>(&'a self, f: &'a Filter) -> impl Iterator<Item = u64> + 'a {
        self.live
            .metadata_by_label()
            .filter(move |(label, text)| self.payload.eval_label(&f.root, *label).unwrap_or_else(|| f.matches(text)))
            .map(|(label, _)| label)
    }

    fn filter_share(&self, f: &Filter) -> f64 {
        let sample = self.rows.values().take(SELECTIVITY_SAMPLE);
        let (mut seen, mut hit) = (0usize, 0usize);
        for r in sample {
            seen += 1;
            hit += usize::from(self.row_matches(r, f));
        }
        if seen == 0 {
            0.0
        } else {
            hit as f64 / seen as f64
        }
    }

    /// k-NN through the graph, merged with an exact scan of rows not yet in it. Small
    /// collections and selective filters go straight to the exact scan: over the candidates
    /// the payload indexes enumerate when they bound the filter, else over every row. The flag
    /// says whether the graph was searched (false: the exact scan answered).
    pub fn search(&self, query: &[f32], k: usize, ef: usize, filter: Option<&Filter>) -> (Vec<Hit>, bool) {
        self.search_admitting(query, k, ef, filter, &|_| true)
    }

    /// `search` over the rows whose label `admit` accepts (a read view: those written at or
    /// before its seq).
    pub fn search_admitting(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: Option<&Filter>,
        admit: &(dyn Fn(u64) -> bool + Sync),
    ) -> (Vec<Hit>, bool) {
        let filter = filter.filter(|f| !f.matches_everything());
        let include = |row: &Row| admit(row.label);
        if self.rows.len() <= EXACT_MAX_ROWS {
            return (self.exact_search(query, k, filter, include), false);
        }
        if let Some(f) = filter {
            let threshold = SELECTIVE_FILTER_SHARE * self.rows.len() as f64;
            match self.payload.estimate(&f.root) {
                Some(bound) if (bound as f64) < threshold => {
                    if let Some(c) = self.payload.candidates(&f.root) {
                        let labels = c.labels.iter().copied().filter(|l| admit(*l));
                        return (self.exact_over_labels(query, k, labels, (!c.exact).then_some(f)), false);
                    }
                }
                Some(_) => {}
                None if self.filter_share(f) < SELECTIVE_FILTER_SHARE => {
                    return (self.exact_over_labels(query, k, self.matching_labels(f).filter(|l| admit(*l)), None), false)
                }
                None => {}
            }
        }
        let accept = |label: u64| admit(label) && self.accepts(label, filter);
        let graph_search = |accept: Option<&(dyn Fn(u64) -> bool + Sync)>| read(&self.index.hnsw).search(query, k, ef.max(k), accept);
        // Unfiltered, the graph's own tombstones suffice and each admitted node saves a hash
        // lookup. Only a row deleted or overwritten while it was being inserted is briefly live
        // in the graph but not in `live`; if one is among the hits, search again checking each.
        // (A view's search always checks: its seq admits only some of the live rows.)
        let mut graph = graph_search(filter.is_some().then_some(&accept as _));
        if filter.is_none() && graph.iter().any(|(label, _)| !self.live.contains(*label) || !admit(*label)) {
            graph = graph_search(Some(&accept));
        }
        let q = prepare_query(self.spec.metric, query);
        let mut heap: BinaryHeap<HeapItem> = BinaryHeap::with_capacity(k + 1);
        let mut push = |d: f32, id: &str| {
            if heap.len() < k {
                heap.push(HeapItem(d, id.to_string()));
            } else if heap.peek().is_some_and(|top| d < top.0) {
                heap.pop();
                heap.push(HeapItem(d, id.to_string()));
            }
        };
        // A row being inserted can be in the graph and still pending for a moment: count it once,
        // or a duplicate would take one of the k places.
        let from_graph: HashSet<u64> = graph.iter().map(|(label, _)| *label).collect();
        for (label, d) in graph {
            if let Some(id) = self.live.id(label) {
                push(d, id);
            }
        }
        self.index.for_each_pending(|label, v| {
            if accept(label) && !from_graph.contains(&label) {
                if let Some(id) = self.live.id(label) {
                    push(row_distance(self.spec.metric, &q, v), id);
                }
            }
        });
        (heap.into_sorted_vec().into_iter().map(|HeapItem(distance, id)| Hit { id, distance }).collect(), true)
    }

    /// Exact k-NN over the rows that `include` accepts.
    pub fn exact_search(&self, query: &[f32], k: usize, filter: Option<&Filter>, include: impl Fn(&Row) -> bool) -> Vec<Hit> {
        let rows = self.rows.iter().filter(|(_, row)| include(row) && filter.is_none_or(|f| self.row_matches(row, f)));
        self.nearest_k(query, k, rows.map(|(id, row)| (&**id, row)))
    }

    /// The `k` of `rows` nearest to `query`, nearest first; equal distances ordered by id.
    fn nearest_k<'a>(&self, query: &[f32], k: usize, rows: impl Iterator<Item = (&'a str, &'a Row)>) -> Vec<Hit> {
        let q = prepare_query(self.spec.metric, query);
        let mut heap: BinaryHeap<HeapItem> = BinaryHeap::with_capacity(k + 1);
        for (id, row) in rows {
            let d = row_distance(self.spec.metric, &q, &row.vector);
            if heap.len() < k {
                heap.push(HeapItem(d, id.to_string()));
            } else if let Some(top) = heap.peek() {
                if d < top.0 || (d == top.0 && id < top.1.as_str()) {
                    heap.pop();
                    heap.push(HeapItem(d, id.to_string()));
                }
            }
        }
        heap.into_sorted_vec().into_iter().map(|HeapItem(distance, id)| Hit { id, distance }).collect()
    }
}

impl Collection {
    /// Exact k-NN over live rows among `labels`, each checked against `filter` when given.
    pub fn exact_over_labels(&self, query: &[f32], k: usize, labels: impl Iterator<Item = u64>, filter: Option<&Filter>) -> Vec<Hit> {
        let rows = labels.filter_map(|label| {
            let id = self.live.id(label)?;
            Some((&**id, self.rows.get(id)?))
        });
        self.nearest_k(query, k, rows.filter(|(_, row)| filter.is_none_or(|f| self.row_matches(row, f))))
    }
}

impl State {
    pub fn collection(&self, name: &str) -> Result<&Collection> {
        if self.released {
            return Err(Error::Closed);
        }
        self.collections.get(name).ok_or_else(|| Error::NotFound(format!("collection '{name}' does not exist")))
    }

    /// Apply one committed batch. Validation happened before the record was written, so an error
    /// here means the log and the state disagree.
    pub fn apply(&mut self, seq: u64, time_ms: u64, ops: Vec<Op>) -> Result<()> {
        self.check_applies(&ops)?;
        for (op_index, op) in ops.into_iter().enumerate() {
            match op {
                Op::CreateCollection(spec) => {
                    if self.collections.contains_key(&spec.name) {
                        return Err(Error::AlreadyExists(format!("collection '{}' already exists", spec.name)));
                    }
                    self.collections.insert(spec.name.clone(), Collection::new(seq, spec)?);
                }
                Op::DropCollection { name } => {
                    let gone =
                        self.collections.remove(&name).ok_or_else(|| Error::NotFound(format!("collection '{name}' does not exist")))?;
                    gone.index.mark_dropped();
                    if self.keeps_versions() {
                        self.dropped.push((seq, gone));
                    }
                }
                Op::Upsert { collection, id, vector, metadata } => {
                    let keep = self.keeps_versions();
                    let c = self.collection_mut(&collection)?;
                    if vector.len() != c.spec.dim as usize {
                        return Err(Error::InvalidArgument(format!("vector of id '{id}' has the wrong dimension")));
                    }
                    if keep {
                        c.keep_version(&id, seq);
                    }
                    let row = Row::new(&id, vector, metadata, label_of(seq, op_index));
                    c.put_row(&id, row);
                    let index = c.index.clone();
                    if !self.touched.last().is_some_and(|t| Arc::ptr_eq(t, &index)) {
                        self.touched.push(index);
                    }
                }
                Op::Delete { collection, id } => {
                    let keep = self.keeps_versions();
                    let c = self.collection_mut(&collection)?;
                    if keep && (c.rows.contains_key(id.as_str()) || c.unreadable.contains_key(&id)) {
                        c.keep_version(&id, seq);
                    }
                    c.remove_row(&id);
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

    /// Check the whole batch before anything changes, so that a batch stays all or nothing
    /// even when skip-corrupt recovery meets one that depended on a skipped record (it used to
    /// apply the operations before the failing one).
    fn check_applies(&self, ops: &[Op]) -> Result<()> {
        // Collection name -> dim as of this point in the batch; `None` once dropped in it.
        let mut overlay: HashMap<&str, Option<u32>> = HashMap::new();
        for op in ops {
            let dim = |name: &str| match overlay.get(name) {
                Some(d) => *d,
                None => self.collections.get(name).map(|c| c.spec.dim),
            };
            let missing = |name: &str| Error::NotFound(format!("collection '{name}' does not exist"));
            match op {
                Op::CreateCollection(spec) => {
                    if dim(&spec.name).is_some() {
                        return Err(Error::AlreadyExists(format!("collection '{}' already exists", spec.name)));
                    }
                    overlay.insert(&spec.name, Some(spec.dim));
                }
                Op::DropCollection { name } => {
                    if dim(name).is_none() {
                        return Err(missing(name));
                    }
                    overlay.insert(name, None);
                }
                Op::Upsert { collection, id, vector, .. } => match dim(collection) {
                    None => return Err(missing(collection)),
                    Some(d) if d as usize != vector.len() => {
                        return Err(Error::InvalidArgument(format!("vector of id '{id}' has the wrong dimension")))
                    }
                    Some(_) => {}
                },
                Op::Delete { collection, .. } => {
                    if dim(collection).is_none() {
                        return Err(missing(collection));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::Metric;

    fn upsert(id: &str, n: usize) -> Op {
        Op::Upsert {
            collection: "c".into(),
            id: id.into(),
            vector: SharedVector::from_slice(&[n as f32, 1.0]),
            metadata: crate::batch::metadata_text("{}"),
        }
    }

    /// `dirty` against a model (the set of ids written since the last capture): overwrites,
    /// deletes of present and absent ids, and a delete then a rewrite, across two captures; and
    /// repeated overwrites of a few ids keep it bounded.
    #[test]
    fn dirty_ids_match_a_set_of_the_ids_written_since_the_capture() {
        let mut st = State::default();
        let spec = CollectionSpec { name: "c".into(), dim: 2, metric: Metric::L2, m: 8, ef_construction: 32 };
        st.apply(1, 0, vec![Op::CreateCollection(spec)]).expect("create");
        let mut model = BTreeSet::new();
        let mut seq = 2;
        for round in 0..3000usize {
            let id = format!("id-{}", round % 97);
            let op = if round % 5 == 4 { Op::Delete { collection: "c".into(), id: id.clone() } } else { upsert(&id, round) };
            let existed = st.collections["c"].rows.contains_key(id.as_str());
            if !matches!(op, Op::Delete { .. }) || existed {
                model.insert(id);
            }
            st.apply(seq, 0, vec![op]).expect("apply");
            seq += 1;
            if round == 1500 {
                let c = st.collections.get_mut("c").expect("c");
                let got: Vec<String> = c.take_dirty().iter().map(|id| id.to_string()).collect();
                assert_eq!(got, model.iter().cloned().collect::<Vec<_>>(), "first capture");
                model.clear();
            }
        }
        let c = st.collections.get_mut("c").expect("c");
        assert!(c.dirty.len() <= 2 * DIRTY_DEDUP_MIN, "bounded: {}", c.dirty.len());
        let got: Vec<String> = c.take_dirty().iter().map(|id| id.to_string()).collect();
        assert_eq!(got, model.into_iter().collect::<Vec<_>>(), "second capture");
        assert!(c.take_dirty().is_empty(), "a capture leaves nothing dirty");
        // Far more writes than DIRTY_DEDUP_MIN to three ids: deduped as it doubles.
        for round in 0..20_000usize {
            st.apply(seq, 0, vec![upsert(&format!("x{}", round % 3), round)]).expect("apply");
            seq += 1;
        }
        let c = st.collections.get_mut("c").expect("c");
        assert!(c.dirty.len() < 2 * DIRTY_DEDUP_MIN, "bounded: {}", c.dirty.len());
        assert_eq!(c.take_dirty().len(), 3);
    }
}
