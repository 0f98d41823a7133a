//! Checkpoint data files (docs/format.md, "Segment file"): immutable, one per collection per
//! checkpoint. A base file holds every row; a delta file holds the rows written and the ids
//! deleted since the previous checkpoint. Every record carries its own xxh3, so one bad
//! vector is detected and named without distrusting the rest. Version 2 adds a checksum of
//! each record's identity (framing, label, id), so a record whose vector or metadata is damaged
//! is still known by id: it can be repaired from the WAL or reported unreadable, never guessed.

use std::path::Path;

use crate::checksum::xxh3;
use crate::distance::Metric;
use crate::error::{Error, Result};
use crate::wal::record::{align8, u32_at, u64_at};

pub const SEG_MAGIC: &[u8; 8] = b"CAIRNSEG";
/// Version written; version 1 (no identity checksum) is still read.
pub const SEG_VERSION: u32 = 2;
const SEG_VERSION_V1: u32 = 1;
pub const SEG_HEADER_LEN: usize = 64;
const H_VERSION: usize = 8;
const H_DIM: usize = 12;
const H_COLLECTION: usize = 16;
const H_COVERED_SEQ: usize = 24;
const H_METRIC: usize = 32;
const H_KIND: usize = 33;
const H_CHECKSUM: usize = 56;

pub const FOOTER_MAGIC: &[u8; 8] = b"CAIRNEND";
pub const FOOTER_LEN: usize = 32;
const F_COUNT: usize = 8;
const F_BODY_SUM: usize = 16;
const F_CHECKSUM: usize = 24;

const R_LEN: usize = 0;
const R_KIND: usize = 4;
/// The row's label: `seq << 24 | op index` of the write that produced it (see index.rs).
const R_LABEL: usize = 8;
const R_ID_LEN: usize = 16;
const R_META_LEN: usize = 20;
/// Version 2: xxh3 of bytes 0..24 followed by the id bytes.
const R_IDENT_SUM: usize = 24;
const R_FIXED_V1: usize = 24;
const R_FIXED_V2: usize = 32;
/// The smallest fixed part of any version: a length below this plus the checksum is implausible.
pub const R_FIXED: usize = R_FIXED_V1;

pub const KIND_BASE: u8 = 0;
pub const KIND_DELTA: u8 = 1;
pub const REC_UPSERT: u8 = 1;
pub const REC_DELETE: u8 = 2;

pub struct SegmentHeader {
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
    fixed: usize,
    /// Whether records carry an identity checksum (version 2).
    ident: bool,
}

impl SegmentHeader {
    pub fn record_format(&self) -> RecordFormat {
        let v2 = self.version >= SEG_VERSION;
        RecordFormat { dim: self.dim as usize, fixed: if v2 { R_FIXED_V2 } else { R_FIXED_V1 }, ident: v2 }
    }
}

pub enum SegmentRecord<'a> {
    Upsert { id: &'a str, label: u64, vector: Vec<f32>, metadata: &'a str },
    Delete { id: &'a str, label: u64 },
}

pub struct SegmentWriter {
    buf: Vec<u8>,
    format: RecordFormat,
    count: u64,
}

