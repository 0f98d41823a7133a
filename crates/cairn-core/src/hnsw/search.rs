//! Searching the graph: greedy descent through the upper levels, best-first search of one level
//! (Malkov & Yashunin alg. 2), and the public filtered k-NN search built from them.

use std::cell::Cell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::Hnsw;

/// How many neighbours ahead of the distance being computed a search starts loading vectors.
const VECTOR_PREFETCH_AHEAD: usize = 2;

/// A node and its distance to the current query. Ordered by distance, then id, so heaps and sorts
/// are total even with equal distances.
#[derive(Clone, Copy, Debug)]
pub(super) struct Scored {
    pub(super) dist: f32,
    pub(super) node: u32,
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist.total_cmp(&other.dist).then(self.node.cmp(&other.node))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scored {}

/// Which nodes a search has reached, as generation stamps: a node is visited iff its stamp equals
/// `generation`, so starting a new search costs one increment instead of clearing the array.
#[derive(Default)]
pub(super) struct VisitedSet {
    stamps: Vec<u16>,
    generation: u16,
}

impl VisitedSet {
    fn start(&mut self, node_slots: usize) {
        if self.stamps.len() < node_slots {
            self.stamps.resize(node_slots, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // Stamps from 65535 searches ago would alias the new generation.
            self.stamps.fill(0);
            self.generation = 1;
        }
    }

    /// Marks `node`; returns true if it was not yet visited in this search.
    #[inline]
    fn insert(&mut self, node: u32) -> bool {
        match self.stamps.get_mut(node as usize) {
            Some(stamp) if *stamp != self.generation => {
                *stamp = self.generation;
                true
            }
            Some(_) => false,
            // Ids come from the graph and are below its capacity, which sized `stamps`; treating
            // anything else as visited keeps a broken invariant from becoming a panic.
            None => false,
        }
    }
}

/// Reusable per-thread buffers of one layer search.
#[derive(Default)]
pub(super) struct SearchScratch {
    visited: VisitedSet,
    /// Frontier, nearest first.
    candidates: BinaryHeap<Reverse<Scored>>,
    /// Best admitted nodes so far, farthest first, at most `ef`.
    pub(super) results: BinaryHeap<Scored>,
    /// Unvisited neighbours of the node being expanded.
    fresh: Vec<u32>,
}

thread_local! {
    static SCRATCH: Cell<Option<SearchScratch>> = const { Cell::new(None) };
}

/// Runs `job` with this thread's scratch. The scratch is moved out while in use, so a re-entrant
/// call (a search filter that itself searches) simply gets a fresh one instead of a borrow panic.
pub(super) fn with_scratch<R>(job: impl FnOnce(&mut SearchScratch) -> R) -> R {
    let mut scratch = SCRATCH.try_with(Cell::take).ok().flatten().unwrap_or_default();
    let result = job(&mut scratch);
    // Fails only during thread teardown, when the scratch is simply dropped.
    let _ = SCRATCH.try_with(|cell| cell.set(Some(scratch)));
    result
}

impl Hnsw {
    /// Distance from a query (unit-normalised for cosine) to a node.
    #[inline]
    pub(super) fn distance_to(&self, query: &[f32], node: u32) -> f32 {
        let d = (self.distance)(query, self.graph.vector(node));
        if self.cosine {
            // The kernel gave 1 - q.v; the node's vector is v = norm * unit.
            1.0 - (1.0 - d) / self.graph.norm(node)
        } else {
            d
        }
    }

    /// Distance between two nodes.
    #[inline]
    pub(super) fn distance_between(&self, a: u32, b: u32) -> f32 {
        let d = (self.distance)(self.graph.vector(a), self.graph.vector(b));
        if self.cosine {
            1.0 - (1.0 - d) / (self.graph.norm(a) * self.graph.norm(b))
        } else {
            d
        }
    }

