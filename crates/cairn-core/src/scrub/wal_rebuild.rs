//! A damaged sealed WAL segment rebuilt from records fetched from the other nodes of a
//! replicated store (docs/format.md, "Repair from the other nodes"). Every node writes the
//! primary's records byte for byte, so a sealed segment is its header followed by the records
//! from the sequence number in its name to the one before the next segment's. Those records are
//! checked here (each checksum, consecutive, exactly that range), the segment is built and then
//! verified again as a file and installed like a copy (`install_bytes_on`), under the
//! checkpoint lock so that no checkpoint or retention pass moves segments meanwhile.
//! Invariant: nothing is installed unless every record verified and the range is whole.

use std::path::Path;

use super::check::{Expected, FileKind};
use super::install::{install_bytes_on, Install};
use crate::checksum::xxh3;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::layout::{parse_wal_segment_name, ARCHIVE_DIR, WAL_DIR};
use crate::quarantine::QuarantineNote;
use crate::storage::Storage;
use crate::wal::record::{
    decode_record, decode_segment_header, encode_segment_header_with_flags, segment_flags, Decoded, SEGMENT_HEADER_LEN, SEG_FLAG_UNSYNCED,
};
use crate::wal::ship::list_segments;

/// The sequence numbers a sealed segment `rel` (`wal/<first>.wal` or `wal-archive/<first>.wal`)
/// must hold: from its name to the one before the next segment's. `None` when it is gone or is
/// the newest segment (the active one is never rebuilt).
pub fn sealed_segment_range(storage: &dyn Storage, dir: &Path, rel: &str) -> Result<Option<(u64, u64)>> {
    let first = segment_first_seq(rel)?;
    if !storage.exists(&dir.join(rel)) {
        return Ok(None);
    }
    let segments = list_segments(storage, dir)?;
    Ok(segments.range(first + 1..).next().map(|(&next, _)| (first, next - 1)))
}

fn segment_first_seq(rel: &str) -> Result<u64> {
    let (sub, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    match parse_wal_segment_name(name) {
        Some(first) if sub == WAL_DIR || sub == ARCHIVE_DIR => Ok(first),
        _ => Err(Error::InvalidArgument(format!("'{rel}' is not a WAL segment of {WAL_DIR}/ or {ARCHIVE_DIR}/"))),
    }
}

/// Rebuild the sealed segment `rel` of the open store from `records` (whole framed records, as
/// `read_wal` returns them) and install it. `expected` is the segment's recorded size and xxh3
/// when a snapshot names it; the rebuilt bytes must then match it exactly. Rejected (nothing
/// changed) when a record fails its checksum, the records do not cover exactly the segment's
/// range, or the result does not verify; moot when the segment is gone.
pub fn rebuild_wal_segment_live(
    engine: &Engine,
    rel: &str,
    records: &[u8],
    expected: Option<Expected>,
    note: &QuarantineNote,
) -> Result<Install> {
    let storage = engine.storage().clone();
    engine.with_checkpoint_lock(|_, dir| {
        let storage = storage.as_ref();
        let Some((first, last)) = sealed_segment_range(storage, dir, rel)? else {
            return if storage.exists(&dir.join(rel)) {
                Ok(Install::Rejected { detail: format!("{rel} is the newest segment, which is being written; it is not rebuilt") })
            } else {
                Ok(Install::Moot)
            };
        };
        if let Err(detail) = check_records(records, first, last) {
            return Ok(Install::Rejected { detail: format!("records for {rel} ({first}..={last}) from the other nodes: {detail}") });
        }
        // The flags are the damaged header's when it still verifies; otherwise each possible
        // value is tried against the recorded checksum (without one, a segment that was synced).
        let header = read_header(storage, &dir.join(rel));
        let flags: Vec<u32> = match decode_segment_header(&header) {
            Ok(s) if s == first => vec![segment_flags(&header)],
            _ => vec![0, SEG_FLAG_UNSYNCED],
        };
        let build = |flags: u32| {
            let mut bytes = Vec::with_capacity(SEGMENT_HEADER_LEN + records.len());
            bytes.extend_from_slice(&encode_segment_header_with_flags(first, flags));
            bytes.extend_from_slice(records);
            bytes
        };
        let matches = |b: &[u8]| expected.is_none_or(|e| e.bytes == b.len() as u64 && e.xxh3 == xxh3(b));
        let Some(bytes) = flags.into_iter().map(build).find(|b| matches(b)) else {
            return Ok(Install::Rejected {
                detail: format!("{rel} rebuilt from the other nodes' records does not match the size and xxh3 a snapshot recorded for it"),
            });
        };
        install_bytes_on(storage, dir, rel, &bytes, FileKind::Wal, expected, note)
    })
}

/// Every record valid, consecutive from `first`, the last one `last`, nothing after it.
fn check_records(records: &[u8], first: u64, last: u64) -> std::result::Result<(), String> {
    let (mut pos, mut next) = (0usize, first);
    while pos < records.len() {
        match decode_record(&records[pos..]) {
            Decoded::Record { header, len, .. } => {
                if header.seq != next {
                    return Err(format!("record at byte {pos} has seq {}, expected {next}", header.seq));
                }
                if header.seq > last {
                    return Err(format!("record {} is past the segment's last seq {last}", header.seq));
                }
                pos += len;
                next += 1;
            }
            Decoded::End => return Err(format!("zero bytes at byte {pos} where a record was expected")),
            Decoded::Invalid(reason) => return Err(format!("record at byte {pos} is invalid: {reason}")),
        }
    }
    if next != last + 1 {
        return Err(format!("records end at seq {}, the segment holds up to {last}", next - 1));
    }
    Ok(())
}

/// The first bytes of the damaged file (fewer, or none, if it is shorter or unreadable).
fn read_header(storage: &dyn Storage, path: &Path) -> Vec<u8> {
    let mut buf = vec![0u8; SEGMENT_HEADER_LEN];
    let n = storage.open_read(path).and_then(|f| f.read_up_to(0, &mut buf)).unwrap_or(0);
    buf.truncate(n);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrub::test_support::wal_bytes;

    #[test]
    fn check_records_takes_exactly_the_segment_range() {
        let seg = wal_bytes(5, 4);
        let records = &seg[SEGMENT_HEADER_LEN..];
        assert_eq!(check_records(records, 5, 8), Ok(()));
        assert!(check_records(records, 5, 9).expect_err("refused").contains("end at seq 8"));
        assert!(check_records(records, 4, 8).expect_err("refused").contains("expected 4"));
        assert!(check_records(records, 5, 7).expect_err("refused").contains("past the segment"));
        let mut bad = records.to_vec();
        bad[40] ^= 1;
        assert!(check_records(&bad, 5, 8).expect_err("refused").contains("invalid"));
    }
}