impl SegmentWriter {
    pub fn new(h: &SegmentHeader) -> SegmentWriter {
        let mut buf = vec![0u8; SEG_HEADER_LEN];
        buf[..8].copy_from_slice(SEG_MAGIC);
        buf[H_VERSION..H_VERSION + 4].copy_from_slice(&h.version.to_le_bytes());
        buf[H_DIM..H_DIM + 4].copy_from_slice(&h.dim.to_le_bytes());
        buf[H_COLLECTION..H_COLLECTION + 8].copy_from_slice(&h.collection_id.to_le_bytes());
        buf[H_COVERED_SEQ..H_COVERED_SEQ + 8].copy_from_slice(&h.covered_seq.to_le_bytes());
        buf[H_METRIC] = h.metric.code();
        buf[H_KIND] = h.kind;
        let sum = xxh3(&buf[..H_CHECKSUM]);
        buf[H_CHECKSUM..SEG_HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
        SegmentWriter { buf, format: h.record_format(), count: 0 }
    }

    pub fn upsert(&mut self, id: &str, label: u64, vector: &[f32], metadata: &str) {
        self.record(REC_UPSERT, id, label, Some(vector), metadata);
    }

    pub fn delete(&mut self, id: &str, label: u64) {
        self.record(REC_DELETE, id, label, None, "");
    }

    fn record(&mut self, kind: u8, id: &str, label: u64, vector: Option<&[f32]>, metadata: &str) {
        let start = self.buf.len();
        let fixed = self.format.fixed;
        let vec_bytes = vector.map_or(0, |v| v.len() * 4);
        let body = fixed + vec_bytes + id.len() + metadata.len();
        let total = align8(body) + 8;
        self.buf.extend_from_slice(&(total as u32).to_le_bytes());
        self.buf.push(kind);
        self.buf.extend_from_slice(&[0u8; 3]);
        self.buf.extend_from_slice(&label.to_le_bytes());
        self.buf.extend_from_slice(&(id.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(&[0u8; 2]);
        self.buf.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
        if self.format.ident {
            let sum = ident_sum(&self.buf[start..start + R_IDENT_SUM], id.as_bytes());
            self.buf.extend_from_slice(&sum.to_le_bytes());
        }
        if let Some(v) = vector {
            for x in v {
                self.buf.extend_from_slice(&x.to_le_bytes());
            }
        }
        self.buf.extend_from_slice(id.as_bytes());
        self.buf.extend_from_slice(metadata.as_bytes());
        self.buf.resize(start + align8(body), 0);
        let sum = xxh3(&self.buf[start..]);
        self.buf.extend_from_slice(&sum.to_le_bytes());
        self.count += 1;
        debug_assert_eq!(self.buf.len() - start, total);
    }

    pub fn finish(mut self) -> (Vec<u8>, u64) {
        let body_sum = xxh3(&self.buf);
        let start = self.buf.len();
        self.buf.extend_from_slice(FOOTER_MAGIC);
        self.buf.extend_from_slice(&self.count.to_le_bytes());
        self.buf.extend_from_slice(&body_sum.to_le_bytes());
        let sum = xxh3(&self.buf[start..]);
        self.buf.extend_from_slice(&sum.to_le_bytes());
        (self.buf, self.count)
    }
}

/// A record that failed its checksum: where, why, and who it is when its identity checksum
/// (version 2) still holds.
#[derive(Debug, Clone)]
pub struct BadRecord {
    pub offset: u64,
    pub reason: String,
    pub identity: Option<RecordIdentity>,
}

/// The verified identity of a damaged record: its vector or metadata may be wrong, these are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordIdentity {
    pub kind: u8,
    pub label: u64,
    pub id: String,
}

fn ident_sum(fixed_fields: &[u8], id: &[u8]) -> u64 {
    let mut h = crate::checksum::Xxh3Stream::default();
    h.update(fixed_fields);
    h.update(id);
    h.digest()
}

pub struct SegmentContents<'a> {
    pub header: SegmentHeader,
    pub records: Vec<SegmentRecord<'a>>,
    pub bad: Vec<BadRecord>,
}

pub fn read_header(buf: &[u8], path: &Path) -> Result<SegmentHeader> {
    if buf.len() < SEG_HEADER_LEN + FOOTER_LEN {
        return Err(Error::corruption(path, 0, "segment file shorter than header and footer"));
    }
    if &buf[..8] != SEG_MAGIC {
        return Err(Error::corruption(path, 0, "bad segment magic"));
    }
    if u64_at(buf, H_CHECKSUM) != xxh3(&buf[..H_CHECKSUM]) {
        return Err(Error::corruption(path, 0, "segment header checksum mismatch"));
    }
    let version = u32_at(buf, H_VERSION);
    if version != SEG_VERSION && version != SEG_VERSION_V1 {
        return Err(Error::corruption(path, H_VERSION as u64, format!("unsupported segment version {version}")));
    }
    let metric = Metric::from_code(buf[H_METRIC]).ok_or_else(|| Error::corruption(path, H_METRIC as u64, "unknown metric"))?;
    Ok(SegmentHeader {
        version,
        dim: u32_at(buf, H_DIM),
        collection_id: u64_at(buf, H_COLLECTION),
        covered_seq: u64_at(buf, H_COVERED_SEQ),
        metric,
        kind: buf[H_KIND],
    })
}

/// Parse and verify a whole segment file. With `tolerate_bad_records`, records failing their
/// checksum are listed in `bad` and the rest are returned; otherwise the first one is an error.
pub fn read_segment<'a>(buf: &'a [u8], path: &Path, tolerate_bad_records: bool) -> Result<SegmentContents<'a>> {
    let header = read_header(buf, path)?;
    let fmt = header.record_format();
    let footer = buf.len() - FOOTER_LEN;
    let footer_ok = &buf[footer..footer + 8] == FOOTER_MAGIC && u64_at(buf, footer + F_CHECKSUM) == xxh3(&buf[footer..footer + F_CHECKSUM]);
    if !footer_ok {
        return Err(Error::corruption(path, footer as u64, "segment footer missing or damaged (file truncated or extended?)"));
    }
    let expected_count = u64_at(buf, footer + F_COUNT);
    let mut records = Vec::new();
    let mut bad = Vec::new();
    let mut pos = SEG_HEADER_LEN;
    while pos < footer {
        match parse_record(buf, pos, footer, &fmt) {
            Ok((rec, len)) => {
                records.push(rec);
                pos += len;
            }
            Err((reason, len)) => {
                if !tolerate_bad_records {
                    return Err(Error::corruption(path, pos as u64, reason));
                }
                let identity = record_identity(buf, pos, footer, &fmt);
                bad.push(BadRecord { offset: pos as u64, reason: reason.to_string(), identity: identity.clone() });
                match (identity, fmt.ident, len) {
                    // The identity checksum covers the length: the next record starts there.
                    (Some(_), _, Some(l)) => pos += l,
                    // Version 2: resynchronise at the next offset whose identity checksum holds
                    // (a false match is a 2^-64 event), so one bad record costs only itself.
                    (None, true, _) => match resync(buf, pos + 8, footer, &fmt) {
                        Some(next) => pos = next,
                        None => break,
                    },
                    (_, false, Some(l)) => pos += l,
                    // The length field itself is unusable: the rest of the file cannot be framed.
                    (_, _, None) => break,
                }
            }
        }
    }
    if bad.is_empty() && (records.len() as u64 != expected_count || u64_at(buf, footer + F_BODY_SUM) != xxh3(&buf[..footer])) {
        return Err(Error::corruption(path, footer as u64, "segment record count or body checksum does not match its footer"));
    }
    Ok(SegmentContents { header, records, bad })
}

