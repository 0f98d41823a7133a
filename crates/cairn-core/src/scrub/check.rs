//! The vocabulary of a check: what kind of file, what was recorded for it, and what was found.
//! Invariant: a `FileCheck` lists at most `MAX_FINDINGS` findings plus one summary line, so a
//! badly damaged file cannot make a report unbounded.

use serde::{Deserialize, Serialize};

use crate::quarantine::Damage;

/// More findings than this in one file are summarised: the file is damaged either way.
const MAX_FINDINGS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// `MANIFEST` or a snapshot's copy: framing, checksum, JSON body.
    Manifest,
    /// `snapshots/<id>/SNAPSHOT`: framing, checksum, JSON body.
    SnapshotManifest,
    /// `data/*.seg`: whole-file size and xxh3 if expected; when they match, the file is
    /// byte-identical to what the engine wrote from verified memory, so its records are not
    /// hashed again. Otherwise (or with nothing expected) every record, header and footer, to
    /// locate and name the damage.
    Segment,
    /// `data/*.seg`, always record by record as well as whole-file.
    SegmentDeep,
    /// A sealed WAL segment: header and every record; invalid bytes at its end are damage.
    Wal,
    /// The last WAL segment of a closed store: an invalid tail there is a torn write that
    /// recovery truncates, not damage.
    WalTail,
    /// Any other file (`*.hnsw`): size and whole-file xxh3 against the expected values.
    Blob,
    /// A payload index file (`*.pidx`): its framing and trailing xxh3, and the recorded size
    /// and whole-file xxh3.
    PayloadIndex,
}

impl FileKind {
    pub fn parse(s: &str) -> Option<FileKind> {
        Some(match s {
            "manifest" => FileKind::Manifest,
            "snapshot-manifest" => FileKind::SnapshotManifest,
            "segment" => FileKind::Segment,
            "segment-deep" => FileKind::SegmentDeep,
            "wal" => FileKind::Wal,
            "wal-tail" => FileKind::WalTail,
            "blob" => FileKind::Blob,
            "payload-index" => FileKind::PayloadIndex,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Finding {
    pub offset: u64,
    pub kind: Damage,
    /// The record's id, when a damaged checkpoint record still names one (a hint: the damage
    /// may be in the id itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub detail: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FileCheck {
    /// Size of the file on disk (0 when missing).
    pub bytes: u64,
    /// Bytes read and hashed.
    pub read: u64,
    /// xxh3 of the whole file, when it was read to the end.
    pub xxh3: Option<String>,
    pub findings: Vec<Finding>,
    /// WAL segments: the first sequence number (from the header) and the last valid record's.
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// WAL segments: where the last valid record ends (bytes after it are zeros or damage).
    pub end: Option<u64>,
    /// Records that verified (segment and WAL files).
    pub records: u64,
    pub cancelled: bool,
}

impl FileCheck {
    pub(super) fn add(&mut self, offset: u64, kind: Damage, id: Option<String>, detail: impl Into<String>) {
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(Finding { offset, kind, id, detail: detail.into() });
        } else if self.findings.len() == MAX_FINDINGS {
            self.findings.push(Finding { offset, kind, id: None, detail: "more damage follows; not listed".into() });
        }
    }
}

/// What the manifest (or a snapshot manifest) recorded for a file.
#[derive(Clone, Copy, Debug)]
pub struct Expected {
    pub bytes: u64,
    pub xxh3: u64,
}

pub fn parse_xxh3(hex: &str) -> Option<u64> {
    u64::from_str_radix(hex, 16).ok()
}

pub(super) fn hex(v: u64) -> String {
    format!("{v:016x}")
}
