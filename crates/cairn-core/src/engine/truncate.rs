//! Cut a closed store's WAL back to a fork point, keeping what it cuts: every record from
//! `from_seq` on is first copied into `rollback/` as a WAL segment with a note, fsynced, and
//! only then removed from `wal/` (docs/format.md, "Rollback"). Failover uses it when an old
//! primary comes back holding records that the new primary's log does not have: they were never
//! acknowledged at majority, so the node cuts them and follows again, and they stay readable.
//!
//! Crash safety, step by step (a crash between any two leaves a store that opens):
//! 1. the rollback segment and its note: temp file, fsync, rename, fsync of `rollback/` and of
//!    the store directory. Nothing is destroyed before this is durable.
//! 2. the manifest's clean-shutdown mark is cleared (atomic replace): otherwise an open after
//!    the cut would take the shorter WAL for a lost tail.
//! 3. segments wholly past the cut are removed, newest first, then `wal/` is fsynced: the WAL
//!    still ends in a valid record, with no gap.
//! 4. the segment holding `from_seq` is cut to the offset of that record and fdatasynced (the
//!    size change is metadata fdatasync persists).
//!
//! A crash after step 1 and before 4 leaves records past the cut in `wal/`: running the cut
//! again finishes it (it writes a second rollback segment with the records still there; the
//! first, complete one stays). Records covered by a checkpoint cannot be cut: their effects are
//! in the data files, so the call refuses (`InvalidArgument`) and changes nothing.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::clock::now_ms;
use crate::durable::write_file_atomic;
use crate::error::{Error, Result};
use crate::layout::{parse_wal_segment_name, rollback_file_name, LOCK_FILE, NOTE_SUFFIX, ROLLBACK_DIR, WAL_DIR};
use crate::manifest;
use crate::storage::Storage;
use crate::wal::reader::{scan_segment, ScanItem};
use crate::wal::record::{decode_segment_header, encode_segment_header, SEGMENT_HEADER_LEN};

/// What a cut moved into `rollback/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rollback {
    /// The rollback segment, relative to the store directory (`rollback/<first>-<last>.wal`).
    pub file: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: u64,
    /// Bytes of records (the segment header not counted).
    pub bytes: u64,
}

/// The note written beside a rollback segment (`.note`, UTF-8 JSON).
#[derive(Serialize)]
struct RollbackNote<'a> {
    file: &'a str,
    first_seq: u64,
    last_seq: u64,
    records: u64,
    bytes: u64,
    time_ms: u64,
    /// Why the records were cut, from the caller (failover names the epochs and the primary).
    reason: &'a str,
}

/// Where the cut falls: the segment holding `from_seq` and that record's offset.
struct Found {
    /// The first seq in the segment's name.
    first: u64,
    segment: PathBuf,
    offset: u64,
}

