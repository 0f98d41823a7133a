//! Content digests of a collection's rows: what a recovery drill compares a recovered store
//! against. A digest covers the vector and the metadata, not the label, so a row rewritten by
//! a restore or a rebuild from the same write digests the same.

use super::Engine;
use crate::error::{Error, Result};
use crate::sync::read;

/// (id, xxh3 of vector bytes then metadata), sorted by id.
pub type RowDigests = Vec<(String, u64)>;

/// xxh3 of the vector's little-endian bytes, chained into the metadata through the seed.
pub fn row_digest(vector: &[f32], metadata: &str) -> u64 {
    use xxhash_rust::xxh3::xxh3_64_with_seed;
    let mut bytes = Vec::with_capacity(std::mem::size_of_val(vector));
    for v in vector {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    xxh3_64_with_seed(metadata.as_bytes(), xxh3_64_with_seed(&bytes, 0))
}

impl Engine {
    /// Every row of `collection` with its digest. A record known to be damaged, or an in-memory
    /// copy failing its checksum, is CAIRN_CORRUPTION naming it: a digest is never taken of
    /// bytes that are not the ones written.
    pub fn row_digests(&self, collection: &str) -> Result<RowDigests> {
        self.check_open()?;
        let st = read(&self.shared.state);
        let c = st.collection(collection)?;
        if let Some((id, u)) = c.unreadable.iter().next() {
            return Err(Error::corruption(
                self.shared.dir.join(&u.file),
                u.offset,
                format!("record '{id}' of collection '{collection}' is damaged ({})", u.reason),
            ));
        }
        let mut out = Vec::with_capacity(c.rows.len());
        for (id, r) in c.rows.iter() {
            if !r.verify(id) {
                return Err(Error::corruption(
                    &self.shared.dir,
                    0,
                    format!("in-memory copy of record '{id}' of collection '{collection}' fails its checksum"),
                ));
            }
            out.push((id.to_string(), row_digest(&r.vector, &r.metadata)));
        }
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}
