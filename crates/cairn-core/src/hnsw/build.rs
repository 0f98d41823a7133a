//! Insertion (Malkov & Yashunin alg. 1) with the neighbour-selection heuristic (alg. 4), safe to
//! run from many threads at once and alongside searches.

use crate::shared_vector::SharedVector;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

use rayon::prelude::*;

use super::graph::MAX_LEVEL;
use super::search::{with_scratch, Scored};
use super::Hnsw;
use crate::error::{Error, Result};
use crate::sync::{lock, read, write};

/// splitmix64 finaliser: turns the level-draw counter into well-mixed random bits.
fn mix(counter: u64) -> u64 {
    let mut z = counter.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Hnsw {
    /// Inserts `vector` under `label`, or replaces the vector of an existing label (the old node
    /// is tombstoned and the label moves to a new node). Takes one node slot either way; fails
    /// with `InvalidArgument` when no slot is left (call `reserve`) or the vector is invalid.
    /// The graph keeps a copy; `insert_shared` keeps the caller's vector instead.
    pub fn insert(&self, label: u64, vector: &[f32]) -> Result<()> {
        self.insert_shared(label, SharedVector::from_slice(vector))
    }

    /// `insert` of a vector the graph holds by reference (the row's own, so it is in memory
    /// once); it must never change afterwards.
    pub fn insert_shared(&self, label: u64, vector: SharedVector) -> Result<()> {
        self.check_vector(&vector)?;
        let norm = self.norm_of(&vector);
        let _gate = read(&self.insert_gate);
        self.insert_node(label, vector, norm)
    }

    /// Inserts many items in parallel on the rayon pool, each keeping a copy of its vector. A
    /// label given twice ends with its last vector, as if the items were inserted in order.
    /// Fails before inserting anything if a vector is invalid or the free slots cannot hold the
    /// batch; a concurrent insert that takes the last slots midway leaves the batch partly
    /// inserted (re-inserting it is an update).
    pub fn insert_batch(&self, items: &[(u64, &[f32])]) -> Result<()> {
        let shared: Vec<(u64, SharedVector)> = items.iter().map(|(label, v)| (*label, SharedVector::from_slice(v))).collect();
        self.insert_shared_batch(&shared)
    }

    /// `insert_batch` of vectors the graph holds by reference (see `insert_shared`).
    pub fn insert_shared_batch(&self, items: &[(u64, SharedVector)]) -> Result<()> {
        for (_, vector) in items {
            self.check_vector(vector)?;
        }
        let mut last_index_of_label: HashMap<u64, usize> = HashMap::with_capacity(items.len());
        for (i, (label, _)) in items.iter().enumerate() {
            last_index_of_label.insert(*label, i);
        }
        let mut kept: Vec<usize> =
            if last_index_of_label.len() == items.len() { (0..items.len()).collect() } else { last_index_of_label.into_values().collect() };
        kept.sort_unstable();
        let unique: Vec<(u64, SharedVector, f32)> =
            kept.into_iter().map(|i| (items[i].0, items[i].1.clone(), self.norm_of(&items[i].1))).collect();
        self.insert_many(&unique)
    }

    /// Inserts validated items with unique labels, each with its norm, in parallel.
    pub(super) fn insert_many(&self, items: &[(u64, SharedVector, f32)]) -> Result<()> {
        let _gate = read(&self.insert_gate);
        let free = self.graph.capacity() - read(&self.directory).allocated as usize;
        if items.len() > free {
            return Err(Error::InvalidArgument(format!(
                "hnsw index has {free} free node slots, batch needs {}; reserve more capacity",
                items.len()
            )));
        }
        items.par_iter().try_for_each(|(label, vector, norm)| self.insert_node(*label, vector.clone(), *norm))
    }

    /// Inserts a validated vector with its norm. The caller holds `insert_gate` shared.
    fn insert_node(&self, label: u64, vector: SharedVector, norm: f32) -> Result<()> {
        self.insert_at_level(label, vector, norm, self.draw_level(), |_| {})
    }

    /// `insert_node` with a given level; `after_layer` runs after each layer's links are
    /// published (tests pause there to interleave other inserts).
    fn insert_at_level(&self, label: u64, vector: SharedVector, norm: f32, level: usize, after_layer: impl FnMut(usize)) -> Result<()> {
        let node = self.allocate_node(label)?;
        // SAFETY: `node` was allocated to this call just now, and nothing links to it or names it
        // as entry point until `link_new_node` below publishes it.
        unsafe { self.graph.vectors.write(node, vector, norm) };
        self.graph.init_node(node, label, level);
        self.link_new_node(node, level, after_layer);
        Ok(())
    }

    /// Level for a new node: floor(-ln(U) / ln(M)) with U uniform in (0, 1], capped.
    fn draw_level(&self) -> usize {
        let bits = mix(self.level_draws.fetch_add(1, Ordering::Relaxed));
        let uniform = ((bits >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        ((-uniform.ln() * self.level_mult) as usize).min(MAX_LEVEL)
    }

    /// Takes the next free node slot for `label`, tombstoning the label's previous node.
    fn allocate_node(&self, label: u64) -> Result<u32> {
        let mut directory = write(&self.directory);
        if directory.allocated as usize >= self.graph.capacity() {
            return Err(Error::InvalidArgument(format!(
                "hnsw index is full ({} node slots); reserve more capacity",
                self.graph.capacity()
            )));
        }
        let node = directory.allocated;
        directory.allocated += 1;
        if let Some(previous) = directory.node_of_label.insert(label, node) {
            if self.graph.set_tombstone(previous) {
                directory.tombstones += 1;
            }
        }
        Ok(node)
    }

    /// Finds the new node's neighbours on every layer it shares with the graph, publishes its
    /// links, and makes it the entry point if it is the highest node.
    fn link_new_node(&self, node: u32, level: usize, after_layer: impl FnMut(usize)) {
        let (entry, top) = match self.entry.get() {
            Some(entry) => entry,
            None => {
                let _update = lock(&self.entry.update);
                match self.entry.get() {
                    Some(entry) => entry,
                    None => {
                        // The first node needs no links; publishing it as entry point is all.
                        self.entry.set(node, level);
                        return;
                    }
                }
            }
        };
        let chosen = self.choose_links(node, level, entry, top);
        self.publish_links(node, &chosen, after_layer);
        if level > top {
            let _update = lock(&self.entry.update);
            if self.entry.get().is_none_or(|(_, current_top)| level > current_top) {
                self.entry.set(node, level);
            }
        }
    }

    /// Searches layers `min(level, top)` down to 0 from `entry` and returns the neighbours chosen
    /// for `node` on each, indexed by layer. Links nothing: `node` stays unreachable throughout,
    /// so it can never turn up among its own candidates.
    fn choose_links(&self, node: u32, level: usize, entry: u32, top: usize) -> Vec<Vec<u32>> {
        let query = self.node_query(node);
        let query = &query[..];
        let lowest_shared = level.min(top);
        let mut chosen = vec![Vec::new(); lowest_shared + 1];
        with_scratch(|scratch| {
            let mut nearest = Scored { dist: self.distance_to(query, entry), node: entry };
            if level < top {
                nearest = self.greedy_descend(query, nearest, top, level + 1);
            }
            for layer in (0..=lowest_shared).rev() {
                self.search_level(query, nearest, self.params.ef_construction, layer, scratch, |_| true);
                let mut candidates: Vec<Scored> = scratch.results.drain().collect();
                candidates.sort_unstable();
                if let Some(&closest) = candidates.first() {
                    nearest = closest;
                }
                chosen[layer] = self.select_neighbours(&candidates, self.params.m);
            }
        });
        chosen
    }

    /// Links `node` layer by layer from 0 upwards, running `after_layer` after each.
    ///
    /// Bottom-up is what keeps concurrent inserts well connected: by the time `node` appears in
    /// any list on layer L, its own lists on layers 0..=L are complete, so a search that reaches
    /// it on layer L and descends from it continues through real neighbours. Linked top-down, a
    /// node reachable on an upper layer is a dead end below: inserters that descend into it find
    /// only it (and each other) on level 0, link only among themselves, and once the node's own
    /// level-0 links arrive and pruning drops them, they form a clique no search can enter.
    fn publish_links(&self, node: u32, chosen: &[Vec<u32>], mut after_layer: impl FnMut(usize)) {
        for (layer, neighbours) in chosen.iter().enumerate() {
            self.connect(node, layer, neighbours);
            after_layer(layer);
        }
    }

    /// The heuristic of alg. 4: walk candidates from nearest to farthest and keep one only if it
    /// is closer to the base than to every neighbour kept so far. This keeps links pointing in
    /// diverse directions, which is what lets greedy search cross between clusters.
    /// `candidates` must be sorted by distance to the base, ascending.
    fn select_neighbours(&self, candidates: &[Scored], max: usize) -> Vec<u32> {
        if candidates.len() <= max {
            return candidates.iter().map(|s| s.node).collect();
        }
        let mut kept: Vec<u32> = Vec::with_capacity(max);
        for candidate in candidates {
            if kept.len() >= max {
                break;
            }
            if kept.iter().all(|&k| self.distance_between(candidate.node, k) >= candidate.dist) {
                kept.push(candidate.node);
            }
        }
        kept
    }

    /// Links `node` to `chosen` on `layer` and each of them back to `node`, re-selecting a
    /// neighbour's links with the heuristic when its list is full. Locks one node at a time, so
    /// concurrent inserts cannot deadlock.
    fn connect(&self, node: u32, layer: usize, chosen: &[u32]) {
        {
            let lock = self.graph.lock_links(node);
            // Nothing links to `node` on `layer` before this call (see `publish_links`), so no
            // concurrent inserter can have added itself to this list yet.
            debug_assert_eq!(self.graph.links(node, layer).len(), 0);
            self.graph.set_links(&lock, node, layer, chosen);
        }
        for &neighbour in chosen {
            let lock = self.graph.lock_links(neighbour);
            if self.graph.push_link(&lock, neighbour, layer, node) {
                continue;
            }
            let current = self.graph.links(neighbour, layer).to_vec();
            let mut pool = current.clone();
            pool.push(node);
            let kept = self.reselect(neighbour, &current, &pool, layer);
            self.graph.set_links(&lock, neighbour, layer, &kept);
        }
    }

    /// Chooses at most `max_links(layer)` links for `base` out of `pool` (its `current` links plus
    /// newcomers) with the heuristic; on level 0, then, `keep_last_links` adjusts the choice.
    /// The caller holds `base`'s link lock and writes the result with `set_links`.
    fn reselect(&self, base: u32, current: &[u32], pool: &[u32], layer: usize) -> Vec<u32> {
        let max = self.graph.max_links(layer);
        if pool.len() <= max {
            return pool.to_vec();
        }
        let mut scored: Vec<Scored> = pool.iter().map(|&id| Scored { dist: self.distance_between(base, id), node: id }).collect();
        scored.sort_unstable();
        let kept = self.select_neighbours(&scored, max);
        if layer != 0 {
            return kept;
        }
        self.keep_last_links(current, &scored, kept, max)
    }

    /// Adjusts the heuristic's level-0 choice `preferred` (out of `scored`, the pool by distance)
    /// so that no live node loses its last incoming link.
    ///
    /// Without this a few nodes per thousand (more on high-dimensional, unclustered data) end up
    /// with no incoming level-0 link and can never be found. A link in `current` is dropped only
    /// once `release_level0_link` has uncounted it, so it stays when it is its target's last.
    /// Newcomers nothing links to yet are kept too, in place of the farthest links that can go.
    /// Everything that must stay fits: it is all in `current`, which holds at most `max`.
    fn keep_last_links(&self, current: &[u32], scored: &[Scored], preferred: Vec<u32>, max: usize) -> Vec<u32> {
        let mut kept = preferred;
        let mut pinned: Vec<u32> = Vec::new();
        for &id in current {
            if !kept.contains(&id) && !self.graph.release_level0_link(id) {
                pinned.push(id);
            }
        }
        let unlinked = |id: u32| self.graph.level0_in_degree(id) == 0 && !self.graph.is_tombstoned(id);
        let waiting: Vec<u32> =
            scored.iter().map(|s| s.node).filter(|id| !current.contains(id) && !kept.contains(id) && unlinked(*id)).collect();
        // Make room, farthest first, by dropping links that can go: a newcomer linked from
        // elsewhere, or a current link whose count can be released.
        let mut wanted = kept.len() + pinned.len() + waiting.len();
        let mut i = kept.len();
        while wanted > max && i > 0 {
            i -= 1;
            let id = kept[i];
            let can_go = if current.contains(&id) { self.graph.release_level0_link(id) } else { !unlinked(id) };
            if can_go {
                kept.remove(i);
                wanted -= 1;
            }
        }
        kept.extend(pinned);
        kept.extend(waiting);
        // Still too long only when nothing above could go; then unlinked newcomers are left out,
        // farthest first (they are last in `kept`).
        while kept.len() > max {
            match kept.iter().rposition(|id| !current.contains(id)) {
                Some(newcomer) => {
                    kept.remove(newcomer);
                }
                // Unreachable: the rest all come from `current`, which fits in `max`.
                None => break,
            }
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use crate::shared_vector::SharedVector;

    use super::super::test_data::TestRng;
    use super::super::{Hnsw, HnswParams};
    use crate::distance::Metric;

    #[test]
    fn level_distribution_follows_m_to_the_minus_level() {
        let index = Hnsw::new(HnswParams::new(2, Metric::L2), 0).expect("params");
        let draws = 200_000;
        let above_zero = (0..draws).filter(|_| index.draw_level() > 0).count();
        // P(level >= 1) = 1/M = 1/16.
        let fraction = above_zero as f64 / draws as f64;
        assert!((fraction - 1.0 / 16.0).abs() < 0.005, "fraction above level 0: {fraction}");
    }

    #[test]
    fn links_respect_limits_and_never_point_to_self() {
        let params = HnswParams { dim: 8, metric: Metric::L2, m: 6, ef_construction: 40 };
        let index = Hnsw::new(params, 1500).expect("params");
        let mut rng = TestRng(11);
        let vectors = rng.vectors(1500, 8);
        let items: Vec<(u64, &[f32])> = vectors.iter().enumerate().map(|(i, v)| (i as u64, v.as_slice())).collect();
        index.insert_batch(&items).expect("capacity");
        for node in 0..1500u32 {
            for layer in 0..=index.graph.level(node) {
                let links = index.graph.links(node, layer).to_vec();
                assert!(links.len() <= index.graph.max_links(layer));
                assert!(!links.contains(&node));
                assert!(links.iter().all(|&n| index.graph.level(n) >= layer));
                if index.len() > 1 && layer == 0 {
                    assert!(!links.is_empty(), "every node has a level-0 link");
                }
            }
        }
    }

    /// Uniform 24-d data is where plain heuristic pruning strands nodes without any incoming
    /// level-0 link; the in-degree guard must leave none, with counters matching the lists.
    #[test]
    fn every_node_keeps_an_incoming_level0_link_under_concurrent_build() {
        let params = HnswParams { dim: 24, metric: Metric::L2, m: 4, ef_construction: 32 };
        let index = Hnsw::new(params, 4000).expect("params");
        let mut rng = TestRng(5);
        let vectors = rng.vectors(4000, 24);
        let items: Vec<(u64, &[f32])> = vectors.iter().enumerate().map(|(i, v)| (i as u64, v.as_slice())).collect();
        index.insert_batch(&items).expect("capacity");
        let mut in_degree = vec![0u32; 4000];
        for node in 0..4000u32 {
            for target in index.graph.links(node, 0).to_vec() {
                in_degree[target as usize] += 1;
            }
        }
        for node in 0..4000u32 {
            assert_eq!(index.graph.level0_in_degree(node), in_degree[node as usize], "counter of node {node}");
        }
        let (entry, _) = index.entry.get().expect("non-empty");
        let orphans: Vec<u32> = (0..4000u32).filter(|&n| n != entry && in_degree[n as usize] == 0).collect();
        assert!(orphans.is_empty(), "nodes without incoming links: {orphans:?}");
    }

    /// Pauses one insert after each layer it publishes and meanwhile inserts level-0 nodes right
    /// beside it, whose descent passes through the paused node. Each must still be found by its
    /// own vector. Publishing top-down fails this deterministically: the newcomers descend into a
    /// node without lower-layer links, find only it and each other, and end up in a clique that
    /// nothing outside links into once the paused node's level-0 list is written.
    #[test]
    fn inserts_beside_a_partly_linked_node_stay_reachable() {
        let params = HnswParams { dim: 8, metric: Metric::L2, m: 8, ef_construction: 64 };
        let index = Hnsw::new(params, 2_100).expect("params");
        let mut rng = TestRng(21);
        for (label, v) in rng.vectors(2_000, 8).iter().enumerate() {
            index.insert(label as u64, v).expect("capacity");
        }
        let (_, top) = index.entry.get().expect("non-empty");
        let level = 2;
        assert!(top > level, "the paused node must stay below the entry point");

        let paused = rng.vectors(1, 8).remove(0);
        let mut beside: Vec<(u64, Vec<f32>)> = Vec::new();
        index
            .insert_at_level(10_000, SharedVector::from_slice(&paused), 1.0, level, |_| {
                for _ in 0..10 {
                    let label = 20_000 + beside.len() as u64;
                    let vector: Vec<f32> = paused.iter().map(|x| x + 0.02 * (rng.unit() - 0.5)).collect();
                    index.insert_at_level(label, SharedVector::from_slice(&vector), 1.0, 0, |_| {}).expect("capacity");
                    beside.push((label, vector));
                }
            })
            .expect("capacity");
        assert_eq!(beside.len(), 10 * (level + 1));
        for (label, vector) in beside.iter().chain([&(10_000, paused.clone())]) {
            let found = index.search(vector, 1, 32, None);
            assert_eq!(found.first().map(|hit| hit.0), Some(*label), "label {label}");
        }
    }

    /// Two inserters prune different lists that hold the only two links to `x`, each deciding
    /// before the other's new list is written (the interleaving threads allow, since each holds
    /// only its own base's lock). `x` must keep one of the two links.
    #[test]
    fn pruning_two_lists_at_once_keeps_the_last_link_of_a_node() {
        let params = HnswParams { dim: 2, metric: Metric::L2, m: 2, ef_construction: 8 };
        let index = Hnsw::new(params, 16).expect("params");
        // Bases a and b, each with a full level-0 list (2M = 4) holding x; the heuristic drops x
        // from both, as x lies behind a nearer neighbour (near_a, near_b) of each base.
        let points: [(&str, [f32; 2]); 11] = [
            ("a", [0.0, 0.0]),
            ("b", [10.0, 0.0]),
            ("x", [5.0, 0.0]),
            ("near_a", [4.0, 0.5]),
            ("near_b", [6.0, 0.5]),
            ("a_left", [-3.0, 0.0]),
            ("a_up", [0.0, 3.0]),
            ("b_right", [13.0, 0.0]),
            ("b_up", [10.0, 3.0]),
            ("new_a", [0.0, -3.0]),
            ("new_b", [10.0, -3.0]),
        ];
        let id = |name: &str| points.iter().position(|(n, _)| *n == name).expect("named point") as u32;
        for (label, (_, vector)) in points.iter().enumerate() {
            let node = index.allocate_node(label as u64).expect("capacity");
            // SAFETY: single-threaded test; the node is not linked anywhere yet.
            unsafe { index.graph.vectors.write(node, SharedVector::from_slice(&vector[..]), 1.0) };
            index.graph.init_node(node, label as u64, 0);
        }
        let list_a = [id("near_a"), id("x"), id("a_left"), id("a_up")];
        let list_b = [id("near_b"), id("x"), id("b_right"), id("b_up")];
        for (base, list) in [(id("a"), &list_a), (id("b"), &list_b)] {
            let lock = index.graph.lock_links(base);
            index.graph.set_links(&lock, base, 0, list);
        }
        assert_eq!(index.graph.level0_in_degree(id("x")), 2);

        let pool_a: Vec<u32> = list_a.iter().copied().chain([id("new_a")]).collect();
        let pool_b: Vec<u32> = list_b.iter().copied().chain([id("new_b")]).collect();
        let lock_a = index.graph.lock_links(id("a"));
        let kept_a = index.reselect(id("a"), &list_a, &pool_a, 0);
        let lock_b = index.graph.lock_links(id("b"));
        let kept_b = index.reselect(id("b"), &list_b, &pool_b, 0);
        index.graph.set_links(&lock_a, id("a"), 0, &kept_a);
        index.graph.set_links(&lock_b, id("b"), 0, &kept_b);
        drop((lock_a, lock_b));

        assert!(
            !kept_a.contains(&id("x")) || !kept_b.contains(&id("x")),
            "the heuristic drops x from at least one list: {kept_a:?} {kept_b:?}"
        );
        assert!(kept_a.contains(&id("x")) || kept_b.contains(&id("x")), "x lost both incoming links: {kept_a:?} {kept_b:?}");
        for node in 0..points.len() as u32 {
            let actual = [id("a"), id("b")].iter().filter(|&&base| index.graph.links(base, 0).to_vec().contains(&node)).count() as u32;
            assert_eq!(index.graph.level0_in_degree(node), actual, "counter of {}", points[node as usize].0);
        }
    }

    #[test]
    fn duplicate_labels_in_a_batch_keep_the_last_vector() {
        let index = Hnsw::new(HnswParams::new(2, Metric::L2), 8).expect("params");
        let items: Vec<(u64, &[f32])> = vec![(1, &[0.0, 0.0]), (2, &[5.0, 5.0]), (1, &[9.0, 9.0])];
        index.insert_batch(&items).expect("capacity");
        assert_eq!(index.len(), 2);
        assert_eq!(index.deleted_count(), 0, "the first vector of label 1 was never inserted");
        assert_eq!(index.search(&[9.0, 9.0], 1, 8, None), vec![(1, 0.0)]);
    }

    #[test]
    fn batch_larger_than_free_capacity_inserts_nothing() {
        let index = Hnsw::new(HnswParams::new(2, Metric::L2), 2).expect("params");
        let items: Vec<(u64, &[f32])> = vec![(1, &[0.0, 0.0]), (2, &[5.0, 5.0]), (3, &[9.0, 9.0])];
        assert!(index.insert_batch(&items).is_err());
        assert!(index.is_empty());
    }
}
