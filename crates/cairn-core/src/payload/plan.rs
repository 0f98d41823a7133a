//! What the payload indexes can answer about a filter: an upper bound on its matches (from
//! postings sizes, without touching them), its candidate labels, and whether one row matches.
//! An indexed condition is answerable when its operand has the index's type; `$exists`, and
//! conditions on unindexed fields, are not (the caller falls back to parsing metadata).

use std::ops::Bound;

use super::{FieldIndex, Key, PayloadIndexes};
use crate::filter::{Node, RangeOp, Scalar, Test};
use crate::keyed_hash::IdSet;

/// Labels that include every live row matching a filter. `exact`: exactly those rows.
pub struct Candidates {
    pub labels: IdSet<u64>,
    pub exact: bool,
}

/// Keys of `idx` a positive condition selects, as postings; None when it is not answerable.
fn selected<'a>(idx: &'a FieldIndex, test: &Test) -> Option<Vec<&'a IdSet<u64>>> {
    let lookup = |s: &Scalar| Key::of_scalar(idx.kind, s).map(|k| idx.postings.get(&k));
    match test {
        Test::Eq(s) => lookup(s).map(|p| p.into_iter().collect()),
        Test::In(list) => {
            let mut out = Vec::new();
            for s in list {
                out.extend(lookup(s)?);
            }
            Some(out)
        }
        Test::Range(op, bound) => {
            let k = Key::of_scalar(idx.kind, bound)?;
            let range = match op {
                RangeOp::Gt => (Bound::Excluded(k), Bound::Unbounded),
                RangeOp::Gte => (Bound::Included(k), Bound::Unbounded),
                RangeOp::Lt => (Bound::Unbounded, Bound::Excluded(k)),
                RangeOp::Lte => (Bound::Unbounded, Bound::Included(k)),
            };
            Some(idx.postings.range(range).map(|(_, set)| set).collect())
        }
        Test::Ne(_) | Test::Nin(_) | Test::Exists(_) => None,
    }
}

impl PayloadIndexes {
    fn index_for(&self, field: &str) -> Option<&FieldIndex> {
        if self.fields.is_empty() {
            return None;
        }
        self.fields.get(field)
    }

    /// An upper bound on the rows matching `node`, or None when the indexes cannot bound it.
    pub fn estimate(&self, node: &Node) -> Option<usize> {
        match node {
            Node::Field { field, test, .. } => Some(selected(self.index_for(field)?, test)?.iter().map(|s| s.len()).sum()),
            Node::And(children) => children.iter().filter_map(|c| self.estimate(c)).min(),
            Node::Or(children) => children.iter().map(|c| self.estimate(c)).sum(),
            Node::Not(_) => None,
        }
    }

    /// Candidate labels of `node`, or None when the indexes cannot enumerate them.
    pub fn candidates(&self, node: &Node) -> Option<Candidates> {
        match node {
            Node::Field { field, test, .. } => {
                let sets = selected(self.index_for(field)?, test)?;
                let mut labels = IdSet::with_capacity_and_hasher(sets.iter().map(|s| s.len()).sum(), Default::default());
                for s in sets {
                    labels.extend(s.iter().copied());
                }
                Some(Candidates { labels, exact: true })
            }
            Node::And(children) => {
                // Enumerate the smallest answerable child; the others filter it when they can.
                let (best, _) =
                    children.iter().enumerate().filter_map(|(i, c)| self.estimate(c).map(|n| (i, n))).min_by_key(|(_, n)| *n)?;
                let Candidates { mut labels, exact } = self.candidates(&children[best])?;
                let mut all_exact = exact;
                for (i, c) in children.iter().enumerate() {
                    if i == best {
                        continue;
                    }
                    match self.probe(c) {
                        true => labels.retain(|l| self.eval_label(c, *l).unwrap_or(true)),
                        false => all_exact = false,
                    }
                }
                Some(Candidates { labels, exact: all_exact })
            }
            Node::Or(children) => {
                let mut labels = IdSet::default();
                let mut exact = true;
                for c in children {
                    let got = self.candidates(c)?;
                    exact &= got.exact;
                    labels.extend(got.labels);
                }
                Some(Candidates { labels, exact })
            }
            Node::Not(_) => None,
        }
    }

    /// Whether `eval_label` answers `node` for every row.
    fn probe(&self, node: &Node) -> bool {
        match node {
            Node::Field { field, test, .. } => self.index_for(field).is_some_and(|idx| answerable(idx, test)),
            Node::And(c) | Node::Or(c) => c.iter().all(|c| self.probe(c)),
            Node::Not(inner) => self.probe(inner),
        }
    }

    /// Does the live row with `label` match `node`, from the indexes alone? None when some
    /// condition it depends on is not answerable.
    pub fn eval_label(&self, node: &Node, label: u64) -> Option<bool> {
        match node {
            Node::Field { field, test, .. } => {
                let idx = self.index_for(field)?;
                if !answerable(idx, test) {
                    return None;
                }
                let keys = idx.label_keys(label);
                let has = |s: &Scalar| keys.binary_search_by(|k| k.cmp_scalar(s)).is_ok();
                Some(match test {
                    Test::Eq(s) => has(s),
                    Test::Ne(s) => !has(s),
                    Test::In(list) => list.iter().any(has),
                    Test::Nin(list) => !list.iter().any(has),
                    Test::Range(op, bound) => keys.iter().any(|k| {
                        let o = k.cmp_scalar(bound);
                        match op {
                            RangeOp::Gt => o.is_gt(),
                            RangeOp::Gte => o.is_ge(),
                            RangeOp::Lt => o.is_lt(),
                            RangeOp::Lte => o.is_le(),
                        }
                    }),
                    Test::Exists(_) => return None,
                })
            }
            Node::And(children) => {
                let mut unknown = false;
                for c in children {
                    match self.eval_label(c, label) {
                        Some(false) => return Some(false),
                        Some(true) => {}
                        None => unknown = true,
                    }
                }
                (!unknown).then_some(true)
            }
            Node::Or(children) => {
                let mut unknown = false;
                for c in children {
                    match self.eval_label(c, label) {
                        Some(true) => return Some(true),
                        Some(false) => {}
                        None => unknown = true,
                    }
                }
                (!unknown).then_some(false)
            }
            Node::Not(inner) => self.eval_label(inner, label).map(|b| !b),
        }
    }
}

/// An index answers a test when every operand has its type: values of other types, which it
/// does not hold, could then never match.
fn answerable(idx: &FieldIndex, test: &Test) -> bool {
    let typed = |s: &Scalar| Key::of_scalar(idx.kind, s).is_some();
    match test {
        Test::Eq(s) | Test::Ne(s) | Test::Range(_, s) => typed(s),
        Test::In(list) | Test::Nin(list) => list.iter().all(typed),
        Test::Exists(_) => false,
    }
}