    /// Greedy walk from `start` on each level from `top` down to `bottom` (inclusive): move to the
    /// closest neighbour while that improves. Returns the local minimum on `bottom`.
    pub(super) fn greedy_descend(&self, query: &[f32], start: Scored, top: usize, bottom: usize) -> Scored {
        let mut best = start;
        for level in (bottom..=top).rev() {
            loop {
                let links = self.graph.links(best.node, level);
                let mut improved = false;
                for i in 0..links.len() {
                    let neighbour = links.get(i);
                    let dist = self.distance_to(query, neighbour);
                    if dist < best.dist {
                        best = Scored { dist, node: neighbour };
                        improved = true;
                    }
                }
                if !improved {
                    break;
                }
            }
        }
        best
    }

    /// Best-first search of `level` from `start`, leaving the (up to) `ef` closest nodes that
    /// satisfy `admit` in `scratch.results`.
    ///
    /// Non-admitted nodes are still expanded, and the search stops only once `ef` admitted nodes
    /// are held and the frontier is farther than all of them. So a selective filter or many
    /// tombstones make the search walk farther instead of returning too few results.
    pub(super) fn search_level(
        &self,
        query: &[f32],
        start: Scored,
        ef: usize,
        level: usize,
        scratch: &mut SearchScratch,
        admit: impl Fn(u32) -> bool,
    ) {
        let SearchScratch { visited, candidates, results, fresh } = scratch;
        visited.start(self.graph.capacity());
        candidates.clear();
        results.clear();

        visited.insert(start.node);
        candidates.push(Reverse(start));
        if admit(start.node) {
            results.push(start);
        }
        let mut worst = results.peek().map_or(f32::INFINITY, |s| s.dist);

        while let Some(Reverse(current)) = candidates.pop() {
            if current.dist > worst && results.len() >= ef {
                break;
            }
            // The next node to expand is most likely the current frontier head; fetching its
            // links now hides that cache miss behind this node's distance computations.
            if let Some(Reverse(next)) = candidates.peek() {
                self.graph.prefetch_links(next.node, level);
            }
            let links = self.graph.links(current.node, level);
            fresh.clear();
            for i in 0..links.len() {
                let neighbour = links.get(i);
                if visited.insert(neighbour) {
                    fresh.push(neighbour);
                    self.graph.prefetch_vector_handle(neighbour);
                }
            }
            // Vectors are fetched VECTOR_PREFETCH_AHEAD neighbours ahead of the one being
            // measured: one 128-d distance is shorter than a miss to memory.
            for &ahead in fresh.iter().take(VECTOR_PREFETCH_AHEAD) {
                self.graph.prefetch_vector(ahead);
            }
            for (i, &neighbour) in fresh.iter().enumerate() {
                if let Some(&following) = fresh.get(i + VECTOR_PREFETCH_AHEAD) {
                    self.graph.prefetch_vector(following);
                }
                let dist = self.distance_to(query, neighbour);
                if results.len() < ef || dist < worst {
                    let scored = Scored { dist, node: neighbour };
                    candidates.push(Reverse(scored));
                    if admit(neighbour) {
                        results.push(scored);
                        if results.len() > ef {
                            results.pop();
                        }
                        worst = results.peek().map_or(f32::INFINITY, |s| s.dist);
                    }
                }
            }
        }
    }

