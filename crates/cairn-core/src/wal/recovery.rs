//! Replays the WAL on open and classifies every problem by the recovery mode, named after RocksDB's
//! `WALRecoveryMode` (`kTolerateCorruptedTailRecords`, `kAbsoluteConsistency`,
//! `kSkipAnyCorruptedRecords`; `kPointInTimeRecovery`, which silently stops at the first damage,
//! has no counterpart here):
//! - `TolerateTornTail`: an invalid tail of the last segment is a write that was never
//!   acknowledged, so it is truncated; any other damage fails the open with file and offset.
//! - `AbsoluteConsistency`: any invalid byte fails the open, a torn tail included.
//! - `SkipCorrupt`: damaged records are skipped and every lost sequence range is reported.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::reader::{scan_segment, ScanItem};
use super::record::{decode_segment_header, segment_flags, SEG_FLAG_UNSYNCED};
use super::writer::is_leftover;
use crate::error::{Error, Result};
use crate::layout::parse_wal_segment_name as parse_segment_name;
use crate::storage::Storage;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryMode {
    TolerateTornTail,
    AbsoluteConsistency,
    SkipCorrupt,
}

impl RecoveryMode {
    pub fn parse(s: &str) -> Option<RecoveryMode> {
        match s {
            "tolerate-torn-tail" => Some(RecoveryMode::TolerateTornTail),
            "absolute-consistency" => Some(RecoveryMode::AbsoluteConsistency),
            "skip-corrupt" => Some(RecoveryMode::SkipCorrupt),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TornTail {
    pub file: String,
    pub offset: u64,
    pub bytes: u64,
    /// Valid records found after a hole in a segment written with sync=none (never fsynced,
    /// so a power cut may keep any subset of its pages): dropped with the tail, so that what is
    /// served stays a prefix of the history. `None` when nothing valid followed.
    pub unsynced_lost: Option<LostRange>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LostRange {
    pub from_seq: u64,
    pub to_seq: u64,
}

/// A range of sequence numbers lost to corruption (`to_seq` is `None` when the end is unknown).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SkippedRange {
    pub file: String,
    pub offset: u64,
    pub from_seq: u64,
    pub to_seq: Option<u64>,
    pub reason: String,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RecoveryReport {
    pub checkpoint_seq: u64,
    pub replayed_records: u64,
    pub last_seq: u64,
    pub torn_tail: Option<TornTail>,
    pub skipped: Vec<SkippedRange>,
    /// Checkpoint-file records that failed their checksum (skip-corrupt only).
    pub bad_segment_records: Vec<SkippedRange>,
    /// Collections whose persisted HNSW graph was missing or unusable and is being rebuilt.
    pub index_rebuilds: Vec<IndexRebuild>,
    /// Damaged checkpoint records rebuilt from the write that produced them.
    pub repaired_records: Vec<RecordRepair>,
    /// Damaged checkpoint records of known identity that could not be repaired: reads of them
    /// fail with CAIRN_CORRUPTION.
    pub unreadable_records: Vec<UnreadableRecordReport>,
    /// Damaged files this open replaced, and where their bytes were kept.
    pub quarantined: Vec<QuarantinedFile>,
    /// Why `MANIFEST` was unusable when this open read `MANIFEST.copy` instead (and rewrote it).
    pub manifest_restored: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct QuarantinedFile {
    /// The damaged file, relative to the store directory.
    pub file: String,
    /// Its bytes, kept under `quarantine/` (relative to the store directory).
    pub kept: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RecordRepair {
    pub collection: String,
    pub id: String,
    pub file: String,
    pub offset: u64,
    /// Where the good bytes came from, e.g. the WAL segment holding the write.
    pub from: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct UnreadableRecordReport {
    pub collection: String,
    pub id: String,
    pub file: String,
    pub offset: u64,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IndexRebuild {
    pub collection: String,
    pub reason: String,
}

pub struct WalSegmentInfo {
    pub path: PathBuf,
    pub first_seq: u64,
    pub last_seq: Option<u64>,
    /// Where valid data ends; writing may resume here.
    pub end: u64,
}

pub struct Replay {
    pub segments: Vec<WalSegmentInfo>,
    pub last_seq: u64,
    pub last_time_ms: u64,
    /// The torn tail to truncate: (segment path, offset).
    pub truncate: Option<(PathBuf, u64)>,
}

fn file_name(p: &Path) -> String {
    p.display().to_string()
}

/// Replay every record with a sequence number above `after_seq`, in order, through `apply`.
/// `closed_cleanly`: the manifest records a clean close, which fsynced every segment, so no
/// segment can have lost pages and the `sync: 'none'` flag does not excuse a hole.
pub fn replay(
    storage: &dyn Storage,
    wal_dir: &Path,
    after_seq: u64,
    mode: RecoveryMode,
    closed_cleanly: bool,
    report: &mut RecoveryReport,
    mut apply: impl FnMut(u64, u64, &[u8]) -> Result<()>,
) -> Result<Replay> {
    let names = storage.list(wal_dir).map_err(|e| Error::io(wal_dir, e))?;
    let mut segs: Vec<(u64, PathBuf)> = Vec::new();
    for name in names {
        if let Some(seq) = parse_segment_name(&name) {
            segs.push((seq, wal_dir.join(name)));
        } else if is_leftover(&name) {
            storage.remove(&wal_dir.join(&name)).map_err(|e| Error::io(wal_dir.join(&name), e))?;
        }
    }
    segs.sort();
    let skip = mode == RecoveryMode::SkipCorrupt;
    let mut out = Replay { segments: Vec::new(), last_seq: after_seq, last_time_ms: 0, truncate: None };
    // The last sequence number seen in the log, applied or already checkpointed.
    let mut prev: Option<u64> = None;
    let count = segs.len();
    for (i, (name_seq, path)) in segs.into_iter().enumerate() {
        let is_last = i + 1 == count;
        let buf = storage.read(&path).map_err(|e| Error::io(&path, e))?;
        let first_seq = match decode_segment_header(&buf) {
            Ok(s) if s == name_seq => s,
            Ok(s) => {
                let reason = format!("segment header says first seq {s}, name says {name_seq}");
                return Err(Error::corruption(&path, 0, reason));
            }
            Err(reason) => {
                if skip {
                    report.skipped.push(SkippedRange { file: file_name(&path), offset: 0, from_seq: name_seq, to_seq: None, reason });
                    continue;
                }
                return Err(Error::corruption(&path, 0, reason));
            }
        };
        let mut scan = scan_segment(&buf, first_seq);
        let mut unsynced_lost = None;
        if is_last && !closed_cleanly && segment_flags(&buf) & SEG_FLAG_UNSYNCED != 0 {
            // Nothing in this segment was ever fsynced: the first invalid record is where the
            // pages that reached the disk stop being contiguous, i.e. the torn tail.
            if let Some(cut) = scan.items.iter().position(|it| matches!(it, ScanItem::Corrupt { .. })) {
                let (offset, reason) = match scan.items[cut] {
                    ScanItem::Corrupt { offset, reason } => (offset, reason),
                    ScanItem::Record { .. } => unreachable!("position matched a Corrupt item"),
                };
                let seqs: Vec<u64> = scan.items[cut..]
                    .iter()
                    .filter_map(|it| match it {
                        ScanItem::Record { header, .. } => Some(header.seq),
                        ScanItem::Corrupt { .. } => None,
                    })
                    .collect();
                unsynced_lost = seqs.first().zip(seqs.last()).map(|(&from_seq, &to_seq)| LostRange { from_seq, to_seq });
                scan.items.truncate(cut);
                scan.end = offset;
                scan.invalid_tail = Some(reason);
                scan.last_seq = scan.items.iter().rev().find_map(|it| match it {
                    ScanItem::Record { header, .. } => Some(header.seq),
                    ScanItem::Corrupt { .. } => None,
                });
            }
        }
        for item in scan.items {
            match item {
                ScanItem::Corrupt { offset, reason } => {
                    if !skip {
                        return Err(Error::corruption(&path, offset, reason));
                    }
                    report.skipped.push(SkippedRange {
                        file: file_name(&path),
                        offset,
                        from_seq: prev.map_or(first_seq, |p| p + 1),
                        to_seq: None,
                        reason: reason.to_string(),
                    });
                }
                ScanItem::Record { offset, header, payload_start, .. } => {
                    let expected = prev.map_or(header.seq.min(after_seq + 1), |p| p + 1);
                    if header.seq != expected {
                        let gap = format!("sequence numbers {expected}..{} are missing", header.seq - 1);
                        if !skip || header.seq < expected {
                            return Err(Error::corruption(&path, offset, gap));
                        }
                        match report.skipped.last_mut() {
                            Some(r) if r.to_seq.is_none() => r.to_seq = Some(header.seq - 1),
                            _ => report.skipped.push(SkippedRange {
                                file: file_name(&path),
                                offset,
                                from_seq: expected,
                                to_seq: Some(header.seq - 1),
                                reason: gap,
                            }),
                        }
                    }
                    prev = Some(header.seq);
                    if header.seq <= after_seq {
                        continue;
                    }
                    let payload = &buf[payload_start..payload_start + header.payload_len];
                    match apply(header.seq, header.time_ms, payload) {
                        Ok(()) => report.replayed_records += 1,
                        Err(e) if skip => report.skipped.push(SkippedRange {
                            file: file_name(&path),
                            offset,
                            from_seq: header.seq,
                            to_seq: Some(header.seq),
                            reason: format!("record does not apply: {e}"),
                        }),
                        Err(e) => return Err(Error::corruption(&path, offset, format!("record does not apply: {e}"))),
                    }
                    out.last_seq = header.seq;
                    out.last_time_ms = header.time_ms;
                }
            }
        }
        if let Some(reason) = scan.invalid_tail {
            let tail = TornTail {
                file: file_name(&path),
                offset: scan.end,
                bytes: buf.len() as u64 - scan.end,
                unsynced_lost: unsynced_lost.clone(),
            };
            if !is_last {
                if !skip {
                    return Err(Error::corruption(&path, scan.end, format!("sealed segment ends in invalid bytes ({reason})")));
                }
                report.skipped.push(SkippedRange {
                    file: tail.file.clone(),
                    offset: scan.end,
                    from_seq: prev.map_or(first_seq, |p| p + 1),
                    to_seq: None,
                    reason: reason.to_string(),
                });
            } else if mode == RecoveryMode::AbsoluteConsistency {
                return Err(Error::corruption(&path, scan.end, format!("torn write at the end of the log ({reason})")));
            } else {
                out.truncate = Some((path.clone(), scan.end));
                report.torn_tail = Some(tail);
            }
        }
        out.segments.push(WalSegmentInfo { path, first_seq, last_seq: scan.last_seq, end: scan.end });
    }
    // Records at or below `after_seq` may be gone (archived); anything above must be continuous.
    if let Some(first) = out.segments.first() {
        if first.first_seq > after_seq + 1 && !skip {
            return Err(Error::corruption(
                &first.path,
                0,
                format!("WAL starts at seq {} but the checkpoint covers only up to {after_seq}", first.first_seq),
            ));
        }
    }
    report.last_seq = out.last_seq;
    Ok(out)
}
