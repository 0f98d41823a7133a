//! Opening and closing a store. Open takes the store lock, loads the manifest (or its copy),
//! the checkpoint files and the WAL tail, and quarantines what it replaces; close drains the
//! commit thread, syncs, and records the clean-shutdown sequence number that the next open
//! checks the WAL against (a lost tail after a clean close is corruption, not a torn write).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use super::{commit, load, notify_seq, retention, Engine, Options, Queue, Shared, SyncMode};
use crate::batch;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::index::Indexer;
use crate::layout::{ARCHIVE_DIR, DATA_DIR, DATA_EXT, LOCK_FILE, MANIFEST_COPY_FILE, MANIFEST_FILE, WAL_DIR, WAL_EXT};
use crate::manifest::{self, Manifest};
use crate::metrics::EngineMetrics;
use crate::quarantine::{quarantine, Damage, QuarantineNote};
use crate::state::State;
use crate::storage::Storage;
use crate::sync::{lock, read, write};
use crate::wal::record::SEG_FLAG_UNSYNCED;
use crate::wal::recovery::{replay, QuarantinedFile, RecoveryMode, RecoveryReport, Replay, SkippedRange};
use crate::wal::writer::WalWriter;

impl Engine {
    pub fn open(dir: &Path, opts: Options) -> Result<Engine> {
        // Rows and graph load into small pages; huge pages come after the open (`mapped.rs`).
        let _huge_pages_after_open = crate::mapped::DeferHugePages::new();
        let storage = opts.storage.clone();
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e| Error::io(p, e)
        };
        for sub in [WAL_DIR, ARCHIVE_DIR, DATA_DIR] {
            storage.create_dir_all(&dir.join(sub)).map_err(io(&dir.join(sub)))?;
        }
        let lock_path = dir.join(LOCK_FILE);
        let guard = storage.lock(&lock_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => Error::Locked(dir.to_path_buf()),
            _ => Error::io(&lock_path, e),
        })?;

        let mut report = RecoveryReport::default();
        let (manifest, manifest_damage) = load_manifest(storage.as_ref(), dir, opts.recovery)?;
        report.checkpoint_seq = manifest.checkpoint_seq;
        let (mut state, damaged_files) = load::load_checkpoint(storage.as_ref(), dir, &manifest, opts.recovery, &mut report)?;

        let wal_dir = dir.join(WAL_DIR);
        let closed_cleanly = manifest.clean_shutdown_seq.is_some();
        let replayed = replay(
            storage.as_ref(),
            &wal_dir,
            manifest.checkpoint_seq,
            opts.recovery,
            closed_cleanly,
            &mut report,
            |seq, time, payload| {
                let ops = batch::decode(payload)?;
                state.apply(seq, time, ops)
            },
        )?;
        // The indexer is notified below of every collection with pending rows.
        state.touched.clear();
        let skip = opts.recovery == RecoveryMode::SkipCorrupt;
        if let Some(clean) = manifest.clean_shutdown_seq {
            check_clean_close(clean, &replayed, &wal_dir, skip, &mut report)?;
        }
        settle_wal_tail(storage.as_ref(), &replayed)?;
        state.last_seq = state.last_seq.max(replayed.last_seq).max(manifest.checkpoint_seq);
        state.last_time_ms = state.last_time_ms.max(replayed.last_time_ms).max(manifest.checkpoint_time_ms);
        let next_seq = state.last_seq + 1;

        // An empty last segment would collide with the one we start now; it holds nothing.
        if let Some(last) = replayed.segments.last() {
            if last.first_seq == next_seq {
                storage.remove(&last.path).map_err(io(&last.path))?;
            }
        }
        retention::archive_segments(storage.as_ref(), dir, manifest.checkpoint_seq)?;
        retention::remove_orphan_data(storage.as_ref(), dir, &manifest)?;
        let flags = if opts.sync == SyncMode::None { SEG_FLAG_UNSYNCED } else { 0 };
        let writer = WalWriter::create(storage.clone(), &wal_dir, next_seq, opts.segment_bytes, opts.prealloc, flags)?;

        let mut manifest = manifest;
        if let Some(damage) = &manifest_damage {
            // The open succeeded from the copy: keep the damaged bytes, then write both anew.
            let offset = match damage {
                Error::Corruption { offset, .. } => *offset,
                _ => 0,
            };
            let kept = quarantine_on_open(storage.as_ref(), dir, MANIFEST_FILE, offset, &damage.to_string(), Some(MANIFEST_COPY_FILE))?;
            report.quarantined.extend(kept);
            report.manifest_restored = Some(damage.to_string());
        }
        if manifest.clean_shutdown_seq.is_some() || manifest_damage.is_some() {
            // From here on a crash must not look like a clean close.
            manifest.clean_shutdown_seq = None;
            manifest::store(storage.as_ref(), dir, &manifest)?;
        } else {
            manifest::refresh_copy(storage.as_ref(), dir)?;
        }
        let schema = state.collections.values().map(|c| (c.spec.name.clone(), c.spec.dim)).collect();
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            opts: opts.clone(),
            last_seq: AtomicU64::new(state.last_seq),
            state: RwLock::new(state),
            queue: Mutex::new(Queue { requests: VecDeque::new(), shutdown: false, idle: false }),
            queue_cv: Condvar::new(),
            poisoned: Mutex::new(None),
            closed: AtomicBool::new(false),
            manifest: Mutex::new(manifest),
            checkpoint_lock: Mutex::new(()),
            indexer: Indexer::start(opts.index_write_share),
            metrics: EngineMetrics::new(opts.metrics),
            ship_cursors: Mutex::new(VecDeque::new()),
            seq_waiters: AtomicUsize::new(0),
            seq_lock: Mutex::new(()),
            seq_cv: Condvar::new(),
        });
        {
            // Rows loaded without a usable graph, and the WAL tail, are indexed in the background.
            let st = read(&shared.state);
            for c in st.collections.values() {
                if c.index.pending_len() > 0 {
                    shared.indexer.notify(&c.index);
                }
            }
        }
        let thread_shared = shared.clone();
        let handle = commit::spawn(thread_shared, writer, schema).map_err(|e| Error::io(dir, e))?;
        let engine = Engine { shared, commit_thread: Mutex::new(Some(handle)), lock: Mutex::new(Some(guard)), report };
        if (skip && !engine.report.skipped.is_empty()) || !damaged_files.is_empty() {
            // Make the state we now serve the new base, so the damage is not met again. The
            // checkpoint drops the damaged files' names; their bytes are kept in quarantine.
            let mut engine = engine;
            for rel in &damaged_files {
                let detail = "damaged checkpoint records found on open; the store was checkpointed without this file";
                let kept = quarantine_on_open(storage.as_ref(), dir, rel, 0, detail, None)?;
                engine.report.quarantined.extend(kept);
            }
            engine.checkpoint()?;
            return Ok(engine);
        }
        Ok(engine)
    }

    /// Finish queued commits, sync, record the clean-shutdown sequence number, release the lock.
    pub fn close(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // A checkpoint running on another thread finishes first: it must not write files, the
        // manifest or the archive after the clean close is recorded and the lock released.
        // One that has not started yet meets the shutdown and is refused with `Closed`.
        let _no_checkpoint = lock(&self.shared.checkpoint_lock);
        let poisoned_before = self.poisoned().is_some();
        {
            let mut q = lock(&self.shared.queue);
            q.shutdown = true;
        }
        self.shared.queue_cv.notify_all();
        if let Some(h) = lock(&self.commit_thread).take() {
            let _ = h.join();
        }
        self.shared.indexer.stop();
        // `wait_for_seq` callers return now instead of at their timeout.
        notify_seq(&self.shared);
        let result = match self.poisoned() {
            None => {
                let mut m = lock(&self.shared.manifest);
                m.clean_shutdown_seq = Some(self.last_seq());
                manifest::store(self.shared.opts.storage.as_ref(), &self.shared.dir, &m)
            }
            // The commit thread's final fsync failed during this close: writes acknowledged in
            // `none` mode may not be durable and no clean close was recorded, so say so.
            Some(reason) if !poisoned_before => Err(Error::Poisoned(reason)),
            Some(_) => Ok(()),
        };
        lock(&self.lock).take();
        // The JS wrapper that owns this engine may live on until a garbage collection V8 has no
        // reason to run (it cannot see native memory), so a closed store frees its rows and
        // graphs now instead of at drop.
        *write(&self.shared.state) = State { released: true, ..State::default() };
        lock(&self.shared.ship_cursors).clear();
        result
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// The manifest, or its copy when the manifest is damaged (then also the damage found), or a
/// new empty one for a new store. absolute-consistency refuses a damaged manifest.
fn load_manifest(storage: &dyn Storage, dir: &Path, mode: RecoveryMode) -> Result<(Manifest, Option<Error>)> {
    let loaded = if mode == RecoveryMode::AbsoluteConsistency {
        manifest::load(storage, dir)?.map(|m| (m, None))
    } else {
        manifest::load_or_copy(storage, dir)?
    };
    if let Some(found) = loaded {
        return Ok(found);
    }
    let (wal_dir, data_dir) = (dir.join(WAL_DIR), dir.join(DATA_DIR));
    let wal_names = storage.list(&wal_dir).map_err(|e| Error::io(&wal_dir, e))?;
    let data_names = storage.list(&data_dir).map_err(|e| Error::io(&data_dir, e))?;
    if wal_names.iter().any(|n| n.ends_with(WAL_EXT)) || data_names.iter().any(|n| n.ends_with(DATA_EXT)) {
        return Err(Error::corruption(dir.join(MANIFEST_FILE), 0, "MANIFEST is missing but the store has data"));
    }
    let m = Manifest::default();
    // durability: the new subdirectories must exist after a power cut.
    storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    manifest::store(storage, dir, &m)?;
    Ok((m, None))
}

/// A store closed cleanly at `clean` must replay to exactly that sequence number with no torn
/// tail: anything else lost acknowledged writes. skip-corrupt reports the lost range instead.
fn check_clean_close(clean: u64, replayed: &Replay, wal_dir: &Path, skip: bool, report: &mut RecoveryReport) -> Result<()> {
    let problem = if replayed.last_seq != clean {
        Some(format!("store was closed cleanly at seq {clean} but the WAL ends at seq {}", replayed.last_seq))
    } else if report.torn_tail.is_some() {
        Some("store was closed cleanly but its last WAL segment ends in invalid bytes".to_string())
    } else {
        None
    };
    if let Some(reason) = problem {
        let file = replayed.segments.last().map_or_else(|| wal_dir.to_path_buf(), |s| s.path.clone());
        if !skip {
            return Err(Error::corruption(file, 0, reason));
        }
        report.skipped.push(SkippedRange {
            file: file.display().to_string(),
            offset: 0,
            from_seq: replayed.last_seq + 1,
            to_seq: Some(clean),
            reason,
        });
    }
    Ok(())
}

/// Truncate a torn tail, or trim the last segment's preallocated zeros, and fsync it.
fn settle_wal_tail(storage: &dyn Storage, replayed: &Replay) -> Result<()> {
    if let Some((path, offset)) = &replayed.truncate {
        let f = storage.open(path).map_err(|e| Error::io(path, e))?;
        f.set_len(*offset).map_err(|e| Error::io(path, e))?;
        f.sync_data().map_err(|e| Error::io(path, e))?;
    } else if let Some(last) = replayed.segments.last() {
        let path = &last.path;
        // The last segment takes no more records (a new one starts after open): drop its
        // preallocated zeros, as `WalWriter::trim` does on a roll.
        let f = storage.open(path).map_err(|e| Error::io(path, e))?;
        if f.len().map_err(|e| Error::io(path, e))? > last.end {
            f.set_len(last.end).map_err(|e| Error::io(path, e))?;
        }
        // durability: after a process crash under sync=none its records may be only in the
        // page cache; writes acknowledged from now on build on them, so they must be on disk
        // first, or a power cut could leave a hole below durable records.
        f.sync_data().map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// Keep a damaged file that this open replaces under `quarantine/` with a note.
fn quarantine_on_open(
    storage: &dyn Storage,
    dir: &Path,
    rel: &str,
    offset: u64,
    detail: &str,
    repaired_from: Option<&str>,
) -> Result<Option<QuarantinedFile>> {
    let note = QuarantineNote {
        file: rel.to_string(),
        time_ms: now_ms(),
        kind: Damage::Checksum,
        offset,
        detail: detail.to_string(),
        bytes: storage.open(&dir.join(rel)).and_then(|f| f.len()).unwrap_or(0),
        expected_bytes: None,
        expected_xxh3: None,
        found_xxh3: None,
        repaired_from: repaired_from.map(str::to_string),
    };
    let kept = quarantine(storage, dir, rel, &note)?;
    Ok(kept.map(|kept| QuarantinedFile { file: rel.to_string(), kept }))
}
