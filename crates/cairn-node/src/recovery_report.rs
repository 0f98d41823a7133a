//! What recovery found when the store was opened (`RecoveryReport`), as typed objects.

use cairn_core::wal::recovery::{RecoveryReport, SkippedRange};
use napi::bindgen_prelude::BigInt;
use napi_derive::napi;

use crate::store::NativeStore;

#[napi(object, use_nullable = true)]
pub struct NativeLostRange {
    pub from_seq: BigInt,
    pub to_seq: BigInt,
}

#[napi(object, use_nullable = true)]
pub struct NativeTornTail {
    pub file: String,
    pub offset: f64,
    pub bytes: f64,
    pub unsynced_lost: Option<NativeLostRange>,
}

#[napi(object, use_nullable = true)]
pub struct NativeSkippedRange {
    pub file: String,
    pub offset: f64,
    pub from_seq: BigInt,
    pub to_seq: Option<BigInt>,
    pub reason: String,
}

#[napi(object)]
pub struct NativeBadSegmentRecord {
    pub file: String,
    pub offset: f64,
    pub reason: String,
}

#[napi(object)]
pub struct NativeIndexRebuild {
    pub collection: String,
    pub reason: String,
}

#[napi(object)]
pub struct NativeRecordRepair {
    pub collection: String,
    pub id: String,
    pub file: String,
    pub offset: f64,
    pub from: String,
}

#[napi(object)]
pub struct NativeUnreadableRecord {
    pub collection: String,
    pub id: String,
    pub file: String,
    pub offset: f64,
    pub reason: String,
}

#[napi(object)]
pub struct NativeQuarantinedFile {
    pub file: String,
    pub kept: String,
}

#[napi(object, use_nullable = true)]
pub struct NativeRecoveryReport {
    pub checkpoint_seq: BigInt,
    pub replayed_records: f64,
    pub last_seq: BigInt,
    pub torn_tail: Option<NativeTornTail>,
    pub skipped: Vec<NativeSkippedRange>,
    pub bad_segment_records: Vec<NativeBadSegmentRecord>,
    pub index_rebuilds: Vec<NativeIndexRebuild>,
    pub repaired_records: Vec<NativeRecordRepair>,
    pub unreadable_records: Vec<NativeUnreadableRecord>,
    pub quarantined: Vec<NativeQuarantinedFile>,
    pub manifest_restored: Option<String>,
}

fn skipped(s: &SkippedRange) -> NativeSkippedRange {
    NativeSkippedRange {
        file: s.file.clone(),
        offset: s.offset as f64,
        from_seq: s.from_seq.into(),
        to_seq: s.to_seq.map(BigInt::from),
        reason: s.reason.clone(),
    }
}

impl From<&RecoveryReport> for NativeRecoveryReport {
    fn from(r: &RecoveryReport) -> NativeRecoveryReport {
        NativeRecoveryReport {
            checkpoint_seq: r.checkpoint_seq.into(),
            replayed_records: r.replayed_records as f64,
            last_seq: r.last_seq.into(),
            torn_tail: r.torn_tail.as_ref().map(|t| NativeTornTail {
                file: t.file.clone(),
                offset: t.offset as f64,
                bytes: t.bytes as f64,
                unsynced_lost: t.unsynced_lost.as_ref().map(|l| NativeLostRange { from_seq: l.from_seq.into(), to_seq: l.to_seq.into() }),
            }),
            skipped: r.skipped.iter().map(skipped).collect(),
            bad_segment_records: r
                .bad_segment_records
                .iter()
                .map(|s| NativeBadSegmentRecord { file: s.file.clone(), offset: s.offset as f64, reason: s.reason.clone() })
                .collect(),
            index_rebuilds: r
                .index_rebuilds
                .iter()
                .map(|i| NativeIndexRebuild { collection: i.collection.clone(), reason: i.reason.clone() })
                .collect(),
            repaired_records: r
                .repaired_records
                .iter()
                .map(|x| NativeRecordRepair {
                    collection: x.collection.clone(),
                    id: x.id.clone(),
                    file: x.file.clone(),
                    offset: x.offset as f64,
                    from: x.from.clone(),
                })
                .collect(),
            unreadable_records: r
                .unreadable_records
                .iter()
                .map(|x| NativeUnreadableRecord {
                    collection: x.collection.clone(),
                    id: x.id.clone(),
                    file: x.file.clone(),
                    offset: x.offset as f64,
                    reason: x.reason.clone(),
                })
                .collect(),
            quarantined: r.quarantined.iter().map(|q| NativeQuarantinedFile { file: q.file.clone(), kept: q.kept.clone() }).collect(),
            manifest_restored: r.manifest_restored.clone(),
        }
    }
}

#[napi]
impl NativeStore {
    /// What recovery found on open.
    #[napi]
    pub fn recovery_report(&self) -> NativeRecoveryReport {
        NativeRecoveryReport::from(self.engine.recovery_report())
    }
}
