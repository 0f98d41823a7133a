//! Scans a WAL segment record by record, classifying every byte range as a valid record,
//! a corrupt region, or the unwritten tail.

use super::record::{decode_record, Decoded, RecordHeader, RECORD_ALIGN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::wal::record::u64_at;

#[derive(Debug)]
pub enum ScanItem {
    Record {
        offset: u64,
        header: RecordHeader,
        payload_start: usize,
        len: usize,
    },
    /// Invalid bytes at `offset`, followed later in the same segment by a valid record:
    /// never a torn write, always corruption.
    Corrupt {
        offset: u64,
        reason: &'static str,
    },
}

#[derive(Debug)]
pub struct SegmentScan {
    pub items: Vec<ScanItem>,
    /// Offset just past the last valid record (or the header): where writing would resume.
    pub end: u64,
    /// Set when non-zero bytes follow `end` and no valid record follows them.
    pub invalid_tail: Option<&'static str>,
    pub last_seq: Option<u64>,
}

/// Scan `buf` (a whole segment including its header, whose first sequence number is
/// `first_seq`). Records must be consecutive from `first_seq`; after a corrupt region the
/// next valid record may skip ahead, and the caller reports the gap.
pub fn scan_segment(buf: &[u8], first_seq: u64) -> SegmentScan {
    let mut items = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    let mut last_seq = first_seq.saturating_sub(1);
    let mut end = SEGMENT_HEADER_LEN as u64;
    let mut invalid_tail = None;
    let mut after_corrupt = false;
    let mut found_any = false;
    while pos < buf.len() {
        let reason = match decode_record(&buf[pos..]) {
            Decoded::Record { header, len, .. } if header.seq == last_seq + 1 || (after_corrupt && header.seq > last_seq) => {
                items.push(ScanItem::Record { offset: pos as u64, header, payload_start: pos + RECORD_HEADER_LEN, len });
                after_corrupt = false;
                found_any = true;
                last_seq = header.seq;
                pos += len;
                end = pos as u64;
                continue;
            }
            Decoded::Record { .. } => "sequence number out of order",
            Decoded::End => "zeroed region",
            Decoded::Invalid(r) => r,
        };
        match find_next_valid(buf, pos + RECORD_ALIGN, last_seq) {
            Some(next) => {
                items.push(ScanItem::Corrupt { offset: pos as u64, reason });
                pos = next;
                after_corrupt = true;
            }
            None => {
                if buf[pos..].iter().any(|&b| b != 0) {
                    invalid_tail = Some(reason);
                }
                break;
            }
        }
    }
    SegmentScan { items, end, invalid_tail, last_seq: found_any.then_some(last_seq) }
}

/// The next 8-aligned offset at or after `from` holding a valid record with a later sequence
/// number than `after_seq`.
fn find_next_valid(buf: &[u8], from: usize, after_seq: u64) -> Option<usize> {
    let mut p = from;
    while p + RECORD_HEADER_LEN <= buf.len() {
        let seq = u64_at(buf, p + 8);
        // Cheap pre-checks before hashing: a plausible sequence number and non-zero header.
        if seq > after_seq && seq < after_seq.saturating_add(1 << 40) {
            if let Decoded::Record { header, .. } = decode_record(&buf[p..]) {
                if header.seq > after_seq {
                    return Some(p);
                }
            }
        }
        p += RECORD_ALIGN;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::{encode_record, encode_segment_header, RECORD_TYPE_BATCH};

    fn segment(seqs: &[u64], zero_tail: usize) -> Vec<u8> {
        let mut buf = encode_segment_header(seqs.first().copied().unwrap_or(1)).to_vec();
        for &s in seqs {
            encode_record(&mut buf, RECORD_TYPE_BATCH, s, s * 10, &[s as u8; 13]);
        }
        buf.resize(buf.len() + zero_tail, 0);
        buf
    }

    fn records(scan: &SegmentScan) -> Vec<u64> {
        scan.items
            .iter()
            .filter_map(|i| match i {
                ScanItem::Record { header, .. } => Some(header.seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn clean_segment_with_zero_tail() {
        let buf = segment(&[1, 2, 3], 4096);
        let scan = scan_segment(&buf, 1);
        assert_eq!(records(&scan), vec![1, 2, 3]);
        assert!(scan.invalid_tail.is_none());
        assert_eq!(scan.end as usize, buf.len() - 4096);
    }

    #[test]
    fn torn_last_record_is_an_invalid_tail() {
        let mut buf = segment(&[1, 2, 3], 0);
        let cut = buf.len() - 5;
        buf.truncate(cut);
        let scan = scan_segment(&buf, 1);
        assert_eq!(records(&scan), vec![1, 2]);
        assert!(scan.invalid_tail.is_some());
    }

    #[test]
    fn flipped_bit_in_middle_is_corruption_not_tail() {
        let mut buf = segment(&[1, 2, 3, 4], 1024);
        buf[SEGMENT_HEADER_LEN + 60] ^= 0x10; // inside record 2
        let scan = scan_segment(&buf, 1);
        assert!(matches!(scan.items[1], ScanItem::Corrupt { .. }));
        assert!(records(&scan).contains(&4));
    }
}
