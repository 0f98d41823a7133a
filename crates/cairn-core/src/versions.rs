//! Row versions for read views and transactions (MVCC): what a collection held at an older
//! sequence number while later writes go on.
//!
//! Invariants:
//! - A collection's current rows are always the newest versions. While any view is pinned
//!   (`State::pins` non-empty), applying a write that changes an id first appends the id's
//!   prior version to `Collection::history`, with `until` = the write's seq. Entries per id are
//!   in seq order.
//! - Every pinned seq `v` is at most the seq applied when its view was taken, so every change
//!   after `v` was applied while the view was pinned and is in `history`. The state of an id at
//!   `v` is therefore the prior of its first entry with `until > v`, or its current row if it
//!   has none.
//! - Entries with `until <= min(pins)` answer no pinned seq and are pruned when a view is
//!   released (`State::prune_versions`); with no pins, `history` is empty.
//! - The HNSW graph holds only current rows. A view's k-NN searches the graph for current rows
//!   written at or before its seq (unchanged since) and scans the retained prior versions
//!   exactly, so graph compaction never needs to keep a tombstone for a view.

use std::collections::BinaryHeap;
use std::ops::Bound;

use crate::filter::Filter;
use crate::index::seq_of_label;
use crate::state::{prepare_query, row_distance, Collection, HeapItem, Hit, Prior, Row, State, UnreadableRecord, Version};

/// What a read as of a seq finds for one id.
pub enum Visible<'a> {
    Absent,
    Row(&'a Row),
    Unreadable(&'a UnreadableRecord),
}

impl Prior {
    fn visible(&self) -> Visible<'_> {
        match self {
            Prior::Absent => Visible::Absent,
            Prior::Row(r) => Visible::Row(r),
            Prior::Unreadable(u) => Visible::Unreadable(u),
        }
    }
}

impl Collection {
    /// The id's current state, as a prior version to keep.
    pub(crate) fn current_prior(&self, id: &str) -> Prior {
        match (self.rows.get(id), self.unreadable.get(id)) {
            (Some(r), _) => Prior::Row(r.clone()),
            (None, Some(u)) => Prior::Unreadable(u.clone()),
            (None, None) => Prior::Absent,
        }
    }

    /// Keep the id's current state as the version the write at `seq` replaces.
    pub(crate) fn keep_version(&mut self, id: &str, seq: u64) {
        let prior = self.current_prior(id);
        self.history.entry(id.to_string()).or_default().push(Version { until: seq, prior });
    }

    /// The retained version that answers for `id` at `seq`, if the id changed after it.
    fn prior_at(&self, id: &str, seq: u64) -> Option<&Prior> {
        self.history.get(id)?.iter().find(|v| v.until > seq).map(|v| &v.prior)
    }

