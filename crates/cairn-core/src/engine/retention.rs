//! Retention after a checkpoint: WAL segments it covers move to `wal-archive/` (never deleted
//! there except by the configured archive retention), and checkpoint files the manifest no
//! longer names are removed. None of it changes what the live store serves; archive retention
//! limits what point-in-time recovery can still reach.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::Options;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::layout::{parse_wal_segment_name, ARCHIVE_DIR, DATA_DIR, WAL_DIR};
use crate::manifest::Manifest;
use crate::storage::Storage;

/// Move WAL segments whose records are all covered by the checkpoint to the archive, where
/// point-in-time recovery and replicas read them. They are never deleted here.
pub(super) fn archive_segments(storage: &dyn Storage, dir: &Path, checkpoint_seq: u64) -> Result<()> {
    let wal_dir = dir.join(WAL_DIR);
    let archive = dir.join(ARCHIVE_DIR);
    let mut firsts: Vec<(u64, String)> = storage
        .list(&wal_dir)
        .map_err(|e| Error::io(&wal_dir, e))?
        .into_iter()
        .filter_map(|n| parse_wal_segment_name(&n).map(|s| (s, n)))
        .collect();
    firsts.sort();
    let mut moved = false;
    for i in 0..firsts.len() {
        // A segment's records end before the next segment's first sequence number.
        let covered = firsts.get(i + 1).is_some_and(|(next, _)| *next <= checkpoint_seq + 1);
        if !covered {
            continue;
        }
        let name = &firsts[i].1;
        let (from, to) = (wal_dir.join(name), archive.join(name));
        storage.rename(&from, &to).map_err(|e| Error::io(&from, e))?;
        moved = true;
    }
    if moved {
        // durability: the archive must hold the segment before the WAL directory forgets it.
        storage.sync_dir(&archive).map_err(|e| Error::io(&archive, e))?;
        storage.sync_dir(&wal_dir).map_err(|e| Error::io(&wal_dir, e))?;
    }
    Ok(())
}

/// Apply the WAL archive retention. It shrinks the range point-in-time recovery can reach
/// (`pitr::recoverable_range` reports what is left); it never touches `wal/`.
pub(super) fn prune_archive(storage: &dyn Storage, dir: &Path, opts: &Options) -> Result<()> {
    if opts.archive_max_age_ms.is_none() && opts.archive_max_bytes.is_none() {
        return Ok(());
    }
    let archive = dir.join(ARCHIVE_DIR);
    let mut segs: Vec<(u64, PathBuf, u64, u64)> = Vec::new();
    for name in storage.list(&archive).map_err(|e| Error::io(&archive, e))? {
        if let Some(first) = parse_wal_segment_name(&name) {
            let path = archive.join(&name);
            let len = storage.open(&path).and_then(|f| f.len()).map_err(|e| Error::io(&path, e))?;
            let modified = storage.modified_ms(&path).unwrap_or(u64::MAX);
            segs.push((first, path, len, modified));
        }
    }
    segs.sort();
    let mut total: u64 = segs.iter().map(|s| s.2).sum();
    let cutoff = opts.archive_max_age_ms.map(|age| now_ms().saturating_sub(age));
    let mut removed = false;
    for (_, path, len, modified) in segs {
        let too_old = cutoff.is_some_and(|c| modified < c);
        let too_big = opts.archive_max_bytes.is_some_and(|max| total > max);
        if !too_old && !too_big {
            break;
        }
        storage.remove(&path).map_err(|e| Error::io(&path, e))?;
        total -= len;
        removed = true;
    }
    if removed {
        // durability: not needed for safety (a resurrected old segment is harmless); keeps the
        // archive's size honest after a crash.
        storage.sync_dir(&archive).map_err(|e| Error::io(&archive, e))?;
    }
    Ok(())
}

/// Checkpoint files not named by the manifest are leftovers of an interrupted or superseded
/// checkpoint. Snapshots hold their own hard links, so removing ours loses nothing.
pub(super) fn remove_orphan_data(storage: &dyn Storage, dir: &Path, m: &Manifest) -> Result<()> {
    let data_dir = dir.join(DATA_DIR);
    let live: HashSet<&str> = m
        .collections
        .iter()
        .flat_map(|c| c.data_files.iter().chain(c.index.iter()).chain(c.payload_file.iter()).map(|s| s.file.as_str()))
        .collect();
    let mut removed = false;
    for name in storage.list(&data_dir).map_err(|e| Error::io(&data_dir, e))? {
        if !live.contains(name.as_str()) {
            storage.remove(&data_dir.join(&name)).map_err(|e| Error::io(data_dir.join(&name), e))?;
            removed = true;
        }
    }
    if removed {
        // durability: not needed for correctness (orphans are ignored), but keeps the directory tidy.
        storage.sync_dir(&data_dir).map_err(|e| Error::io(&data_dir, e))?;
    }
    Ok(())
}
