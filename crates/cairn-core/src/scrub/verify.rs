//! Per-format verifiers: manifests and snapshot manifests (framing, checksum, JSON body), WAL
//! segments (streamed record check, whole-file scan only when that finds damage), checkpoint
//! data files (whole-file xxh3 when recorded, record by record to locate damage) and blobs.
//! Invariant: `verify_file` never fails; every problem, a missing or unreadable file included,
//! is a finding.

use std::path::Path;

use super::check::{hex, parse_xxh3, Expected, FileCheck, FileKind};
use super::control::ScanControl;
use super::read::{hash_all, read_chunk, with_whole_file, Chunk, ChunkReader, Next, Source};
use crate::checksum::blocks::Xxh3Blocks;
use crate::datafile::{self, DATAFILE_HEADER_LEN, FOOTER_LEN};
use crate::error::Error;
use crate::manifest::{self, Manifest, MANIFEST_HEADER_LEN};
use crate::quarantine::Damage;
use crate::snapshot::{SnapshotInfo, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
use crate::storage::{OsStorage, Storage};
use crate::wal::reader::{scan_segment, ScanItem};
use crate::wal::record::{decode_segment_header, u64_at, SEGMENT_HEADER_LEN};
use crate::wal::stream_check::StreamCheck;

/// `verify_file_on` the real file system.
pub fn verify_file(path: &Path, kind: FileKind, expected: Option<Expected>, ctl: &ScanControl) -> FileCheck {
    verify_file_on(&OsStorage, path, kind, expected, ctl)
}

/// Verify one file. Never fails: every problem, including a missing or unreadable file, is a
/// finding in the result.
pub fn verify_file_on(storage: &dyn Storage, path: &Path, kind: FileKind, expected: Option<Expected>, ctl: &ScanControl) -> FileCheck {
    let mut out = FileCheck::default();
    let mut f = match storage.open_read(path) {
        Ok(f) => Source::new(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.add(0, Damage::Missing, None, "file is missing");
            return out;
        }
        Err(e) => {
            out.add(0, Damage::Unreadable, None, format!("cannot open: {e}"));
            return out;
        }
    };
    out.bytes = match f.len() {
        Ok(n) => n,
        Err(e) => {
            out.add(0, Damage::Unreadable, None, format!("cannot stat: {e}"));
            return out;
        }
    };
    if let Some(exp) = expected {
        if out.bytes < exp.bytes {
            out.add(out.bytes, Damage::Truncated, None, format!("file is {} bytes, {} recorded", out.bytes, exp.bytes));
        } else if out.bytes > exp.bytes {
            out.add(exp.bytes, Damage::Checksum, None, format!("file is {} bytes, {} recorded: bytes were appended", out.bytes, exp.bytes));
        }
    }
    let result = match kind {
        FileKind::Segment | FileKind::SegmentDeep => verify_segment_fast_or_deep(&mut f, kind, expected, &mut out, ctl),
        FileKind::Wal | FileKind::WalTail => verify_wal(path, &mut f, kind == FileKind::WalTail, expected.is_some(), &mut out, ctl),
        FileKind::Manifest | FileKind::SnapshotManifest | FileKind::PayloadIndex => verify_framed(&mut f, kind, &mut out, ctl),
        FileKind::Blob => hash_all(&mut f, &mut out, ctl),
    };
    if let Err(e) = result {
        out.add(out.read, Damage::Unreadable, None, format!("read failed: {e}"));
        return out;
    }
    if out.cancelled {
        return out;
    }
    if let (Some(exp), Some(found)) = (expected, out.xxh3.as_deref()) {
        // Only worth saying when nothing more precise was found.
        if out.findings.is_empty() && parse_xxh3(found) != Some(exp.xxh3) {
            out.add(0, Damage::Checksum, None, format!("whole-file xxh3 is {found}, {} recorded", hex(exp.xxh3)));
        }
    }
    out
}

fn verify_framed(f: &mut Source, kind: FileKind, out: &mut FileCheck, ctl: &ScanControl) -> std::io::Result<()> {
    with_whole_file(f, out, ctl, |buf, out| check_framed(buf, kind, out)).map(|_| ())
}

fn check_framed(buf: &[u8], kind: FileKind, out: &mut FileCheck) {
    let (magic, version) = match kind {
        FileKind::SnapshotManifest => (SNAPSHOT_MAGIC, SNAPSHOT_VERSION),
        FileKind::PayloadIndex => (crate::payload::PAYLOAD_MAGIC, crate::payload::PAYLOAD_FILE_VERSION),
        _ => (manifest::MANIFEST_MAGIC, manifest::MANIFEST_VERSION),
    };
    let len = buf.len();
    if len < MANIFEST_HEADER_LEN {
        out.add(len as u64, Damage::Truncated, None, format!("{len} bytes is shorter than the header"));
        return;
    }
    if &buf[..8] != magic {
        out.add(0, Damage::Checksum, None, "bad magic");
        return;
    }
    let total = (u64_at(buf, 16) as u128) + (MANIFEST_HEADER_LEN as u128) + 8;
    if total != len as u128 {
        // Either the file lost or gained bytes, or its length field is damaged. The trailing
        // checksum covers the length field, so try the length the file actually has.
        let mut patched = buf.to_vec();
        patched[16..24].copy_from_slice(&((len - MANIFEST_HEADER_LEN).saturating_sub(8) as u64).to_le_bytes());
        if len >= MANIFEST_HEADER_LEN + 8 && u64_at(&patched, len - 8) == crate::checksum::xxh3(&patched[..len - 8]) {
            out.add(16, Damage::Checksum, None, "length field is damaged");
        } else if total > len as u128 {
            out.add(len as u64, Damage::Truncated, None, format!("header says {total} bytes, file has {len}"));
        } else {
            out.add(total as u64, Damage::Checksum, None, format!("{} bytes follow the checksum", len as u128 - total));
        }
        return;
    }
    let path = Path::new("");
    let body = match manifest::decode_framed(magic, version, buf, path) {
        Ok(b) => b,
        Err(Error::Corruption { offset, reason, .. }) => {
            out.add(offset, Damage::Checksum, None, reason);
            return;
        }
        Err(e) => {
            out.add(0, Damage::Checksum, None, e.to_string());
            return;
        }
    };
    let parsed = match kind {
        FileKind::SnapshotManifest => serde_json::from_slice::<SnapshotInfo>(body).map(|_| ()).map_err(|e| e.to_string()),
        FileKind::PayloadIndex => crate::payload::decode_payload_file(buf, path).map(|_| ()).map_err(|e| e.to_string()),
        _ => serde_json::from_slice::<Manifest>(body).map(|_| ()).map_err(|e| e.to_string()),
    };
    if let Err(e) = parsed {
        out.add(MANIFEST_HEADER_LEN as u64, Damage::Checksum, None, format!("body does not parse: {e}"));
    }
}

/// A segment is checked as it streams by; only if that finds anything wrong is it read again,
/// whole, and scanned by the recovery reader to locate and classify the damage. The whole-file
/// xxh3 is computed when a snapshot recorded one (`hash_whole`), or for a damaged segment.
fn verify_wal(
    path: &Path,
    f: &mut Source,
    tail_may_tear: bool,
    hash_whole: bool,
    out: &mut FileCheck,
    ctl: &ScanControl,
) -> std::io::Result<()> {
    if out.findings.is_empty() {
        let named = path.file_name().and_then(|n| crate::layout::parse_wal_segment_name(&n.to_string_lossy()));
        let mut check = StreamCheck::new(named);
        let mut whole = hash_whole.then(Xxh3Blocks::default);
        let mut reader = ChunkReader::new();
        loop {
            match reader.next(f, ctl, u64::MAX)? {
                Next::Cancelled => {
                    out.cancelled = true;
                    return Ok(());
                }
                Next::Eof => break,
                Next::Bytes(b) => {
                    out.read += b.len() as u64;
                    if let Some(h) = whole.as_mut() {
                        h.update(b);
                    }
                    if !check.feed(b) {
                        break;
                    }
                }
            }
        }
        if let Some(clean) = check.finish() {
            out.first_seq = Some(clean.first_seq);
            out.last_seq = clean.last_seq;
            out.end = Some(clean.end);
            out.records = clean.records;
            out.xxh3 = whole.map(|h| hex(h.digest()));
            return Ok(());
        }
        f.rewind();
        out.read = 0;
    }
    with_whole_file(f, out, ctl, |buf, out| check_wal(path, buf, tail_may_tear, out)).map(|_| ())
}

fn check_wal(path: &Path, buf: &[u8], tail_may_tear: bool, out: &mut FileCheck) {
    if buf.len() < SEGMENT_HEADER_LEN {
        out.add(buf.len() as u64, Damage::Truncated, None, "shorter than the segment header");
        return;
    }
    let first_seq = match decode_segment_header(buf) {
        Ok(s) => s,
        Err(reason) => {
            out.add(0, Damage::Checksum, None, reason);
            return;
        }
    };
    let named = path.file_name().and_then(|n| crate::layout::parse_wal_segment_name(&n.to_string_lossy()));
    if named.is_some_and(|n| n != first_seq) {
        out.add(16, Damage::Checksum, None, format!("header says first seq {first_seq}, the name says otherwise"));
    }
    out.first_seq = Some(first_seq);
    let scan = scan_segment(buf, first_seq);
    for item in &scan.items {
        match item {
            ScanItem::Record { .. } => out.records += 1,
            ScanItem::Corrupt { offset, reason } => out.add(*offset, Damage::Checksum, None, format!("{reason}; a later record is intact")),
        }
    }
    out.last_seq = scan.last_seq;
    out.end = Some(scan.end);
    if let Some(reason) = scan.invalid_tail {
        if !tail_may_tear {
            let rest = &buf[scan.end as usize..];
            // A cut record keeps the start of its header (type 1, zero reserved bytes); a few
            // stray bytes after the last record were appended.
            let cut_header = rest.len() >= 8 && rest[4] == crate::wal::record::RECORD_TYPE_BATCH && rest[5..8] == [0, 0, 0];
            let kind = if reason == "record extends past end of file" || (reason == "truncated header" && cut_header) {
                Damage::Truncated
            } else {
                Damage::Checksum
            };
            let after = scan.last_seq.map_or_else(|| "the header".to_string(), |s| format!("seq {s}"));
            out.add(scan.end, kind, None, format!("{reason} after {after} in a sealed segment"));
        }
    }
}

fn verify_segment_fast_or_deep(
    f: &mut Source,
    kind: FileKind,
    expected: Option<Expected>,
    out: &mut FileCheck,
    ctl: &ScanControl,
) -> std::io::Result<()> {
    if let (FileKind::Segment, Some(exp), true) = (kind, expected, out.findings.is_empty()) {
        hash_all(f, out, ctl)?;
        if out.cancelled || out.xxh3.as_deref().and_then(parse_xxh3) == Some(exp.xxh3) {
            out.records = footer_count(f, out.bytes);
            return Ok(());
        }
        // Damaged: read it again, record by record, to say where and which rows.
        f.rewind();
        out.xxh3 = None;
    }
    // With a recorded size that matches, damage is never a truncation.
    let size_is_right = expected.is_some_and(|e| e.bytes == out.bytes);
    verify_segment(f, size_is_right, out, ctl)
}

/// The record count of an intact segment file's footer (0 if it cannot be read).
pub(super) fn footer_count(f: &Source, bytes: u64) -> u64 {
    let mut footer = [0u8; FOOTER_LEN];
    if bytes >= FOOTER_LEN as u64 && f.read_at(bytes - FOOTER_LEN as u64, &mut footer).is_ok() {
        return datafile::check_footer(&footer).map_or(0, |(count, _)| count);
    }
    0
}

fn verify_segment(f: &mut Source, size_is_right: bool, out: &mut FileCheck, ctl: &ScanControl) -> std::io::Result<()> {
    let len = out.bytes as usize;
    if len < DATAFILE_HEADER_LEN + FOOTER_LEN {
        let kind = if out.findings.iter().any(|f| f.kind == Damage::Truncated) { Damage::Truncated } else { Damage::Checksum };
        out.add(len as u64, kind, None, "shorter than a segment header and footer");
        return hash_all(f, out, ctl);
    }
    let footer_at = len - FOOTER_LEN;
    let mut whole = Xxh3Blocks::default();
    let mut body_sum: Option<u64> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(2 * ctl.chunk());
    // File offset of buf[0], and of the next record to check.
    let mut base = 0usize;
    let mut pos = DATAFILE_HEADER_LEN;
    let mut dim: Option<datafile::RecordFormat> = None;
    let mut framed = true;
    let mut read = 0usize;
    loop {
        let before = buf.len();
        let eof = match read_chunk(f, &mut buf, ctl)? {
            Chunk::Cancelled => {
                out.cancelled = true;
                return Ok(());
            }
            Chunk::Eof => true,
            Chunk::Bytes(n) => {
                // The footer's body checksum covers everything before the footer; the manifest's
                // covers the whole file. One pass gives both.
                let new = &buf[before..before + n];
                let (start, end) = (read, read + n);
                if start < footer_at && end >= footer_at {
                    let cut = footer_at - start;
                    whole.update(&new[..cut]);
                    body_sum = Some(whole.digest());
                    whole.update(&new[cut..]);
                } else {
                    whole.update(new);
                }
                read = end;
                false
            }
        };
        let avail = base + buf.len();
        if dim.is_none() && framed && (avail >= DATAFILE_HEADER_LEN || eof) {
            match datafile::check_header(&buf) {
                Ok(h) => dim = Some(h.record_format()),
                Err(reason) => {
                    out.add(0, Damage::Checksum, None, reason);
                    framed = false;
                }
            }
        }
        if let Some(d) = dim.filter(|_| framed) {
            while pos < footer_at {
                let rel = pos - base;
                if rel + 4 > buf.len() {
                    break;
                }
                let rlen = u32::from_le_bytes([buf[rel], buf[rel + 1], buf[rel + 2], buf[rel + 3]]) as usize;
                let plausible = rlen >= datafile::R_FIXED + 8 && rlen.is_multiple_of(8) && pos + rlen <= footer_at;
                if plausible && pos + rlen > avail {
                    break; // need more bytes
                }
                if !plausible {
                    // The length is unusable, so nothing after it can be framed.
                    let cut_short = rlen >= datafile::R_FIXED + 8 && rlen.is_multiple_of(8) && pos + rlen > footer_at && !size_is_right;
                    let kind = if cut_short || out.findings.iter().any(|f| f.kind == Damage::Truncated) {
                        Damage::Truncated
                    } else {
                        Damage::Checksum
                    };
                    out.add(pos as u64, kind, None, "implausible record length; the rest of the file cannot be framed");
                    framed = false;
                    break;
                }
                match datafile::check_record(&buf, rel, rel + rlen, &d) {
                    Ok(_) => out.records += 1,
                    Err((reason, _)) => {
                        let id = datafile::record_identity(&buf, rel, rel + rlen, &d)
                            .map(|i| i.id)
                            .or_else(|| datafile::record_id_hint(&buf[rel..rel + rlen], &d));
                        out.add(pos as u64, Damage::Checksum, id, reason);
                    }
                }
                pos += rlen;
            }
        }
        // Keep only what the next record check needs.
        let keep_from = if framed { pos.min(base + buf.len()) } else { base + buf.len() };
        let drop = keep_from - base;
        if drop > 0 {
            buf.drain(..drop);
            base += drop;
        }
        if eof {
            break;
        }
    }
    out.read = read as u64;
    out.xxh3 = Some(hex(whole.digest()));
    if framed && dim.is_some() && pos != footer_at {
        out.add(pos as u64, Damage::Truncated, None, "records end before the footer");
    }
    let mut footer = [0u8; FOOTER_LEN];
    f.read_at(footer_at as u64, &mut footer)?;
    match datafile::check_footer(&footer) {
        None => {
            let kind = if out.findings.iter().any(|f| f.kind == Damage::Truncated) { Damage::Truncated } else { Damage::Checksum };
            out.add(footer_at as u64, kind, None, "footer missing or damaged");
        }
        Some((count, sum)) if out.findings.is_empty() => {
            if count != out.records {
                out.add(footer_at as u64, Damage::Checksum, None, format!("footer counts {count} records, {} found", out.records));
            } else if Some(sum) != body_sum {
                out.add(footer_at as u64, Damage::Checksum, None, "body checksum differs from the footer's");
            }
        }
        Some(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{damages, expected, segment_bytes, wal_bytes, Dir};
    use super::*;

    fn matrix(dir: &Dir, kind: FileKind, good: Vec<u8>, name: &str, with_expected: bool) {
        let path = dir.join(name);
        dir.put(&path, &good);
        let exp = with_expected.then(|| expected(&good));
        let clean = dir.check(&path, kind, exp);
        assert!(clean.findings.is_empty(), "{kind:?} clean file: {:?}", clean.findings);
        for (what, bytes, want) in damages(&good) {
            dir.put_or_remove(&path, &bytes);
            let c = dir.check(&path, kind, exp);
            assert!(c.findings.iter().any(|f| f.kind == want), "{kind:?} {what}: expected {want:?}, got {:?}", c.findings);
        }
    }

    #[test]
    fn every_damage_is_found_with_its_kind() {
        for dir in Dir::both("matrix") {
            matrix(&dir, FileKind::Segment, segment_bytes(300), "x.seg", true);
            matrix(&dir, FileKind::SegmentDeep, segment_bytes(300), "x.seg", true);
            matrix(&dir, FileKind::Segment, segment_bytes(300), "x.seg", false);
            matrix(&dir, FileKind::Blob, (0..20_000u32).flat_map(|i| i.to_le_bytes()).collect(), "x.hnsw", true);
            matrix(&dir, FileKind::Manifest, manifest::encode(&Manifest::default()), "MANIFEST", false);
            // A sealed WAL segment needs no recorded checksum: its framing finds every damage kind
            // (an appended byte is non-zero here; appended zeros look like preallocation).
            matrix(&dir, FileKind::Wal, wal_bytes(1, 400), "00000000000000000001.wal", false);
            // As a snapshot lists it, with its size and xxh3.
            matrix(&dir, FileKind::Wal, wal_bytes(1, 400), "00000000000000000001.wal", true);
        }
    }

    #[test]
    fn a_damaged_segment_record_is_located_and_named() {
        let dir = Dir::fault();
        let good = segment_bytes(50);
        let mut bad = good.clone();
        let at = DATAFILE_HEADER_LEN + 3 * (good.len() - DATAFILE_HEADER_LEN - FOOTER_LEN) / 50 + 30;
        bad[at] ^= 1;
        let path = dir.join("x.seg");
        dir.put(&path, &bad);
        let c = dir.check(&path, FileKind::Segment, Some(expected(&good)));
        assert_eq!(c.findings.len(), 1, "{:?}", c.findings);
        assert_eq!(c.findings[0].kind, Damage::Checksum);
        assert_eq!(c.findings[0].id.as_deref(), Some("row-3"));
        assert_eq!(c.records, 49);
    }

    #[test]
    fn a_torn_tail_is_not_damage_in_the_last_segment() {
        let dir = Dir::fault();
        let mut buf = wal_bytes(5, 10);
        buf.truncate(buf.len() - 7);
        let path = dir.join("00000000000000000005.wal");
        dir.put(&path, &buf);
        assert!(dir.check(&path, FileKind::WalTail, None).findings.is_empty());
        let sealed = dir.check(&path, FileKind::Wal, None);
        assert_eq!(sealed.findings[0].kind, Damage::Truncated);
        assert_eq!(sealed.last_seq, Some(13));
    }

    #[test]
    fn a_streamed_segment_matches_the_one_shot_checksum_for_any_chunking() {
        for dir in Dir::both("chunks") {
            let good = segment_bytes(3000);
            let path = dir.join("x.seg");
            dir.put(&path, &good);
            for rate in [None, Some(64.0 * 1024.0 * 20.0 * 1000.0)] {
                let c = verify_file_on(dir.storage.as_ref(), &path, FileKind::SegmentDeep, Some(expected(&good)), &ScanControl::new(rate));
                assert!(c.findings.is_empty(), "{:?}", c.findings);
                assert_eq!(c.records, 3000);
                assert_eq!(c.xxh3, Some(hex(crate::checksum::xxh3(&good))));
            }
        }
    }
}
