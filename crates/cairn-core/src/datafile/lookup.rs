//! Find ids in a data file without reading it whole: records are written in id order (bytewise,
//! docs/format.md "Data file"), and in version 2 each record's identity checksum marks where a
//! record starts, so a binary search reads a few small windows per id.
//!
//! Invariant: an id is reported as found only from a record whose identity checksum holds (a
//! false match is a 2^-64 event, as for loading's resynchronisation); a version 1 file, which has
//! no identity checksum, is refused with `Ok(None)` so the caller reads it whole.

use std::cmp::Ordering;
use std::path::Path;

use super::format::{
    ident_sum, read_header, RecordFormat, DATAFILE_HEADER_LEN, FOOTER_LEN, REC_DELETE, REC_UPSERT, R_IDENT_SUM, R_ID_LEN, R_KIND, R_LABEL,
    R_LEN, R_META_LEN,
};
use super::reader::RecordIdentity;
use crate::error::{Error, Result};
use crate::storage::StorageFile;
use crate::wal::record::{u32_at, u64_at};

/// Bytes read at a time while looking for a record start.
const WINDOW: usize = 4 << 10;

/// An open data file searched by id.
pub struct IdLookup<'a> {
    file: &'a dyn StorageFile,
    path: &'a Path,
    fmt: RecordFormat,
    /// Where the footer starts: records lie in `DATAFILE_HEADER_LEN..end`.
    end: usize,
}

