//! The hasher of the in-memory maps keyed by record id or label, which the commit thread
//! updates for every written row: xxh3 with a per-process random seed. It is about twice as fast
//! as std's SipHash on short ids; the random seed keeps colliding ids hard to construct.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::OnceLock;

use xxhash_rust::xxh3::xxh3_64_with_seed;

pub type IdMap<K, V> = hashbrown::HashMap<K, V, KeyedHash>;
pub type IdSet<K> = hashbrown::HashSet<K, KeyedHash>;

#[derive(Clone, Copy, Debug)]
pub struct KeyedHash {
    seed: u64,
}

impl Default for KeyedHash {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        // RandomState is seeded from the OS; one of its hashes is a random u64.
        KeyedHash { seed: *SEED.get_or_init(|| RandomState::new().hash_one(0x63_6169_726e_u64)) }
    }
}

impl BuildHasher for KeyedHash {
    type Hasher = KeyedHasher;
    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher { state: self.seed }
    }
}

pub struct KeyedHasher {
    state: u64,
}

/// Folded 64x64->128 multiply: a cheap, well-mixing step for integer input.
#[inline]
fn fold_mul(x: u64) -> u64 {
    let full = u128::from(x) * 0x9E37_79B9_7F4A_7C15_u128;
    (full as u64) ^ ((full >> 64) as u64)
}

impl Hasher for KeyedHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.state = xxh3_64_with_seed(bytes, self.state);
    }
    #[inline]
    fn write_u8(&mut self, x: u8) {
        self.state = fold_mul(self.state ^ u64::from(x));
    }
    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.state = fold_mul(self.state ^ x);
    }
    #[inline]
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        fold_mul(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn equal_keys_hash_equal_and_distinct_keys_spread() {
        let h = KeyedHash::default();
        assert_eq!(h.hash_one("doc-1"), KeyedHash::default().hash_one("doc-1"));
        let hashes: HashSet<u64> = (0..10_000).map(|i| h.hash_one(format!("doc-{i}"))).collect();
        assert_eq!(hashes.len(), 10_000);
        // 10,000 labels into 2^16 buckets by their top bits: about 9,270 distinct if uniform.
        let labels: HashSet<u64> = (0..10_000u64).map(|l| h.hash_one(l << 24) >> 48).collect();
        assert!(labels.len() > 9_000, "top bits of label hashes cluster: {}", labels.len());
        // Prefix-free framing of str keys: ("ab", "c") and ("a", "bc") differ.
        assert_ne!(h.hash_one(("ab", "c")), h.hash_one(("a", "bc")));
    }
}