    /// The id as of `seq` (a pinned seq: see the module invariants).
    pub fn visible_at(&self, id: &str, seq: u64) -> Visible<'_> {
        if let Some(p) = self.prior_at(id, seq) {
            return p.visible();
        }
        match (self.rows.get(id), self.unreadable.get(id)) {
            (Some(r), _) => Visible::Row(r),
            (None, Some(u)) => Visible::Unreadable(u),
            (None, None) => Visible::Absent,
        }
    }

    /// The seq of the last write that changed `id`, as far as the retained versions and the
    /// current row tell: exact for any change after the oldest pinned seq.
    pub fn last_change(&self, id: &str) -> u64 {
        let kept = self.history.get(id).and_then(|vs| vs.last()).map_or(0, |v| v.until);
        let current = self.rows.get(id).map(|r| seq_of_label(r.label)).or_else(|| self.unreadable.get(id).map(|u| seq_of_label(u.label)));
        kept.max(current.unwrap_or(0))
    }

    /// Retained prior versions that answer at `seq` (ids changed after it), in id order.
    fn changed_after(&self, seq: u64, after: Option<&str>) -> impl Iterator<Item = (&String, &Prior)> {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.history
            .range::<str, _>((lower, Bound::Unbounded))
            .filter_map(move |(id, vs)| vs.iter().find(|v| v.until > seq).map(|v| (id, &v.prior)))
    }

    /// Records (unreadable ones included) matching `filter` as of `seq`.
    pub fn count_at(&self, seq: u64, filter: &Filter) -> usize {
        let unchanged = |label: u64| seq_of_label(label) <= seq;
        let mut n = if filter.matches_everything() {
            self.rows.values().filter(|r| unchanged(r.label)).count() + self.unreadable.values().filter(|u| unchanged(u.label)).count()
        } else {
            self.rows.values().filter(|r| unchanged(r.label) && self.row_matches(r, filter)).count()
        };
        for (_, prior) in self.changed_after(seq, None) {
            n += usize::from(match prior {
                Prior::Absent => false,
                Prior::Row(r) => filter.matches(&r.metadata),
                Prior::Unreadable(_) => filter.matches_everything(),
            });
        }
        n
    }

    /// Up to `limit` rows matching `filter` with ids above `after`, in id order, as of `seq`.
    /// Unreadable records are not listed (as in a live scan).
    pub fn scan_at<'a>(&'a self, seq: u64, filter: &Filter, after: Option<&str>, limit: usize) -> Vec<(&'a str, &'a Row)> {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut current = self
            .order
            .range::<str, _>((lower, Bound::Unbounded))
            .filter_map(|id| self.rows.get_key_value(&**id))
            .filter(|(_, r)| seq_of_label(r.label) <= seq && (filter.matches_everything() || self.row_matches(r, filter)))
            .map(|(id, r)| (&**id, r))
            .peekable();
        let mut kept = self
            .changed_after(seq, after)
            .filter_map(|(id, p)| match p {
                Prior::Row(r) if filter.matches(&r.metadata) => Some((id.as_str(), r)),
                _ => None,
            })
            .peekable();
        let mut page = Vec::with_capacity(limit.min(1024));
        // Disjoint: a current row written at or before `seq` has no retained version after it.
        while page.len() < limit {
            let take_current = match (current.peek(), kept.peek()) {
                (Some(c), Some(k)) => c.0 < k.0,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_current { current.next() } else { kept.next() };
            page.extend(next);
        }
        page
    }

    /// k-NN as of `seq`: the current rows unchanged since (through the graph when `ef` is
    /// given, else exactly) merged with an exact scan of the retained prior versions.
    pub fn search_at(&self, seq: u64, query: &[f32], k: usize, ef: Option<usize>, filter: Option<&Filter>) -> (Vec<Hit>, bool) {
        let unchanged = |label: u64| seq_of_label(label) <= seq;
        let (current, graph) = match ef {
            Some(ef) => self.search_admitting(query, k, ef, filter, &unchanged),
            None => (self.exact_search(query, k, filter, |row| unchanged(row.label)), false),
        };
        let q = prepare_query(self.spec.metric, query);
        let filter = filter.filter(|f| !f.matches_everything());
        let mut heap: BinaryHeap<HeapItem> = current.into_iter().map(|h| HeapItem(h.distance, h.id)).collect();
        for (id, prior) in self.changed_after(seq, None) {
            let Prior::Row(r) = prior else { continue };
            if filter.is_some_and(|f| !f.matches(&r.metadata)) {
                continue;
            }
            heap.push(HeapItem(row_distance(self.spec.metric, &q, &r.vector), id.clone()));
            if heap.len() > k {
                heap.pop();
            }
        }
        (heap.into_sorted_vec().into_iter().map(|HeapItem(distance, id)| Hit { id, distance }).collect(), graph)
    }

    /// Prior versions held, over every id.
    pub fn versions_held(&self) -> usize {
        self.history.values().map(Vec::len).sum()
    }
}

impl State {
    /// Pin `self.last_seq` for a view; returns it.
    pub fn pin(&mut self) -> u64 {
        *self.pins.entry(self.last_seq).or_default() += 1;
        self.last_seq
    }

    /// Unpin one view of `seq` and drop the versions no pinned seq needs any more.
    pub fn unpin(&mut self, seq: u64) {
        if let Some(n) = self.pins.get_mut(&seq) {
            *n -= 1;
            if *n == 0 {
                self.pins.remove(&seq);
                self.prune_versions();
            }
        }
    }

    /// Whether applying a write must keep the versions it replaces.
    pub fn keeps_versions(&self) -> bool {
        !self.pins.is_empty()
    }

    fn prune_versions(&mut self) {
        let oldest = self.pins.keys().next().copied().unwrap_or(u64::MAX);
        for c in self.collections.values_mut().chain(self.dropped.iter_mut().map(|(_, c)| c)) {
            c.history.retain(|_, vs| {
                vs.retain(|v| v.until > oldest);
                !vs.is_empty()
            });
        }
        self.dropped.retain(|(dropped_at, _)| *dropped_at > oldest);
    }

    /// The collection `name` as it was at `seq`: the current one if it was created by then,
    /// else one dropped after `seq` whose versions are kept.
    pub fn collection_at(&self, name: &str, seq: u64) -> crate::error::Result<&Collection> {
        if self.released {
            return Err(crate::error::Error::Closed);
        }
        let current = self.collections.get(name).filter(|c| c.id <= seq);
        let dropped = || self.dropped.iter().find(|(at, c)| c.spec.name == name && c.id <= seq && *at > seq).map(|(_, c)| c);
        current.or_else(dropped).ok_or_else(|| crate::error::Error::NotFound(format!("collection '{name}' did not exist at seq {seq}")))
    }