/// First 8-aligned offset at or after `from` where a record with a valid identity checksum starts.
fn resync(buf: &[u8], from: usize, end: usize, fmt: &RecordFormat) -> Option<usize> {
    (from..end).step_by(8).find(|&p| record_identity(buf, p, end, fmt).is_some())
}

/// The identity of the record at `pos` when its identity checksum holds (version 2 only).
pub fn record_identity(buf: &[u8], pos: usize, end: usize, fmt: &RecordFormat) -> Option<RecordIdentity> {
    if !fmt.ident || pos + fmt.fixed + 8 > end {
        return None;
    }
    let len = u32_at(buf, pos + R_LEN) as usize;
    if len < fmt.fixed + 8 || !len.is_multiple_of(8) || pos + len > end {
        return None;
    }
    let rec = &buf[pos..pos + len];
    let kind = rec[R_KIND];
    let vec_bytes = match kind {
        REC_UPSERT => fmt.dim * 4,
        REC_DELETE => 0,
        _ => return None,
    };
    let id_len = u16::from_le_bytes([rec[R_ID_LEN], rec[R_ID_LEN + 1]]) as usize;
    let meta_len = u32_at(rec, R_META_LEN) as usize;
    let id_start = fmt.fixed + vec_bytes;
    if id_start + id_len + meta_len > len - 8 {
        return None;
    }
    let id = &rec[id_start..id_start + id_len];
    if u64_at(rec, R_IDENT_SUM) != ident_sum(&rec[..R_IDENT_SUM], id) {
        return None;
    }
    let id = std::str::from_utf8(id).ok()?;
    Some(RecordIdentity { kind, label: u64_at(rec, R_LABEL), id: id.to_string() })
}

