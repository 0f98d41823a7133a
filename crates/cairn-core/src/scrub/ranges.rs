//! A large file hashed by ranges on several threads, folded into its whole-file xxh3.
//! Invariant: ranges prove a file intact only when they covered every byte exactly once, all
//! of one file (one identity, the expected size) and the fold equals the recorded xxh3;
//! anything else leaves the file to a whole-file `verify_file`.

use std::path::Path;

use super::check::{hex, Expected, FileCheck, FileKind};
use super::control::ScanControl;
use super::read::{ChunkReader, Next, Source};
use super::verify::footer_count;
use crate::checksum::blocks::{self, RangeHasher};
use crate::error::{Error, Result};
use crate::storage::{OsStorage, Storage};

/// Range boundaries, from 0 to `bytes`, for hashing a file of `bytes` bytes by `hash_range`
/// tasks of about `range_bytes` each; a file shorter than two ranges is one range.
pub fn ranges(bytes: u64, range_bytes: u64) -> Vec<u64> {
    blocks::split(bytes, range_bytes)
}

/// `hash_range_on` the real file system.
pub fn hash_range(ctl: &ScanControl, split: u32, path: &Path, start: u64, end: u64) -> Result<u64> {
    hash_range_on(&OsStorage, ctl, split, path, start, end)
}

/// Hash bytes `start..end` (boundaries from `ranges`) of the file of split `split` and fold them
/// in. Returns the bytes read. A file that is not there, has another size than the split was
/// opened with, another identity than an earlier range read, or cannot be read marks the split
/// failed, and `split_finish` then leaves the file to a whole-file verification that reports
/// it; only a bad range or split id is an error.
pub fn hash_range_on(storage: &dyn Storage, ctl: &ScanControl, split: u32, path: &Path, start: u64, end: u64) -> Result<u64> {
    let total = ctl.with_split(split, |s| s.total)?;
    let mut hasher = RangeHasher::new(start, end, total, ctl.take_spare())
        .map_err(|e| Error::InvalidArgument(format!("range {start}..{end} of {total} bytes: {e}")))?;
    let fail = |why: String| ctl.with_split(split, |s| s.failed = Some(why)).map(|_| 0);
    let mut f = match storage.open_read(path) {
        Ok(f) => Source::new(f),
        Err(e) => return fail(format!("cannot open: {e}")),
    };
    let identity = match (f.len(), f.identity()) {
        (Ok(n), Ok(id)) if n == total => id,
        (Ok(n), Ok(_)) => return fail(format!("file is {n} bytes, {total} expected")),
        (Err(e), _) | (_, Err(e)) => return fail(format!("cannot stat: {e}")),
    };
    f.seek(start);
    let mut reader = ChunkReader::new();
    let mut read = 0u64;
    loop {
        match reader.next(&mut f, ctl, end - start - read) {
            Ok(Next::Cancelled) => return ctl.with_split(split, |s| s.cancelled = true).map(|_| read),
            Ok(Next::Eof) => break,
            Ok(Next::Bytes(b)) => {
                read += b.len() as u64;
                hasher.update(b).map_err(|e| Error::InvalidArgument(e.to_string()))?;
            }
            Err(e) => return fail(format!("read failed at {}: {e}", start + read)),
        }
    }
    let part = match hasher.finish() {
        Ok(p) => p,
        Err(e) => return fail(format!("range {start}..{end}: {e}")),
    };
    let spent = ctl.with_split(split, |s| {
        s.read += read;
        if s.identity.is_some_and(|id| id != identity) {
            s.failed = Some("the file was replaced while its ranges were read".into());
        }
        s.identity = Some(identity);
        s.fold.add(part).unwrap_or_else(|e| {
            s.failed = Some(e.into());
            Vec::new()
        })
    })?;
    ctl.keep_spare(spent);
    Ok(read)
}

/// `split_finish_on` the real file system.
pub fn split_finish(ctl: &ScanControl, split: u32, path: &Path, kind: FileKind, expected: Expected) -> Result<Option<FileCheck>> {
    split_finish_on(&OsStorage, ctl, split, path, kind, expected)
}

