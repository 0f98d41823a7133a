//! Every directory and file name of a store, and the only place they are spelled.
//!
//! ```text
//! <store>/LOCK                          writer lock (flock)
//! <store>/MANIFEST, MANIFEST.copy       live files, atomically replaced
//! <store>/wal/<seq:020>.wal             WAL segments, named by their first sequence number
//! <store>/wal/next.prealloc             the next segment, zero-filled ahead of need
//! <store>/wal-archive/<seq:020>.wal     sealed segments kept for PITR and replicas
//! <store>/data/<coll:020>-<seq:020>.seg checkpoint data files
//! <store>/data/<coll:020>-<seq:020>.hnsw persisted HNSW graphs
//! <store>/data/<coll:020>-<seq:020>.pidx persisted payload indexes
//! <store>/snapshots/<id>/SNAPSHOT       snapshot manifest (+ MANIFEST, data/, wal/)
//! <store>/quarantine/<name>[.note]      damaged bytes kept, never deleted
//! <store>/rollback/<first:020>-<last:020>.wal[.note]  WAL records cut past a fork, kept
//! <store>/SCRUB_RESULT                  the last scrub's counts, atomically replaced
//! ```
//! TypeScript reads these names from the binding (`layout()`), never spells them again.

pub const LOCK_FILE: &str = "LOCK";
pub const MANIFEST_FILE: &str = "MANIFEST";
/// A second copy of the manifest, written after every change.
pub const MANIFEST_COPY_FILE: &str = "MANIFEST.copy";
pub const WAL_DIR: &str = "wal";
/// The WAL writer's zero-filled next segment, renamed into place when it is needed.
pub const PREALLOC_FILE: &str = "next.prealloc";
pub const ARCHIVE_DIR: &str = "wal-archive";
pub const DATA_DIR: &str = "data";
pub const SNAPSHOTS_DIR: &str = "snapshots";
pub const SNAPSHOT_FILE: &str = "SNAPSHOT";
pub const QUARANTINE_DIR: &str = "quarantine";
pub const NOTE_SUFFIX: &str = ".note";
/// WAL records cut from the log past a failover fork point (`engine/truncate.rs`), never deleted.
pub const ROLLBACK_DIR: &str = "rollback";
/// The last scrub's result (docs/format.md, "Scrub result").
pub const SCRUB_RESULT_FILE: &str = "SCRUB_RESULT";
/// Suffix of a file being written before its rename into place.
pub const TMP_SUFFIX: &str = ".tmp";
/// Suffix of a repaired copy being installed by scrub.
pub const INSTALL_SUFFIX: &str = ".scrub.tmp";
pub const WAL_EXT: &str = ".wal";
pub const DATA_EXT: &str = ".seg";
pub const GRAPH_EXT: &str = ".hnsw";
pub const PAYLOAD_EXT: &str = ".pidx";

/// `00000000000000000042.wal`: 20 digits so that names sort by sequence number.
pub fn wal_segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{WAL_EXT}")
}

pub fn parse_wal_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(WAL_EXT)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A rollback segment: the records `first_seq..=last_seq` cut from the WAL, in the WAL segment format.
pub fn rollback_file_name(first_seq: u64, last_seq: u64) -> String {
    format!("{first_seq:020}-{last_seq:020}{WAL_EXT}")
}

pub fn parse_rollback_file_name(name: &str) -> Option<(u64, u64)> {
    let (first, last) = name.strip_suffix(WAL_EXT)?.split_once('-')?;
    let num = |d: &str| (d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit())).then(|| d.parse().ok()).flatten();
    Some((num(first)?, num(last)?))
}

/// A checkpoint data file of one collection, covering the WAL through `covered_seq`.
pub fn data_file_name(collection_id: u64, covered_seq: u64) -> String {
    format!("{collection_id:020}-{covered_seq:020}{DATA_EXT}")
}

/// A persisted HNSW graph of one collection, covering the WAL through `covered_seq`.
pub fn graph_file_name(collection_id: u64, covered_seq: u64) -> String {
    format!("{collection_id:020}-{covered_seq:020}{GRAPH_EXT}")
}

/// The persisted payload indexes of one collection, as of `covered_seq`.
pub fn payload_file_name(collection_id: u64, covered_seq: u64) -> String {
    format!("{collection_id:020}-{covered_seq:020}{PAYLOAD_EXT}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_names_round_trip_and_sort() {
        assert_eq!(parse_wal_segment_name(&wal_segment_name(42)), Some(42));
        assert!(wal_segment_name(9) < wal_segment_name(10));
        assert_eq!(parse_wal_segment_name("42.wal"), None);
        assert_eq!(parse_wal_segment_name("0000000000000000004x.wal"), None);
    }
}
