//! WAL segments decoded for TypeScript (backups read their records' sequence numbers and
//! times); the engine's own reader (`wal::reader::scan_segment`) does the decoding.

use cairn_core::wal::reader::{scan_segment, ScanItem};
use cairn_core::wal::record::{decode_segment_header, SEGMENT_HEADER_LEN};
use napi::bindgen_prelude::{BigInt, Buffer};
use napi::Env;
use napi_derive::napi;

use crate::errors::{sync, Failure};

/// Bytes of a WAL segment's header; records start after it.
#[napi]
pub const WAL_SEGMENT_HEADER_BYTES: u32 = SEGMENT_HEADER_LEN as u32;

/// A valid record of a WAL segment.
#[napi(object)]
pub struct NativeWalRecord {
    pub offset: f64,
    pub seq: BigInt,
    pub time_ms: f64,
    pub payload_bytes: u32,
}

/// Invalid bytes followed later in the segment by a valid record: corruption, never a torn write.
#[napi(object)]
pub struct NativeWalDamage {
    pub offset: f64,
    pub reason: String,
}

#[napi(object, use_nullable = true)]
pub struct NativeWalSegment {
    /// From the segment header.
    pub first_seq: BigInt,
    /// Valid records in file order.
    pub records: Vec<NativeWalRecord>,
    pub damage: Vec<NativeWalDamage>,
    /// Offset just past the last valid record (or the header): where writing would resume.
    pub end: f64,
    /// Why the non-zero bytes after `end` are invalid, when there are any.
    pub invalid_tail: Option<String>,
}

/// Decode a whole WAL segment (header and records, each record's checksum checked). A bad
/// header throws `CAIRN_CORRUPTION` at offset 0.
#[napi]
pub fn decode_wal_segment(env: Env, segment: Buffer) -> napi::Result<NativeWalSegment> {
    sync(&env, || {
        let first_seq = decode_segment_header(&segment).map_err(|reason| Failure::corrupt(0, reason))?;
        let scan = scan_segment(&segment, first_seq);
        let mut records = Vec::new();
        let mut damage = Vec::new();
        for item in scan.items {
            match item {
                ScanItem::Record { offset, header, .. } => records.push(NativeWalRecord {
                    offset: offset as f64,
                    seq: header.seq.into(),
                    time_ms: header.time_ms as f64,
                    payload_bytes: header.payload_len as u32,
                }),
                ScanItem::Corrupt { offset, reason } => damage.push(NativeWalDamage { offset: offset as f64, reason: reason.to_string() }),
            }
        }
        Ok(NativeWalSegment {
            first_seq: first_seq.into(),
            records,
            damage,
            end: scan.end as f64,
            invalid_tail: scan.invalid_tail.map(str::to_string),
        })
    })
}