impl<'a> IdLookup<'a> {
    /// `None` for a version 1 file (no identity checksums to search by).
    pub fn new(file: &'a dyn StorageFile, path: &'a Path) -> Result<Option<IdLookup<'a>>> {
        let len = file.len().map_err(|e| Error::io(path, e))? as usize;
        let mut head = vec![0u8; (DATAFILE_HEADER_LEN + FOOTER_LEN).min(len)];
        file.read_at(0, &mut head).map_err(|e| Error::io(path, e))?;
        let fmt = read_header(&head, path)?.record_format();
        if !fmt.ident {
            return Ok(None);
        }
        Ok(Some(IdLookup { file, path, fmt, end: len - FOOTER_LEN }))
    }

    /// Bytes the records take (what a whole read would cost).
    pub fn records_len(&self) -> usize {
        self.end - DATAFILE_HEADER_LEN
    }

    /// `Some(true)` when the file upserts `id`, `Some(false)` when it deletes it, `None` when
    /// it does not name it.
    pub fn find(&self, id: &str) -> Result<Option<bool>> {
        let (mut lo, mut hi) = (DATAFILE_HEADER_LEN, self.end);
        // Each round moves `lo` past a record or halves `hi - lo`.
        while lo < hi {
            let mid = lo + ((hi - lo) / 2) / 8 * 8;
            match self.first_record_from(mid, hi)? {
                Some((at, len, ident)) => match ident.id.as_str().cmp(id) {
                    Ordering::Equal => return Ok(Some(ident.kind == REC_UPSERT)),
                    Ordering::Less => lo = at + len,
                    Ordering::Greater => hi = mid,
                },
                None => hi = mid,
            }
        }
        Ok(None)
    }

    /// The first record starting in `from..before` (offsets 8-aligned), with its length: every
    /// 8-aligned offset is tried in turn, window by window.
    fn first_record_from(&self, from: usize, before: usize) -> Result<Option<(usize, usize, RecordIdentity)>> {
        let mut at = from;
        while at < before {
            let to = (at + WINDOW).min(self.end);
            let mut buf = vec![0u8; to - at];
            self.read(at, &mut buf)?;
            for p in (0..buf.len()).step_by(8) {
                if at + p >= before {
                    return Ok(None);
                }
                if let Some((len, ident)) = self.identity_at(&buf, at, p)? {
                    return Ok(Some((at + p, len, ident)));
                }
            }
            at = to;
        }
        Ok(None)
    }

    /// The record starting at `base + p` when its identity checksum holds, with its length.
    /// `buf` holds the file from `base`; what lies past it (a long vector) is read as needed.
    fn identity_at(&self, buf: &[u8], base: usize, p: usize) -> Result<Option<(usize, RecordIdentity)>> {
        let fmt = &self.fmt;
        let abs = base + p;
        if abs + fmt.fixed + 8 > self.end {
            return Ok(None);
        }
        let fixed = self.bytes(buf, base, abs, fmt.fixed)?;
        let len = u32_at(&fixed, R_LEN) as usize;
        if len < fmt.fixed + 8 || !len.is_multiple_of(8) || abs + len > self.end {
            return Ok(None);
        }
        let kind = fixed[R_KIND];
        let vec_bytes = match kind {
            REC_UPSERT => fmt.dim * 4,
            REC_DELETE => 0,
            _ => return Ok(None),
        };
        let id_len = u16::from_le_bytes([fixed[R_ID_LEN], fixed[R_ID_LEN + 1]]) as usize;
        let meta_len = u32_at(&fixed, R_META_LEN) as usize;
        let id_start = fmt.fixed + vec_bytes;
        if id_start + id_len + meta_len > len - 8 {
            return Ok(None);
        }
        let id = self.bytes(buf, base, abs + id_start, id_len)?;
        if u64_at(&fixed, R_IDENT_SUM) != ident_sum(&fixed[..R_IDENT_SUM], &id) {
            return Ok(None);
        }
        let Ok(id) = String::from_utf8(id) else { return Ok(None) };
        Ok(Some((len, RecordIdentity { kind, label: u64_at(&fixed, R_LABEL), id })))
    }

    /// `n` bytes of the file at `abs`, from `buf` (the file from `base`) where it has them.
    fn bytes(&self, buf: &[u8], base: usize, abs: usize, n: usize) -> Result<Vec<u8>> {
        if abs >= base && abs + n <= base + buf.len() {
            return Ok(buf[abs - base..abs - base + n].to_vec());
        }
        let mut out = vec![0u8; n];
        self.read(abs, &mut out)?;
        Ok(out)
    }

    fn read(&self, at: usize, buf: &mut [u8]) -> Result<()> {
        self.file.read_at(at as u64, buf).map_err(|e| Error::io(self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datafile::{DataFileHeader, DataFileWriter, DATAFILE_VERSION, KIND_DELTA};
    use crate::distance::Metric;
    use crate::durable::write_synced;
    use crate::fault::FaultStorage;
    use crate::storage::Storage;

    fn file_of(version: u32, rows: &[(String, bool, usize)]) -> Vec<u8> {
        let mut w = DataFileWriter::new(&DataFileHeader {
            version,
            dim: 3,
            collection_id: 1,
            covered_seq: 9,
            metric: Metric::L2,
            kind: KIND_DELTA,
        });
        for (id, upsert, meta_len) in rows {
            if *upsert {
                w.upsert(id, 1, &[1.0, 2.0, 3.0], &format!("\"{}\"", "m".repeat(*meta_len)));
            } else {
                w.delete(id, 0);
            }
        }
        w.finish().0
    }

    #[test]
    fn lookup_finds_every_id_and_only_those_in_a_file_with_records_longer_than_its_window() {
        // Ids in order, every 7th a delete, some metadata far longer than the first window.
        let rows: Vec<(String, bool, usize)> =
            (0..2_000).map(|i| (format!("id{i:06}"), i % 7 != 3, if i % 97 == 5 { 100_000 } else { i % 50 })).collect();
        let fs = FaultStorage::new();
        let path = Path::new("/lookup/f.seg");
        fs.create_dir_all(Path::new("/lookup")).expect("dir");
        write_synced(&fs, path, &file_of(DATAFILE_VERSION, &rows)).expect("write");
        let file = fs.open_read(path).expect("open");
        let l = IdLookup::new(file.as_ref(), path).expect("header").expect("version 2");
        for (id, upsert, _) in &rows {
            assert_eq!(l.find(id).expect("find"), Some(*upsert), "{id}");
            // Between two ids, before the first and after the last: absent.
            assert_eq!(l.find(&format!("{id}x")).expect("find"), None);
        }
        assert_eq!(l.find("a").expect("find"), None);
        assert_eq!(l.find("zz").expect("find"), None);

        // Version 1 has no identity checksums to search by: the caller reads it whole.
        let v1 = Path::new("/lookup/v1.seg");
        write_synced(&fs, v1, &file_of(1, &rows[..10])).expect("write");
        let file = fs.open_read(v1).expect("open");
        assert!(IdLookup::new(file.as_ref(), v1).expect("header").is_none());
    }
}