    /// The `k` nearest live labels to `query` with their distances, nearest first.
    ///
    /// `ef` is the beam width (raised to `k` if smaller). With `filter`, only labels it accepts
    /// are returned and the search keeps expanding until it holds `max(ef, k)` accepted labels or
    /// has exhausted the reachable graph. A query of the wrong dimension or with non-finite values
    /// matches nothing and returns an empty list (the engine validates queries before this).
    pub fn search(&self, query: &[f32], k: usize, ef: usize, filter: Option<&(dyn Fn(u64) -> bool + Sync)>) -> Vec<(u64, f32)> {
        if k == 0 || query.len() != self.params.dim || query.iter().any(|x| !x.is_finite()) {
            return Vec::new();
        }
        let Some((entry, top)) = self.entry.get() else {
            return Vec::new();
        };
        let query = self.prepare(query);
        let beam = ef.max(k);
        with_scratch(|scratch| {
            let start = Scored { dist: self.distance_to(&query, entry), node: entry };
            let start = self.greedy_descend(&query, start, top, 1);
            let admit = |node: u32| !self.graph.is_tombstoned(node) && filter.is_none_or(|accepts| accepts(self.graph.label(node)));
            self.search_level(&query, start, beam, 0, scratch, admit);
            let mut found: Vec<Scored> = scratch.results.drain().collect();
            found.sort_unstable();
            found.truncate(k);
            found.into_iter().map(|s| (self.graph.label(s.node), s.dist)).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_data::{brute_force, TestRng};
    use super::super::{Hnsw, HnswParams};
    use crate::distance::Metric;

    fn build(metric: Metric, n: usize, dim: usize, seed: u64) -> (Hnsw, Vec<(u64, Vec<f32>)>) {
        let index = Hnsw::new(HnswParams { dim, metric, m: 12, ef_construction: 100 }, n).expect("params");
        let mut rng = TestRng(seed);
        let data: Vec<(u64, Vec<f32>)> = rng.vectors(n, dim).into_iter().enumerate().map(|(i, v)| (1000 + i as u64, v)).collect();
        let items: Vec<(u64, &[f32])> = data.iter().map(|(l, v)| (*l, v.as_slice())).collect();
        index.insert_batch(&items).expect("capacity");
        (index, data)
    }

    #[test]
    fn visited_set_survives_generation_wraparound() {
        let mut visited = super::VisitedSet::default();
        for _ in 0..70_000 {
            visited.start(4);
            assert!(visited.insert(3));
            assert!(!visited.insert(3));
        }
        assert!(!visited.insert(9), "out-of-range ids count as visited instead of panicking");
    }

    #[test]
    fn results_are_sorted_and_match_brute_force_on_small_data() {
        let (index, data) = build(Metric::L2, 2000, 16, 7);
        let mut rng = TestRng(99);
        let mut hits = 0;
        for query in rng.vectors(50, 16) {
            let found = index.search(&query, 10, 64, None);
            assert_eq!(found.len(), 10);
            assert!(found.windows(2).all(|w| w[0].1 <= w[1].1), "ascending distances");
            let exact = brute_force(Metric::L2, &data, &query, 10);
            hits += found.iter().filter(|(label, _)| exact.contains(label)).count();
        }
        let recall = hits as f64 / 500.0;
        assert!(recall >= 0.95, "recall {recall}");
    }

    #[test]
    fn search_of_empty_index_or_bad_query_is_empty() {
        let index = Hnsw::new(HnswParams::new(4, Metric::Ip), 10).expect("params");
        assert!(index.search(&[1.0; 4], 5, 10, None).is_empty());
        index.insert(1, &[1.0, 0.0, 0.0, 0.0]).expect("capacity");
        assert!(index.search(&[1.0; 3], 5, 10, None).is_empty());
        assert!(index.search(&[f32::NAN; 4], 5, 10, None).is_empty());
        assert!(index.search(&[1.0; 4], 0, 10, None).is_empty());
        assert_eq!(index.search(&[1.0; 4], 5, 10, None), vec![(1, 0.0)]);
    }

    #[test]
    fn filter_that_searches_again_does_not_panic() {
        let (index, _) = build(Metric::L2, 300, 8, 5);
        let probe = vec![0.0; 8];
        let filter = |label: u64| label.is_multiple_of(2) && !index.search(&probe, 1, 8, None).is_empty();
        let found = index.search(&probe, 5, 16, Some(&filter));
        assert_eq!(found.len(), 5);
        assert!(found.iter().all(|(label, _)| label.is_multiple_of(2)));
    }
}