/// Cut every WAL record from `from_seq` on out of the closed store at `dir`, saving them under
/// `rollback/` first. `None` when the WAL holds no record at or after `from_seq` (nothing to do,
/// so a repeated call is harmless). Takes the store's writer lock for the duration
/// (`Locked` if the store is open).
pub fn truncate_wal(storage: &dyn Storage, dir: &Path, from_seq: u64, reason: &str) -> Result<Option<Rollback>> {
    if from_seq == 0 {
        return Err(Error::InvalidArgument("fromSeq must be at least 1".into()));
    }
    let lock_path = dir.join(LOCK_FILE);
    if !storage.exists(&dir.join(WAL_DIR)) {
        return Err(Error::NotFound(format!("{} is not a store (no {WAL_DIR}/)", dir.display())));
    }
    let _guard = storage.lock(&lock_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => Error::Locked(dir.to_path_buf()),
        _ => Error::io(&lock_path, e),
    })?;
    let mut manifest = manifest::load(storage, dir)?.unwrap_or_default();
    if manifest.checkpoint_seq >= from_seq {
        return Err(Error::InvalidArgument(format!(
            "records up to seq {} are in checkpoint files; the WAL can be cut only after them (asked from seq {from_seq})",
            manifest.checkpoint_seq
        )));
    }

    // Scan the WAL: the records from `from_seq` on, byte for byte, and where the cut falls.
    let wal_dir = dir.join(WAL_DIR);
    let mut segments: Vec<(u64, PathBuf)> = storage
        .list(&wal_dir)
        .map_err(|e| Error::io(&wal_dir, e))?
        .iter()
        .filter_map(|n| parse_wal_segment_name(n).map(|s| (s, wal_dir.join(n))))
        .collect();
    segments.sort();
    let mut cut: Option<Found> = None;
    let mut records = Vec::new();
    let (mut count, mut last_seq) = (0u64, 0u64);
    for (first, path) in &segments {
        let buf = storage.read(path).map_err(|e| Error::io(path, e))?;
        if buf.len() < SEGMENT_HEADER_LEN {
            return Err(Error::corruption(path, 0, "segment shorter than its header"));
        }
        decode_segment_header(&buf[..SEGMENT_HEADER_LEN]).map_err(|r| Error::corruption(path, 0, r))?;
        let scan = scan_segment(&buf, *first);
        if scan.last_seq.is_none_or(|l| l < from_seq) {
            continue;
        }
        for item in &scan.items {
            match item {
                ScanItem::Corrupt { offset, reason } => {
                    // The copy would miss records: refuse rather than cut what cannot be kept.
                    return Err(Error::corruption(path, *offset, format!("{reason}; the WAL cannot be cut past damage")));
                }
                ScanItem::Record { offset, header, len, .. } if header.seq >= from_seq => {
                    if header.seq != last_seq + 1 && count > 0 {
                        return Err(Error::corruption(path, *offset, format!("seq {} follows seq {last_seq}", header.seq)));
                    }
                    if count == 0 {
                        if header.seq != from_seq {
                            return Err(Error::corruption(
                                path,
                                *offset,
                                format!("the WAL has no record {from_seq} (next: {})", header.seq),
                            ));
                        }
                        cut = Some(Found { first: *first, segment: path.clone(), offset: *offset });
                    }
                    let start = *offset as usize;
                    records.extend_from_slice(&buf[start..start + len]);
                    count += 1;
                    last_seq = header.seq;
                }
                ScanItem::Record { .. } => {}
            }
        }
    }
    let Some(cut) = cut else { return Ok(None) };
    // Every segment after the cut one goes, empty ones included (a segment started by an open).
    let later: Vec<&PathBuf> = segments.iter().filter(|(first, _)| *first > cut.first).map(|(_, p)| p).collect();

    // 1. The copy, durable before anything is removed.
    let rollback_dir = dir.join(ROLLBACK_DIR);
    storage.create_dir_all(&rollback_dir).map_err(|e| Error::io(&rollback_dir, e))?;
    // durability: the new rollback/ directory's name.
    storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    let name = rollback_file_name(from_seq, last_seq);
    let file = format!("{ROLLBACK_DIR}/{name}");
    let path = rollback_dir.join(&name);
    let mut segment = encode_segment_header(from_seq).to_vec();
    segment.extend_from_slice(&records);
    write_file_atomic(storage, &path, &segment).map_err(|e| Error::io(&path, e))?;
    let rollback = Rollback { file: file.clone(), first_seq: from_seq, last_seq, records: count, bytes: records.len() as u64 };
    let note =
        RollbackNote { file: &file, first_seq: from_seq, last_seq, records: count, bytes: rollback.bytes, time_ms: now_ms(), reason };
    let note_bytes = serde_json::to_vec_pretty(&note).map_err(|e| Error::InvalidArgument(format!("rollback note: {e}")))?;
    let note_path = rollback_dir.join(format!("{name}{NOTE_SUFFIX}"));
    write_file_atomic(storage, &note_path, &note_bytes).map_err(|e| Error::io(&note_path, e))?;

    // 2. A clean-shutdown mark would make the shorter WAL look like a lost tail.
    if manifest.clean_shutdown_seq.is_some() {
        manifest.clean_shutdown_seq = None;
        manifest::store(storage, dir, &manifest)?;
    }

    // 3. Whole segments past the cut, newest first, so the WAL never has a gap.
    for p in later.iter().rev() {
        storage.remove(p).map_err(|e| Error::io(p, e))?;
    }
    if !later.is_empty() {
        // durability: the removals must be durable before the cut segment shrinks.
        storage.sync_dir(&wal_dir).map_err(|e| Error::io(&wal_dir, e))?;
    }

    // 4. The segment holding `from_seq` ends just before it.
    let f = storage.open(&cut.segment).map_err(|e| Error::io(&cut.segment, e))?;
    f.set_len(cut.offset).map_err(|e| Error::io(&cut.segment, e))?;
    f.sync_data().map_err(|e| Error::io(&cut.segment, e))?;
    Ok(Some(rollback))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::layout::{parse_rollback_file_name, wal_segment_name};
    use crate::storage::OsStorage;
    use crate::wal::record::{encode_record, RECORD_TYPE_BATCH};

    fn segment(first: u64, last: u64) -> Vec<u8> {
        let mut buf = encode_segment_header(first).to_vec();
        for s in first..=last {
            encode_record(&mut buf, RECORD_TYPE_BATCH, s, s, &[s as u8; 11]);
        }
        buf
    }

    #[test]
    fn refuses_a_checkpointed_seq_and_an_open_store() {
        // The real file system: the writer lock is an flock there.
        let root = std::env::temp_dir().join(format!("cairn-truncate-{}", std::process::id()));
        let fs: Arc<dyn Storage> = Arc::new(OsStorage);
        let _ = fs.remove_dir_all(&root);
        let dir = root.as_path();
        fs.create_dir_all(&dir.join(WAL_DIR)).expect("dir");
        write_file_atomic(fs.as_ref(), &dir.join(WAL_DIR).join(wal_segment_name(1)), &segment(1, 5)).expect("segment");
        manifest::store(fs.as_ref(), dir, &manifest::Manifest { checkpoint_seq: 3, ..Default::default() }).expect("manifest");
        let e = truncate_wal(fs.as_ref(), dir, 3, "test").expect_err("checkpointed");
        assert_eq!(e.code(), "CAIRN_INVALID_ARGUMENT");
        let guard = fs.lock(&dir.join(LOCK_FILE)).expect("lock");
        assert_eq!(truncate_wal(fs.as_ref(), dir, 4, "test").expect_err("locked").code(), "CAIRN_LOCKED");
        drop(guard);
        let r = truncate_wal(fs.as_ref(), dir, 4, "test").expect("cut").expect("records cut");
        assert_eq!((r.first_seq, r.last_seq, r.records), (4, 5, 2));
        assert_eq!(parse_rollback_file_name(r.file.trim_start_matches("rollback/")), Some((4, 5)));
        // Nothing left past the cut: a second call does nothing.
        assert_eq!(truncate_wal(fs.as_ref(), dir, 4, "test").expect("again"), None);
        let _ = fs.remove_dir_all(&root);
    }
}
