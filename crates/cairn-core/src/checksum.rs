//! xxh3-64 is the checksum of every on-disk structure (WAL records, segment records, manifest, index).

pub mod blocks;

/// The same digest as `xxhash_rust::xxh3::xxh3_64`; long inputs run the AVX2 loop of `blocks`
/// when the CPU has it.
pub fn xxh3(bytes: &[u8]) -> u64 {
    blocks::xxh3_64(bytes)
}

/// Streaming form for scans that must not hold a whole file in memory. Cloning the state
/// gives the digest of a prefix while the stream goes on.
#[derive(Clone)]
pub struct Xxh3Stream(xxhash_rust::xxh3::Xxh3);

impl Default for Xxh3Stream {
    fn default() -> Self {
        Xxh3Stream(xxhash_rust::xxh3::Xxh3::new())
    }
}

impl Xxh3Stream {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes)
    }
    pub fn digest(&self) -> u64 {
        self.0.digest()
    }
}
