//! WAL framing (docs/format.md, "WAL segment" and "WAL record"). Little-endian throughout.

use crate::checksum::xxh3;

pub const SEGMENT_MAGIC: &[u8; 8] = b"CAIRNWAL";
pub const SEGMENT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_LEN: usize = 32;
const SEG_OFF_VERSION: usize = 8;
const SEG_OFF_FLAGS: usize = 12;
const SEG_OFF_FIRST_SEQ: usize = 16;
/// Segment flag: written with sync=none. No record in it was fsynced while it was the active
/// segment, so after a power cut any of its pages may be missing: recovery truncates it at the
/// first invalid record instead of calling a valid record after a hole corruption.
pub const SEG_FLAG_UNSYNCED: u32 = 1;
const SEG_OFF_CHECKSUM: usize = 24;

pub const RECORD_HEADER_LEN: usize = 24;
pub(crate) const REC_OFF_LEN: usize = 0;
pub(crate) const REC_OFF_TYPE: usize = 4;
pub(crate) const REC_OFF_SEQ: usize = 8;
const REC_OFF_TIME: usize = 16;
pub const RECORD_CHECKSUM_LEN: usize = 8;
pub const RECORD_ALIGN: usize = 8;
/// Largest payload accepted; a length field above it can only be garbage.
pub const MAX_PAYLOAD_LEN: usize = 1 << 30;

/// A committed batch of operations (see `batch.rs`).
pub const RECORD_TYPE_BATCH: u8 = 1;

pub fn align8(n: usize) -> usize {
    (n + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// Total on-disk size of a record with this payload length.
pub fn record_len(payload_len: usize) -> usize {
    RECORD_HEADER_LEN + align8(payload_len) + RECORD_CHECKSUM_LEN
}

pub fn encode_segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    encode_segment_header_with_flags(first_seq, 0)
}

pub fn encode_segment_header_with_flags(first_seq: u64, flags: u32) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[SEG_OFF_VERSION..SEG_OFF_VERSION + 4].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[SEG_OFF_FLAGS..SEG_OFF_FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
    h[SEG_OFF_FIRST_SEQ..SEG_OFF_FIRST_SEQ + 8].copy_from_slice(&first_seq.to_le_bytes());
    let sum = xxh3(&h[..SEG_OFF_CHECKSUM]);
    h[SEG_OFF_CHECKSUM..].copy_from_slice(&sum.to_le_bytes());
    h
}

/// Returns the segment's first sequence number, or a reason the header is invalid.
pub fn decode_segment_header(h: &[u8]) -> Result<u64, String> {
    if h.len() < SEGMENT_HEADER_LEN {
        return Err("segment shorter than its header".into());
    }
    if &h[..8] != SEGMENT_MAGIC {
        return Err("bad segment magic".into());
    }
    let sum = u64_at(h, SEG_OFF_CHECKSUM);
    if sum != xxh3(&h[..SEG_OFF_CHECKSUM]) {
        return Err("segment header checksum mismatch".into());
    }
    let version = u32_at(h, SEG_OFF_VERSION);
    if version != SEGMENT_VERSION {
        return Err(format!("unsupported segment version {version}"));
    }
    Ok(u64_at(h, SEG_OFF_FIRST_SEQ))
}

/// The flags of a header that `decode_segment_header` accepted.
pub fn segment_flags(h: &[u8]) -> u32 {
    u32_at(h, SEG_OFF_FLAGS)
}

/// Append one framed record to `out`.
pub fn encode_record(out: &mut Vec<u8>, record_type: u8, seq: u64, time_ms: u64, payload: &[u8]) {
    encode_record_parts(out, record_type, seq, time_ms, &[payload]);
}

/// Append one framed record whose payload is `parts` one after the other (a staged batch's
/// count field and chunks), without joining them first.
pub fn encode_record_parts<P: AsRef<[u8]>>(out: &mut Vec<u8>, record_type: u8, seq: u64, time_ms: u64, parts: &[P]) {
    let payload_len: usize = parts.iter().map(|p| p.as_ref().len()).sum();
    let start = out.len();
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.push(record_type);
    out.extend_from_slice(&[0u8; 3]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&time_ms.to_le_bytes());
    for p in parts {
        out.extend_from_slice(p.as_ref());
    }
    let sum = xxh3(&out[start..]);
    out.resize(start + RECORD_HEADER_LEN + align8(payload_len), 0);
    out.extend_from_slice(&sum.to_le_bytes());
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub payload_len: usize,
    pub record_type: u8,
    pub seq: u64,
    pub time_ms: u64,
}

pub enum Decoded<'a> {
    Record {
        header: RecordHeader,
        payload: &'a [u8],
        len: usize,
    },
    /// All-zero header: preallocated space, the end of written data.
    End,
    Invalid(&'static str),
}

/// Decode the record at the start of `buf`.
pub fn decode_record(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < RECORD_HEADER_LEN {
        return if buf.iter().all(|&b| b == 0) { Decoded::End } else { Decoded::Invalid("truncated header") };
    }
    let h = &buf[..RECORD_HEADER_LEN];
    if h.iter().all(|&b| b == 0) {
        return Decoded::End;
    }
    let payload_len = u32_at(h, REC_OFF_LEN) as usize;
    if payload_len > MAX_PAYLOAD_LEN {
        return Decoded::Invalid("implausible length");
    }
    let total = record_len(payload_len);
    if total > buf.len() {
        return Decoded::Invalid("record extends past end of file");
    }
    let header = RecordHeader { payload_len, record_type: h[REC_OFF_TYPE], seq: u64_at(h, REC_OFF_SEQ), time_ms: u64_at(h, REC_OFF_TIME) };
    let body_end = RECORD_HEADER_LEN + payload_len;
    let stored = u64_at(buf, total - RECORD_CHECKSUM_LEN);
    if stored != xxh3(&buf[..body_end]) {
        return Decoded::Invalid("checksum mismatch");
    }
    if buf[body_end..total - RECORD_CHECKSUM_LEN].iter().any(|&b| b != 0) || h[5..8].iter().any(|&b| b != 0) {
        return Decoded::Invalid("non-zero padding");
    }
    if header.record_type != RECORD_TYPE_BATCH {
        return Decoded::Invalid("unknown record type");
    }
    Decoded::Record { header, payload: &buf[RECORD_HEADER_LEN..body_end], len: total }
}

pub fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

pub fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_is_aligned() {
        let mut buf = Vec::new();
        encode_record(&mut buf, RECORD_TYPE_BATCH, 7, 1234, b"hello");
        assert_eq!(buf.len() % RECORD_ALIGN, 0);
        assert_eq!(buf.len(), record_len(5));
        match decode_record(&buf) {
            Decoded::Record { header, payload, len } => {
                assert_eq!(header.seq, 7);
                assert_eq!(header.time_ms, 1234);
                assert_eq!(payload, b"hello");
                assert_eq!(len, buf.len());
            }
            _ => panic!("expected a record"),
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_record(&mut buf, RECORD_TYPE_BATCH, 3, 99, b"payload bytes");
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(!matches!(decode_record(&b), Decoded::Record { .. }), "bit {bit} went undetected");
        }
    }

    #[test]
    fn segment_header_round_trips() {
        let h = encode_segment_header(42);
        assert_eq!(decode_segment_header(&h), Ok(42));
        let mut bad = h;
        bad[17] ^= 4;
        assert!(decode_segment_header(&bad).is_err());
    }
}