    /// Views pinned, and the prior versions they hold over every collection.
    pub fn pinned(&self) -> (usize, usize, Option<u64>) {
        let views = self.pins.values().sum();
        let versions = self.collections.values().chain(self.dropped.iter().map(|(_, c)| c)).map(Collection::versions_held).sum();
        (views, versions, self.pins.keys().next().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{CollectionSpec, Op};
    use crate::distance::Metric;

    fn state() -> State {
        let mut st = State::default();
        let spec = CollectionSpec { name: "c".into(), dim: 2, metric: Metric::L2, m: 16, ef_construction: 64 };
        st.apply(1, 0, vec![Op::CreateCollection(spec)]).expect("create");
        st
    }

    fn up(id: &str, x: f32) -> Op {
        Op::Upsert { collection: "c".into(), id: id.into(), vector: vec![x, 0.0].into(), metadata: format!("{{\"x\":{x}}}").into() }
    }

    fn del(id: &str) -> Op {
        Op::Delete { collection: "c".into(), id: id.into() }
    }

    fn seen_at(st: &State, seq: u64) -> Vec<(String, f32)> {
        let c = st.collection_at("c", seq).expect("collection");
        c.scan_at(seq, &Filter::all(), None, 1000).into_iter().map(|(id, r)| (id.to_string(), r.vector[0])).collect()
    }

    #[test]
    fn no_versions_are_kept_without_a_pinned_view() {
        let mut st = state();
        st.apply(2, 0, vec![up("a", 1.0)]).expect("a");
        st.apply(3, 0, vec![up("a", 2.0), del("a")]).expect("a again");
        assert_eq!(st.pinned(), (0, 0, None));
    }

    #[test]
    fn a_pinned_seq_reads_the_same_rows_while_writes_go_on_and_frees_them_after() {
        let mut st = state();
        st.apply(2, 0, vec![up("a", 1.0), up("b", 1.0)]).expect("seed");
        let v = st.pin();
        let before = seen_at(&st, v);
        st.apply(3, 0, vec![up("a", 2.0), del("b"), up("c", 3.0)]).expect("changes");
        st.apply(4, 0, vec![del("a"), up("b", 4.0)]).expect("more");
        let w = st.pin();
        st.apply(5, 0, vec![up("d", 5.0)]).expect("after the second view");
        assert_eq!(seen_at(&st, v), before);
        assert_eq!(before, vec![("a".to_string(), 1.0), ("b".to_string(), 1.0)]);
        assert_eq!(seen_at(&st, w), vec![("b".to_string(), 4.0), ("c".to_string(), 3.0)]);
        let c = st.collection_at("c", v).expect("c");
        assert_eq!((c.count_at(v, &Filter::all()), c.count_at(w, &Filter::all()), c.count()), (2, 2, 3));
        let f = Filter::parse(r#"{"x":{"$gte":2}}"#).expect("filter");
        assert_eq!((c.count_at(v, &f), c.count_at(w, &f)), (0, 2));
        assert!(matches!(c.visible_at("a", v), Visible::Row(r) if r.vector[0] == 1.0));
        assert!(matches!(c.visible_at("a", w), Visible::Absent));
        assert_eq!(c.last_change("a"), 4);
        // The exact k-NN as of each seq is the nearest of what that seq's scan holds.
        let (hits, _) = c.search_at(v, &[4.0, 0.0], 5, None, None);
        assert_eq!(hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let (hits, _) = c.search_at(w, &[4.0, 0.0], 1, None, None);
        assert_eq!(hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["b"]);

        st.unpin(v);
        let (views, versions, oldest) = st.pinned();
        assert_eq!((views, oldest), (1, Some(w)));
        assert_eq!(versions, 1, "only d's absence before seq 5 answers for the remaining view");
        assert_eq!(seen_at(&st, w), vec![("b".to_string(), 4.0), ("c".to_string(), 3.0)]);
        st.unpin(w);
        assert_eq!(st.pinned(), (0, 0, None));
    }

    #[test]
    fn a_dropped_collection_stays_readable_for_an_older_view() {
        let mut st = state();
        st.apply(2, 0, vec![up("a", 1.0)]).expect("seed");
        let v = st.pin();
        st.apply(3, 0, vec![Op::DropCollection { name: "c".into() }]).expect("drop");
        let spec = CollectionSpec { name: "c".into(), dim: 2, metric: Metric::L2, m: 16, ef_construction: 64 };
        st.apply(4, 0, vec![Op::CreateCollection(spec)]).expect("recreate");
        assert_eq!(seen_at(&st, v), vec![("a".to_string(), 1.0)]);
        assert!(st.collection_at("c", 4).expect("new").rows.is_empty());
        st.unpin(v);
        assert!(st.dropped.is_empty());
    }
}
