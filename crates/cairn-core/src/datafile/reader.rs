//! Reading a data file: every record is verified by its own checksum before it is returned,
//! and the footer's count and body checksum must agree when no record is bad. A damaged record
//! is named by its identity only when its identity checksum (version 2) holds; otherwise it is
//! anonymous, never guessed.

use std::path::Path;

use super::format::{
    ident_sum, read_header, DataFileHeader, RecordFormat, DATAFILE_HEADER_LEN, FOOTER_LEN, FOOTER_MAGIC, F_BODY_SUM, F_CHECKSUM, F_COUNT,
    REC_DELETE, REC_UPSERT, R_IDENT_SUM, R_ID_LEN, R_KIND, R_LABEL, R_LEN, R_META_LEN,
};
use crate::checksum::xxh3;
use crate::error::{Error, Result};
use crate::wal::record::{u32_at, u64_at};

pub enum DataRecord<'a> {
    Upsert { id: &'a str, label: u64, vector: Vec<f32>, metadata: &'a str },
    Delete { id: &'a str, label: u64 },
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

pub struct DataFileContents<'a> {
    pub header: DataFileHeader,
    pub records: Vec<DataRecord<'a>>,
    pub bad: Vec<BadRecord>,
}

/// A verified record, borrowed from the file's bytes: the vector is `dim` little-endian f32s.
pub enum RecordRef<'a> {
    Upsert { id: &'a str, label: u64, vector: &'a [u8], metadata: &'a str },
    Delete { id: &'a str, label: u64 },
}

impl<'a> RecordRef<'a> {
    fn decoded(self) -> DataRecord<'a> {
        match self {
            RecordRef::Upsert { id, label, vector, metadata } => {
                let vector = vector.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                DataRecord::Upsert { id, label, vector, metadata }
            }
            RecordRef::Delete { id, label } => DataRecord::Delete { id, label },
        }
    }
}

/// Parse and verify a whole data file. With `tolerate_bad_records`, records failing their
/// checksum are listed in `bad` and the rest are returned; otherwise the first one is an error.
pub fn read_data_file<'a>(buf: &'a [u8], path: &Path, tolerate_bad_records: bool) -> Result<DataFileContents<'a>> {
    let mut records = Vec::new();
    let (header, bad) = visit_data_file(buf, path, tolerate_bad_records, |rec| records.push(rec.decoded()))?;
    Ok(DataFileContents { header, records, bad })
}

/// `read_data_file` without collecting: each record is handed to `visit` as soon as it has
/// verified, in file order, its vector still in the file's bytes (the caller copies it once,
/// into whatever holds it). An error can come after some records were visited: the caller
/// discards what it built from them.
pub fn visit_data_file<'a>(
    buf: &'a [u8],
    path: &Path,
    tolerate_bad_records: bool,
    mut visit: impl FnMut(RecordRef<'a>),
) -> Result<(DataFileHeader, Vec<BadRecord>)> {
    let header = read_header(buf, path)?;
    let fmt = header.record_format();
    let footer = buf.len() - FOOTER_LEN;
    let footer_ok = &buf[footer..footer + 8] == FOOTER_MAGIC && u64_at(buf, footer + F_CHECKSUM) == xxh3(&buf[footer..footer + F_CHECKSUM]);
    if !footer_ok {
        return Err(Error::corruption(path, footer as u64, "data file footer missing or damaged (file truncated or extended?)"));
    }
    let expected_count = u64_at(buf, footer + F_COUNT);
    let mut count = 0u64;
    let mut bad = Vec::new();
    let mut pos = DATAFILE_HEADER_LEN;
    while pos < footer {
        match parse_record(buf, pos, footer, &fmt) {
            Ok((rec, len)) => {
                visit(rec);
                count += 1;
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
    if bad.is_empty() && (count != expected_count || u64_at(buf, footer + F_BODY_SUM) != xxh3(&buf[..footer])) {
        return Err(Error::corruption(path, footer as u64, "data file record count or body checksum does not match its footer"));
    }
    Ok((header, bad))
}

/// Whether each intact record upserts or deletes, and its id, without decoding vectors or
/// metadata: for readers that only count rows (`inspect::live_view`). Damaged records are
/// skipped where their length is usable; the file's own damage is for recovery and scrub.
pub fn record_ids<'a>(buf: &'a [u8], path: &Path) -> Result<Vec<(bool, &'a str)>> {
    let header = read_header(buf, path)?;
    let fmt = header.record_format();
    let footer = buf.len() - FOOTER_LEN;
    let mut out = Vec::new();
    let mut pos = DATAFILE_HEADER_LEN;
    while pos < footer {
        match check_record(buf, pos, footer, &fmt) {
            Ok(len) => {
                let rec = &buf[pos..pos + len];
                let vec_bytes = if rec[R_KIND] == REC_UPSERT { fmt.dim * 4 } else { 0 };
                let id_len = u16::from_le_bytes([rec[R_ID_LEN], rec[R_ID_LEN + 1]]) as usize;
                let start = fmt.fixed + vec_bytes;
                // check_record proved the id in bounds and UTF-8.
                let id =
                    std::str::from_utf8(&rec[start..start + id_len]).map_err(|_| Error::corruption(path, pos as u64, "id is not UTF-8"))?;
                out.push((rec[R_KIND] == REC_UPSERT, id));
                pos += len;
            }
            Err((_, Some(len))) => pos += len,
            Err((_, None)) => break,
        }
    }
    Ok(out)
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

pub(super) fn parse_record<'a>(
    buf: &'a [u8],
    pos: usize,
    end: usize,
    fmt: &RecordFormat,
) -> std::result::Result<(RecordRef<'a>, usize), ParseErr> {
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
        let m = id_start + id_len;
        let metadata = std::str::from_utf8(&rec[m..m + meta_len]).map_err(|_| ("metadata is not UTF-8", Some(len)))?;
        RecordRef::Upsert { id, label, vector: &rec[fixed..fixed + vec_bytes], metadata }
    } else {
        RecordRef::Delete { id, label }
    };
    Ok((record, len))
}
