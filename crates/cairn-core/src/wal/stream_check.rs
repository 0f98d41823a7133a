//! Checks a WAL segment as its bytes arrive in order, holding one record header and one hash
//! state, never the whole file: the scrub's fast path for intact segments.
//!
//! It accepts exactly the segments `reader::scan_segment` finds clean: a valid header (whose
//! first sequence number matches the file name), valid records numbered on from it, and only
//! zeros after the last one. On anything else it gives up, and the caller scans the file with
//! `scan_segment` to locate and classify the damage, so the findings never depend on this path.

use super::record::{
    align8, decode_record, decode_segment_header, record_len, u32_at, u64_at, Decoded, MAX_PAYLOAD_LEN, RECORD_CHECKSUM_LEN,
    RECORD_HEADER_LEN, RECORD_TYPE_BATCH, REC_OFF_LEN, REC_OFF_SEQ, REC_OFF_TYPE, SEGMENT_HEADER_LEN,
};
use crate::checksum::blocks::Xxh3Blocks;

/// What a clean segment holds, as `scan_segment` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanSegment {
    pub first_seq: u64,
    /// The last record's sequence number; None without records.
    pub last_seq: Option<u64>,
    /// Offset just past the last record.
    pub end: u64,
    pub records: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    SegmentHeader,
    RecordHeader,
    /// A record that did not arrive in one piece: payload bytes still to hash, then padding.
    Payload {
        left: usize,
        pad: usize,
    },
    Padding {
        left: usize,
    },
    Checksum,
    /// After an all-zero record header: the rest must be zeros.
    Zeros,
    GaveUp,
}

pub struct StreamCheck {
    phase: Phase,
    /// The first sequence number the file name gives, if it is a segment name.
    named: Option<u64>,
    /// A header or checksum split across two `feed` calls.
    pending: [u8; SEGMENT_HEADER_LEN],
    pending_len: usize,
    first_seq: u64,
    /// The sequence number the next record must carry.
    next_seq: u64,
    records: u64,
    end: u64,
    /// Hash of the record being assembled (header and payload).
    hasher: Xxh3Blocks,
    record_len: usize,
}

impl StreamCheck {
    pub fn new(named: Option<u64>) -> StreamCheck {
        StreamCheck {
            phase: Phase::SegmentHeader,
            named,
            pending: [0; SEGMENT_HEADER_LEN],
            pending_len: 0,
            first_seq: 0,
            next_seq: 0,
            records: 0,
            end: SEGMENT_HEADER_LEN as u64,
            hasher: Xxh3Blocks::default(),
            record_len: 0,
        }
    }

    /// Copy up to `want - pending_len` bytes into `pending`; returns how many were taken.
    fn fill(&mut self, data: &[u8], want: usize) -> usize {
        let n = (want - self.pending_len).min(data.len());
        self.pending[self.pending_len..self.pending_len + n].copy_from_slice(&data[..n]);
        self.pending_len += n;
        n
    }

    fn accept(&mut self, len: usize) {
        self.records += 1;
        self.next_seq += 1;
        self.end += len as u64;
        self.phase = Phase::RecordHeader;
    }

    /// Start a record whose complete header is in `pending`; the rest arrives in later bytes.
    fn begin_record(&mut self) {
        let h = &self.pending[..RECORD_HEADER_LEN];
        self.pending_len = 0;
        if h.iter().all(|&b| b == 0) {
            self.phase = Phase::Zeros;
            return;
        }
        // The checks `decode_record` makes on the header, and the sequence check of `scan_segment`.
        let payload = u32_at(h, REC_OFF_LEN) as usize;
        let valid = payload <= MAX_PAYLOAD_LEN
            && h[REC_OFF_TYPE] == RECORD_TYPE_BATCH
            && h[REC_OFF_TYPE + 1..REC_OFF_SEQ].iter().all(|&b| b == 0)
            && u64_at(h, REC_OFF_SEQ) == self.next_seq;
        if !valid {
            self.phase = Phase::GaveUp;
            return;
        }
        self.hasher = Xxh3Blocks::default();
        self.hasher.update(h);
        self.record_len = record_len(payload);
        self.phase = Phase::Payload { left: payload, pad: align8(payload) - payload };
    }

