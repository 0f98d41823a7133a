//! Write-ahead log: segment files named by their first sequence number, each holding framed,
//! checksummed, 8-byte-aligned records (docs/format.md).

pub mod reader;
pub mod record;
pub mod recovery;
pub mod stream_check;
pub mod writer;

/// `wal/00000000000000000042.wal`: 20 digits so that names sort by sequence number.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.wal")
}

pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