type ParseErr = (&'static str, Option<usize>);

/// Check the 64-byte header on its own (scrub reads files in chunks): the dimension it declares.
pub fn check_header(h: &[u8]) -> std::result::Result<SegmentHeader, &'static str> {
    if h.len() < SEG_HEADER_LEN {
        return Err("segment file shorter than its header");
    }
    if &h[..8] != SEG_MAGIC {
        return Err("bad segment magic");
    }
    if u64_at(h, H_CHECKSUM) != xxh3(&h[..H_CHECKSUM]) {
        return Err("segment header checksum mismatch");
    }
    let version = u32_at(h, H_VERSION);
    if version != SEG_VERSION && version != SEG_VERSION_V1 {
        return Err("unsupported segment version");
    }
    let metric = Metric::from_code(h[H_METRIC]).ok_or("unknown metric")?;
    Ok(SegmentHeader {
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

/// Verify the record at `pos` exactly as loading would, without decoding its vector: its
/// length, or why it is bad and, when its length field is usable, how far to skip.
pub fn check_record(buf: &[u8], pos: usize, end: usize, fmt: &RecordFormat) -> std::result::Result<usize, ParseErr> {
    let (dim, fixed) = (fmt.dim, fmt.fixed);
    if pos + fixed + 8 > end {
        return Err(("record header past end of data", None));
    }
    let len = u32_at(buf, pos + R_LEN) as usize;
    if len < fixed + 8 || !len.is_multiple_of(8) || pos + len > end {
        return Err(("implausible record length", None));
    }
    let rec = &buf[pos..pos + len];
    if u64_at(rec, len - 8) != xxh3(&rec[..len - 8]) {
        return Err(("record checksum mismatch", Some(len)));
    }
    let vec_bytes = match rec[R_KIND] {
        REC_UPSERT => dim * 4,
        REC_DELETE => 0,
        _ => return Err(("unknown record kind", Some(len))),
    };
    let id_len = u16::from_le_bytes([rec[R_ID_LEN], rec[R_ID_LEN + 1]]) as usize;
    let meta_len = u32_at(rec, R_META_LEN) as usize;
    if fixed + vec_bytes + id_len + meta_len > len - 8 {
        return Err(("record fields overrun its length", Some(len)));
    }
    let id_start = fixed + vec_bytes;
    if std::str::from_utf8(&rec[id_start..id_start + id_len + meta_len]).is_err() {
        return Err(("id or metadata is not UTF-8", Some(len)));
    }
    Ok(len)
}

/// The id a (possibly damaged) record names, if its id field still reads as a plausible id.
/// A hint for reports: the damage may be in the id itself.
pub fn record_id_hint(rec: &[u8], fmt: &RecordFormat) -> Option<String> {
    if rec.len() < fmt.fixed {
        return None;
    }
    let vec_bytes = if rec[R_KIND] == REC_UPSERT { fmt.dim * 4 } else { 0 };
    let id_len = u16::from_le_bytes([rec[R_ID_LEN], rec[R_ID_LEN + 1]]) as usize;
    let start = fmt.fixed + vec_bytes;
    let id = std::str::from_utf8(rec.get(start..start + id_len)?).ok()?;
    let plausible = (1..=256).contains(&id_len) && !id.contains(['/', '\\', '\0']) && id != "." && id != "..";
    plausible.then(|| id.to_string())
}

fn parse_record<'a>(buf: &'a [u8], pos: usize, end: usize, fmt: &RecordFormat) -> std::result::Result<(SegmentRecord<'a>, usize), ParseErr> {
    // One set of framing checks for loading and scrubbing.
    let len = check_record(buf, pos, end, fmt)?;
    let (dim, fixed) = (fmt.dim, fmt.fixed);
    let rec = &buf[pos..pos + len];
    let kind = rec[R_KIND];
    let label = u64_at(rec, R_LABEL);
    let id_len = u16::from_le_bytes([rec[R_ID_LEN], rec[R_ID_LEN + 1]]) as usize;
    let meta_len = u32_at(rec, R_META_LEN) as usize;
    let vec_bytes = if kind == REC_UPSERT { dim * 4 } else { 0 };
    let id_start = fixed + vec_bytes;
    let id = std::str::from_utf8(&rec[id_start..id_start + id_len]).map_err(|_| ("id is not UTF-8", Some(len)))?;
    let record = if kind == REC_UPSERT {
        let vector = rec[fixed..fixed + vec_bytes]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let m = id_start + id_len;
        let metadata = std::str::from_utf8(&rec[m..m + meta_len]).map_err(|_| ("metadata is not UTF-8", Some(len)))?;
        SegmentRecord::Upsert { id, label, vector, metadata }
    } else {
        SegmentRecord::Delete { id, label }
    };
    Ok((record, len))
}

/// `data/<collection id>-<covered seq>.seg`


#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        sample_v(SEG_VERSION)
    }

    fn sample_v(version: u32) -> Vec<u8> {
        let mut w = SegmentWriter::new(&SegmentHeader { version, dim: 3, collection_id: 1, covered_seq: 9, metric: Metric::L2, kind: KIND_BASE });
        w.upsert("a", 2, &[1.0, 2.0, 3.0], "{\"t\":1}");
        w.delete("b", 5);
        w.upsert("c", 7, &[0.5, 0.0, -1.0], "null");
        w.finish().0
    }

    #[test]
    fn segment_round_trips() {
        let buf = sample();
        let c = read_segment(&buf, Path::new("x.seg"), false).expect("valid segment");
        assert_eq!(c.records.len(), 3);
        assert_eq!(c.header.covered_seq, 9);
        match &c.records[2] {
            SegmentRecord::Upsert { id, vector, .. } => {
                assert_eq!(*id, "c");
                assert_eq!(vector, &vec![0.5, 0.0, -1.0]);
            }
            _ => panic!("expected upsert"),
        }
    }

    #[test]
    fn any_bit_flip_is_detected_and_located() {
        let buf = sample();
        for byte in 0..buf.len() {
            let mut b = buf.clone();
            b[byte] ^= 0x01;
            assert!(read_segment(&b, Path::new("x.seg"), false).is_err(), "flip at {byte} undetected");
        }
    }

    #[test]
    fn a_bad_record_is_skipped_when_tolerated() {
        let mut buf = sample();
        buf[SEG_HEADER_LEN + R_FIXED + 1] ^= 0xff; // inside record "a"'s vector
        let c = read_segment(&buf, Path::new("x.seg"), true).expect("tolerated");
        assert_eq!(c.records.len(), 2);
        assert_eq!(c.bad.len(), 1);
        assert_eq!(c.bad[0].offset, SEG_HEADER_LEN as u64);
    }

    #[test]
    fn version_1_files_are_still_read_and_checked() {
        let buf = sample_v(SEG_VERSION_V1);
        let c = read_segment(&buf, Path::new("x.seg"), false).expect("valid v1 segment");
        assert_eq!((c.header.version, c.records.len()), (SEG_VERSION_V1, 3));
        for byte in 0..buf.len() {
            let mut b = buf.clone();
            b[byte] ^= 0x10;
            assert!(read_segment(&b, Path::new("x.seg"), false).is_err(), "flip at {byte} undetected");
        }
    }

    /// Whatever single byte is damaged inside the records, a tolerant read keeps every other
    /// record, and the damaged one's identity is either right or unknown, never wrong.
    #[test]
    fn damage_never_yields_a_wrong_identity_and_costs_one_record() {
        let buf = sample();
        let good = read_segment(&buf, Path::new("x.seg"), false).expect("valid");
        let ids: Vec<(u8, u64, String)> = good
            .records
            .iter()
            .map(|r| match r {
                SegmentRecord::Upsert { id, label, .. } => (REC_UPSERT, *label, id.to_string()),
                SegmentRecord::Delete { id, label } => (REC_DELETE, *label, id.to_string()),
            })
            .collect();
        // Vector bytes of each upsert: damage there must leave the identity known.
        let mut vectors = Vec::new();
        let mut pos = SEG_HEADER_LEN;
        while pos < buf.len() - FOOTER_LEN {
            if buf[pos + R_KIND] == REC_UPSERT {
                vectors.push(pos + R_FIXED_V2..pos + R_FIXED_V2 + 12);
            }
            pos += u32_at(&buf, pos) as usize;
        }
        let (mut known, mut unknown) = (0, 0);
        for byte in SEG_HEADER_LEN..buf.len() - FOOTER_LEN {
            for bit in [0u8, 5] {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                let c = read_segment(&b, Path::new("x.seg"), true).expect("tolerated");
                assert_eq!(c.bad.len(), 1, "flip at {byte}: one bad record");
                assert_eq!(c.records.len(), 2, "flip at {byte}: the other records survive");
                match &c.bad[0].identity {
                    Some(who) => {
                        known += 1;
                        assert!(ids.contains(&(who.kind, who.label, who.id.clone())), "flip at {byte}: wrong identity {who:?}");
                        let kept: Vec<&str> = c.records.iter().map(|r| match r {
                            SegmentRecord::Upsert { id, .. } | SegmentRecord::Delete { id, .. } => *id,
                        }).collect();
                        assert!(!kept.contains(&who.id.as_str()), "flip at {byte}: damaged record also returned");
                    }
                    None => {
                        unknown += 1;
                        assert!(!vectors.iter().any(|v| v.contains(&byte)), "flip at {byte} in a vector lost the identity");
                    }
                }
            }
        }
        assert!(known > 0 && unknown > 0, "both outcomes exercised: {known} known, {unknown} unknown");
    }
}