    /// Feed the next bytes of the file. False once it has given up (later bytes are ignored).
    pub fn feed(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            match self.phase {
                Phase::GaveUp => return false,
                Phase::SegmentHeader => {
                    let n = self.fill(data, SEGMENT_HEADER_LEN);
                    data = &data[n..];
                    if self.pending_len == SEGMENT_HEADER_LEN {
                        self.pending_len = 0;
                        match decode_segment_header(&self.pending) {
                            Ok(first) if self.named.is_none_or(|n| n == first) => {
                                self.first_seq = first;
                                self.next_seq = first;
                                self.phase = Phase::RecordHeader;
                            }
                            _ => self.phase = Phase::GaveUp,
                        }
                    }
                }
                Phase::RecordHeader if self.pending_len == 0 && data.len() >= RECORD_HEADER_LEN => {
                    if data[..RECORD_HEADER_LEN].iter().all(|&b| b == 0) {
                        self.phase = Phase::Zeros;
                        continue;
                    }
                    let total = record_len(u32_at(data, REC_OFF_LEN) as usize);
                    if data.len() >= total {
                        // The whole record is here: the reader's own decoder.
                        match decode_record(&data[..total]) {
                            Decoded::Record { header, len, .. } if header.seq == self.next_seq => {
                                self.accept(len);
                                data = &data[len..];
                            }
                            _ => self.phase = Phase::GaveUp,
                        }
                    } else {
                        let n = self.fill(data, RECORD_HEADER_LEN);
                        data = &data[n..];
                        self.begin_record();
                    }
                }
                Phase::RecordHeader => {
                    let n = self.fill(data, RECORD_HEADER_LEN);
                    data = &data[n..];
                    if self.pending_len == RECORD_HEADER_LEN {
                        self.begin_record();
                    }
                }
                Phase::Payload { left, pad } => {
                    let n = left.min(data.len());
                    self.hasher.update(&data[..n]);
                    data = &data[n..];
                    self.phase = if n == left { Phase::Padding { left: pad } } else { Phase::Payload { left: left - n, pad } };
                }
                Phase::Padding { left } => {
                    let n = left.min(data.len());
                    if data[..n].iter().any(|&b| b != 0) {
                        self.phase = Phase::GaveUp;
                        continue;
                    }
                    data = &data[n..];
                    self.phase = if n == left { Phase::Checksum } else { Phase::Padding { left: left - n } };
                }
                Phase::Checksum => {
                    let n = self.fill(data, RECORD_CHECKSUM_LEN);
                    data = &data[n..];
                    if self.pending_len == RECORD_CHECKSUM_LEN {
                        self.pending_len = 0;
                        if u64_at(&self.pending, 0) == self.hasher.digest() {
                            self.accept(self.record_len);
                        } else {
                            self.phase = Phase::GaveUp;
                        }
                    }
                }
                Phase::Zeros => {
                    // OR-reduce (vectorises), rather than a short-circuiting search.
                    if data.iter().fold(0u8, |a, &b| a | b) != 0 {
                        self.phase = Phase::GaveUp;
                    }
                    data = &[];
                }
            }
        }
        self.phase != Phase::GaveUp
    }

    /// The segment, if every byte was fed and it is clean.
    pub fn finish(&self) -> Option<CleanSegment> {
        let clean = match self.phase {
            Phase::Zeros => true,
            // A short run of zeros at the very end is no record header, as in `decode_record`.
            Phase::RecordHeader => self.pending[..self.pending_len].iter().all(|&b| b == 0),
            Phase::Payload { .. } | Phase::Padding { .. } | Phase::Checksum | Phase::SegmentHeader | Phase::GaveUp => false,
        };
        clean.then(|| CleanSegment {
            first_seq: self.first_seq,
            last_seq: (self.records > 0).then(|| self.next_seq - 1),
            end: self.end,
            records: self.records,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::reader::{scan_segment, ScanItem};
    use crate::wal::record::{encode_record, encode_segment_header};

    /// A segment of records with payloads of the given lengths, then `zeros` zero bytes.
    fn segment(first: u64, payloads: &[usize], zeros: usize) -> Vec<u8> {
        let mut buf = encode_segment_header(first).to_vec();
        for (i, &n) in payloads.iter().enumerate() {
            let payload: Vec<u8> = (0..n).map(|j| (j * 31 + i * 7) as u8 | 1).collect();
            encode_record(&mut buf, RECORD_TYPE_BATCH, first + i as u64, 1000 + i as u64, &payload);
        }
        buf.resize(buf.len() + zeros, 0);
        buf
    }

    /// What `scan_segment` (the reference) says, in the shape of a clean result; None if it
    /// finds anything wrong.
    fn reference(buf: &[u8], named: Option<u64>) -> Option<CleanSegment> {
        let first = decode_segment_header(buf).ok()?;
        if named.is_some_and(|n| n != first) {
            return None;
        }
        let scan = scan_segment(buf, first);
        let mut records = 0;
        for item in &scan.items {
            match item {
                ScanItem::Record { .. } => records += 1,
                ScanItem::Corrupt { .. } => return None,
            }
        }
        if scan.invalid_tail.is_some() {
            return None;
        }
        Some(CleanSegment { first_seq: first, last_seq: scan.last_seq, end: scan.end, records })
    }

    fn streamed(buf: &[u8], named: Option<u64>, piece: usize) -> Option<CleanSegment> {
        let mut c = StreamCheck::new(named);
        for p in buf.chunks(piece) {
            if !c.feed(p) {
                break;
            }
        }
        c.finish()
    }

    fn next(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    #[test]
    fn clean_segments_give_what_the_reader_gives_for_any_chunking() {
        let cases = [
            segment(5, &[], 0),
            segment(5, &[], 100),
            segment(5, &[0, 1, 7, 8, 9], 0),
            segment(5, &[13, 3000, 100_000, 20], 5),
            segment(9, &[300_000], 0),
        ];
        for buf in &cases {
            let want = reference(buf, None);
            assert!(want.is_some());
            for piece in [1, 7, 24, 1000, 4096, 131_072, buf.len()] {
                assert_eq!(streamed(buf, None, piece), want, "piece {piece}");
            }
        }
    }

    #[test]
    fn every_damage_makes_it_give_up_exactly_when_the_reader_finds_damage() {
        let good = segment(40, &[10, 2000, 5, 70_000, 64, 8, 1500], 40);
        let mut x = 0x1234_5678_9abc_def1u64;
        for round in 0..3000 {
            let mut b = good.clone();
            match round % 6 {
                0 => {
                    let bit = (next(&mut x) % (b.len() as u64 * 8)) as usize;
                    b[bit / 8] ^= 1 << (bit % 8);
                }
                1 => {
                    let at = (next(&mut x) % b.len() as u64) as usize;
                    let n = (next(&mut x) % 4096) as usize;
                    let end = (at + n).min(b.len());
                    b[at..end].fill(0);
                }
                2 => b.truncate((next(&mut x) % b.len() as u64) as usize),
                3 => b.push((next(&mut x) % 256) as u8),
                4 => {
                    // A byte written into the zero tail, or past it.
                    let at = b.len() - 1 - (next(&mut x) % 60) as usize;
                    b[at] = (next(&mut x) % 255) as u8 + 1;
                }
                _ => {
                    let at = (next(&mut x) % b.len() as u64) as usize;
                    b[at] = b[at].wrapping_add(1);
                }
            }
            let named = if round % 11 == 0 { Some(41) } else { Some(40) };
            let want = reference(&b, named);
            for piece in [3, 100, 4096, b.len().max(1)] {
                assert_eq!(streamed(&b, named, piece), want, "round {round}, piece {piece}");
            }
        }
    }
}