/// Close split `split` after all its `hash_range` tasks: the check of the file at `path` when
/// the ranges prove it intact (its xxh3 is the expected one) or the scan was cancelled; None
/// when the file must be verified whole (`verify_file`) to say what is wrong, or whether
/// anything is (a replaced file).
pub fn split_finish_on(
    storage: &dyn Storage,
    ctl: &ScanControl,
    split: u32,
    path: &Path,
    kind: FileKind,
    expected: Expected,
) -> Result<Option<FileCheck>> {
    let s = ctl.splits().remove(&split).ok_or_else(|| Error::InvalidArgument(format!("split {split} is not open")))?;
    let mut out = FileCheck { bytes: s.total, read: s.read, ..FileCheck::default() };
    if s.cancelled {
        out.cancelled = true;
        return Ok(Some(out));
    }
    if s.failed.is_some() || s.total != expected.bytes || s.fold.digest() != Some(expected.xxh3) {
        return Ok(None);
    }
    out.xxh3 = Some(hex(expected.xxh3));
    if kind == FileKind::Segment {
        match storage.open_read(path) {
            Ok(f) => out.records = footer_count(&Source::new(f), s.total),
            Err(_) => return Ok(None),
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{damages, expected, Dir};
    use super::*;
    use crate::datafile::{DataFileHeader, DataFileWriter, KIND_BASE};
    use crate::distance::Metric;

    const RANGE_BYTES: u64 = 32 << 20;

    /// Hash `path` by `ranges` in reverse order, as tasks on different threads may finish.
    fn by_ranges(dir: &Dir, path: &Path, kind: FileKind, exp: Expected, ctl: &ScanControl) -> Option<FileCheck> {
        let split = ctl.split_open(exp.bytes);
        let cuts = ranges(exp.bytes, RANGE_BYTES);
        for w in cuts.windows(2).rev() {
            hash_range_on(dir.storage.as_ref(), ctl, split, path, w[0], w[1]).expect("valid range");
        }
        split_finish_on(dir.storage.as_ref(), ctl, split, path, kind, exp).expect("open split")
    }

    #[test]
    fn a_file_hashed_by_ranges_is_proven_intact_or_left_to_a_whole_file_check() {
        // The real file system: ranges compare the file's (device, inode) identity.
        let dir = Dir::os("ranges");
        let fs = dir.storage.as_ref();
        // Large enough for several ranges; the tail is not a whole block.
        let mut rows = Vec::new();
        while rows.len() < (3 * RANGE_BYTES + 5000) as usize {
            rows.extend_from_slice(&(rows.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
        }
        let good = rows;
        assert!(ranges(good.len() as u64, RANGE_BYTES).len() > 3);
        let exp = expected(&good);
        let path = dir.join("x.hnsw");
        dir.put(&path, &good);
        let ok = by_ranges(&dir, &path, FileKind::Blob, exp, &ScanControl::new(None)).expect("intact");
        assert!(ok.findings.is_empty() && !ok.cancelled);
        assert_eq!((ok.bytes, ok.read, ok.xxh3.clone()), (exp.bytes, exp.bytes, Some(hex(exp.xxh3))));
        for (what, bytes, want) in damages(&good) {
            dir.put_or_remove(&path, &bytes);
            assert!(
                by_ranges(&dir, &path, FileKind::Blob, exp, &ScanControl::new(None)).is_none(),
                "{what}: ranges must not prove it intact"
            );
            // The whole-file check the caller falls back to reports it.
            let c = dir.check(&path, FileKind::Blob, Some(exp));
            assert!(c.findings.iter().any(|f| f.kind == want), "{what}: {:?}", c.findings);
        }
        // A recorded checksum that is wrong (the damage is in what was recorded) is not proven either.
        dir.put(&path, &good);
        assert!(
            by_ranges(&dir, &path, FileKind::Blob, Expected { bytes: exp.bytes, xxh3: exp.xxh3 ^ 1 }, &ScanControl::new(None)).is_none()
        );
        // A range that skips or repeats bytes never completes the fold.
        let ctl = ScanControl::new(None);
        let split = ctl.split_open(exp.bytes);
        let cuts = ranges(exp.bytes, RANGE_BYTES);
        hash_range_on(fs, &ctl, split, &path, cuts[0], cuts[1]).expect("range");
        hash_range_on(fs, &ctl, split, &path, cuts[0], cuts[1]).expect("range");
        assert!(split_finish_on(fs, &ctl, split, &path, FileKind::Blob, exp).expect("split").is_none());
        assert!(hash_range_on(fs, &ctl, split, &path, cuts[0], cuts[1]).is_err(), "the split is closed");
        let split = ctl.split_open(exp.bytes);
        assert!(hash_range_on(fs, &ctl, split, &path, 1, cuts[1]).is_err(), "not a block boundary");
        // A file replaced between two ranges (same bytes, another identity) is not proven.
        let ctl = ScanControl::new(None);
        let split = ctl.split_open(exp.bytes);
        hash_range_on(fs, &ctl, split, &path, cuts[0], cuts[1]).expect("range");
        let other = dir.join("other.hnsw");
        dir.put(&other, &good);
        fs.rename(&other, &path).expect("replace");
        for w in cuts.windows(2).skip(1) {
            hash_range_on(fs, &ctl, split, &path, w[0], w[1]).expect("range");
        }
        assert!(split_finish_on(fs, &ctl, split, &path, FileKind::Blob, exp).expect("split").is_none(), "a replaced file");
        // Cancelled: reported as such, not as damage.
        let ctl = ScanControl::new(None);
        ctl.cancel();
        let c = by_ranges(&dir, &path, FileKind::Blob, exp, &ctl).expect("cancelled");
        assert!(c.cancelled && c.findings.is_empty());
    }

    #[test]
    fn a_segment_file_hashed_by_ranges_reports_its_footer_count() {
        let dir = Dir::fault();
        let mut w = DataFileWriter::new(&DataFileHeader {
            version: crate::datafile::DATAFILE_VERSION,
            dim: 4096,
            collection_id: 1,
            covered_seq: 9,
            metric: Metric::L2,
            kind: KIND_BASE,
        });
        let v = vec![0.25f32; 4096];
        let rows = (2 * RANGE_BYTES / (4096 * 4)) as usize + 40;
        for i in 0..rows {
            w.upsert(&format!("row-{i}"), i as u64, &v, "{}");
        }
        let good = w.finish().0;
        let path = dir.join("x.seg");
        dir.put(&path, &good);
        let c = by_ranges(&dir, &path, FileKind::Segment, expected(&good), &ScanControl::new(None)).expect("intact");
        assert_eq!(c.records, rows as u64);
        assert_eq!(dir.check(&path, FileKind::Segment, Some(expected(&good))).records, rows as u64);
    }
}
