//! The byte layout of a data file: header (magic, version, collection, covered sequence
//! number, metric, kind; its own xxh3), records, footer (record count, xxh3 of everything before
//! it; its own xxh3). Offsets are named here and nowhere else. The header and footer can be
//! checked alone, so scrub verifies a file in chunks without holding it whole.

use std::path::Path;

use crate::checksum::xxh3;
use crate::distance::Metric;
use crate::error::{Error, Result};
use crate::wal::record::{u32_at, u64_at};

pub const DATAFILE_MAGIC: &[u8; 8] = b"CAIRNSEG";
/// Version written; version 1 (no identity checksum) is still read.
pub const DATAFILE_VERSION: u32 = 2;
pub(super) const DATAFILE_VERSION_V1: u32 = 1;
pub const DATAFILE_HEADER_LEN: usize = 64;
pub(super) const H_VERSION: usize = 8;
pub(super) const H_DIM: usize = 12;
pub(super) const H_COLLECTION: usize = 16;
pub(super) const H_COVERED_SEQ: usize = 24;
pub(super) const H_METRIC: usize = 32;
pub(super) const H_KIND: usize = 33;
pub(super) const H_CHECKSUM: usize = 56;

pub const FOOTER_MAGIC: &[u8; 8] = b"CAIRNEND";
pub const FOOTER_LEN: usize = 32;
pub(super) const F_COUNT: usize = 8;
pub(super) const F_BODY_SUM: usize = 16;
pub(super) const F_CHECKSUM: usize = 24;

pub(super) const R_LEN: usize = 0;
pub(super) const R_KIND: usize = 4;
/// The row's label: `seq << 24 | op index` of the write that produced it (see index.rs).
pub(super) const R_LABEL: usize = 8;
pub(super) const R_ID_LEN: usize = 16;
pub(super) const R_META_LEN: usize = 20;
/// Version 2: xxh3 of bytes 0..24 followed by the id bytes.
pub(super) const R_IDENT_SUM: usize = 24;
pub(super) const R_FIXED_V1: usize = 24;
pub(super) const R_FIXED_V2: usize = 32;
/// The smallest fixed part of any version: a length below this plus the checksum is implausible.
pub const R_FIXED: usize = R_FIXED_V1;

pub const KIND_BASE: u8 = 0;
pub const KIND_DELTA: u8 = 1;
pub const REC_UPSERT: u8 = 1;
pub const REC_DELETE: u8 = 2;

pub struct DataFileHeader {
    pub version: u32,
    pub dim: u32,
    pub collection_id: u64,
    pub covered_seq: u64,
    pub metric: Metric,
    pub kind: u8,
}

/// How the records of one file are laid out, from its (verified) header.
#[derive(Clone, Copy, Debug)]
pub struct RecordFormat {
    pub dim: usize,
    /// Bytes before the vector.
    pub(super) fixed: usize,
    /// Whether records carry an identity checksum (version 2).
    pub(super) ident: bool,
}

impl RecordFormat {
    /// Bytes of a record with an `id_len`-byte id, `meta_len` bytes of metadata and, for an
    /// upsert, the vector.
    pub fn record_len(&self, upsert: bool, id_len: usize, meta_len: usize) -> usize {
        crate::wal::record::align8(self.fixed + if upsert { self.dim * 4 } else { 0 } + id_len + meta_len) + 8
    }
}

/// Bytes of a whole data file whose records take `records` bytes together.
pub fn file_len(records: usize) -> usize {
    DATAFILE_HEADER_LEN + records + FOOTER_LEN
}

impl DataFileHeader {
    pub fn record_format(&self) -> RecordFormat {
        let v2 = self.version >= DATAFILE_VERSION;
        RecordFormat { dim: self.dim as usize, fixed: if v2 { R_FIXED_V2 } else { R_FIXED_V1 }, ident: v2 }
    }
}

/// Version 2's identity checksum: xxh3 of a record's fixed fields before it, then its id.
pub(super) fn ident_sum(fixed_fields: &[u8], id: &[u8]) -> u64 {
    let mut h = crate::checksum::Xxh3Stream::default();
    h.update(fixed_fields);
    h.update(id);
    h.digest()
}

pub fn read_header(buf: &[u8], path: &Path) -> Result<DataFileHeader> {
    if buf.len() < DATAFILE_HEADER_LEN + FOOTER_LEN {
        return Err(Error::corruption(path, 0, "data file shorter than header and footer"));
    }
    if &buf[..8] != DATAFILE_MAGIC {
        return Err(Error::corruption(path, 0, "bad data file magic"));
    }
    if u64_at(buf, H_CHECKSUM) != xxh3(&buf[..H_CHECKSUM]) {
        return Err(Error::corruption(path, 0, "data file header checksum mismatch"));
    }
    let version = u32_at(buf, H_VERSION);
    if version != DATAFILE_VERSION && version != DATAFILE_VERSION_V1 {
        return Err(Error::corruption(path, H_VERSION as u64, format!("unsupported data file version {version}")));
    }
    let metric = Metric::from_code(buf[H_METRIC]).ok_or_else(|| Error::corruption(path, H_METRIC as u64, "unknown metric"))?;
    Ok(DataFileHeader {
        version,
        dim: u32_at(buf, H_DIM),
        collection_id: u64_at(buf, H_COLLECTION),
        covered_seq: u64_at(buf, H_COVERED_SEQ),
        metric,
        kind: buf[H_KIND],
    })
}

/// Check the 64-byte header on its own (scrub reads files in chunks): the dimension it declares.
pub fn check_header(h: &[u8]) -> std::result::Result<DataFileHeader, &'static str> {
    if h.len() < DATAFILE_HEADER_LEN {
        return Err("data file shorter than its header");
    }
    if &h[..8] != DATAFILE_MAGIC {
        return Err("bad data file magic");
    }
    if u64_at(h, H_CHECKSUM) != xxh3(&h[..H_CHECKSUM]) {
        return Err("data file header checksum mismatch");
    }
    let version = u32_at(h, H_VERSION);
    if version != DATAFILE_VERSION && version != DATAFILE_VERSION_V1 {
        return Err("unsupported data file version");
    }
    let metric = Metric::from_code(h[H_METRIC]).ok_or("unknown metric")?;
    Ok(DataFileHeader {
        version,
        dim: u32_at(h, H_DIM),
        collection_id: u64_at(h, H_COLLECTION),
        covered_seq: u64_at(h, H_COVERED_SEQ),
        metric,
        kind: h[H_KIND],
    })
}

/// The footer's record count and body checksum, when its magic and own checksum are intact.
pub fn check_footer(f: &[u8]) -> Option<(u64, u64)> {
    if f.len() != FOOTER_LEN || &f[..8] != FOOTER_MAGIC || u64_at(f, F_CHECKSUM) != xxh3(&f[..F_CHECKSUM]) {
        return None;
    }
    Some((u64_at(f, F_COUNT), u64_at(f, F_BODY_SUM)))
}
