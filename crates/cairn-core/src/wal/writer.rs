//! Appends records to the active segment and rolls to a new one when it fills.
//!
//! Segments are preallocated with zeros: overwriting allocated blocks lets fdatasync skip the
//! journal commit for a size change, which halves its cost on ext4. A fresh segment is
//! created as `NAME.tmp`, zero-filled, given its header, fsynced, renamed into place, and the
//! directory fsynced; so a `*.wal` file always has a valid header.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::record::{encode_segment_header_with_flags, SEGMENT_HEADER_LEN};
use crate::durable::temp_path;
use crate::error::{Error, Result};
use crate::layout::{wal_segment_name as segment_name, PREALLOC_FILE, TMP_SUFFIX, WAL_EXT};
use crate::storage::{Storage, StorageFile};

const ZERO_CHUNK: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prealloc {
    /// Appending grows the file (tests that count writes use this).
    Off,
    /// Zero-fill the next segment in the caller's thread when it is needed.
    Inline,
    /// Zero-fill the next segment in a background thread ahead of need.
    Background,
}

pub struct WalWriter {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    segment_bytes: u64,
    prealloc: Prealloc,
    file: Box<dyn StorageFile>,
    path: PathBuf,
    first_seq: u64,
    offset: u64,
    next_prealloc: Option<JoinHandle<std::io::Result<()>>>,
    /// The active segment grows by appending (the first one after open, when no preallocated
    /// file was left): `prealloc_ready` says when to leave it.
    appending: bool,
    /// Header flags of every segment this writer starts.
    flags: u32,
}

fn zero_fill(storage: &dyn Storage, path: &Path, bytes: u64) -> std::io::Result<Box<dyn StorageFile>> {
    let file = storage.create(path)?;
    let zeros = vec![0u8; ZERO_CHUNK];
    let mut off = 0u64;
    while off < bytes {
        let n = (bytes - off).min(ZERO_CHUNK as u64) as usize;
        file.write_at(off, &zeros[..n])?;
        off += n as u64;
    }
    file.sync_data()?;
    Ok(file)
}

impl WalWriter {
    /// Start a new segment whose first record will have `first_seq`.
    /// `flags` go into every segment's header (`SEG_FLAG_UNSYNCED` for sync=none).
    pub fn create(
        storage: Arc<dyn Storage>,
        dir: &Path,
        first_seq: u64,
        segment_bytes: u64,
        prealloc: Prealloc,
        flags: u32,
    ) -> Result<WalWriter> {
        // On open, reuse a complete zero-filled file left by the previous run; otherwise the
        // first segment grows by appending, so that open never waits for a zero-fill.
        let leftover = dir.join(PREALLOC_FILE);
        let prepared = match prealloc {
            Prealloc::Background => {
                storage.open(&leftover).ok().and_then(|f| f.len().ok()).filter(|len| *len == segment_bytes).map(|_| leftover)
            }
            _ => None,
        };
        let first_prealloc = if prealloc == Prealloc::Background { Prealloc::Off } else { prealloc };
        let appending = prealloc == Prealloc::Background && prepared.is_none();
        let (file, path) = Self::new_segment(&storage, dir, first_seq, segment_bytes, first_prealloc, prepared, flags)?;
        let mut w = WalWriter {
            flags,
            storage,
            dir: dir.to_path_buf(),
            segment_bytes,
            prealloc,
            file,
            path,
            first_seq,
            offset: SEGMENT_HEADER_LEN as u64,
            next_prealloc: None,
            appending,
        };
        w.start_prealloc();
        Ok(w)
    }

    fn new_segment(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        first_seq: u64,
        segment_bytes: u64,
        prealloc: Prealloc,
        prepared: Option<PathBuf>,
        flags: u32,
    ) -> Result<(Box<dyn StorageFile>, PathBuf)> {
        let path = dir.join(segment_name(first_seq));
        let tmp = temp_path(&path);
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e| Error::io(p, e)
        };
        let file = match (prealloc, prepared) {
            (_, Some(ready)) => {
                storage.rename(&ready, &tmp).map_err(io(&ready))?;
                storage.open(&tmp).map_err(io(&tmp))?
            }
            (Prealloc::Off, None) => storage.create(&tmp).map_err(io(&tmp))?,
            (_, None) => zero_fill(storage.as_ref(), &tmp, segment_bytes).map_err(io(&tmp))?,
        };
        file.write_at(0, &encode_segment_header_with_flags(first_seq, flags)).map_err(io(&tmp))?;
        file.sync_data().map_err(io(&tmp))?;
        storage.rename(&tmp, &path).map_err(io(&tmp))?;
        // durability: the new segment's name must survive a power cut before records in it are acknowledged.
        storage.sync_dir(dir).map_err(io(dir))?;
        Ok((file, path))
    }

    fn start_prealloc(&mut self) {
        if self.prealloc != Prealloc::Background {
            return;
        }
        let storage = self.storage.clone();
        let path = self.dir.join(PREALLOC_FILE);
        let bytes = self.segment_bytes;
        self.next_prealloc = Some(std::thread::spawn(move || zero_fill(storage.as_ref(), &path, bytes).map(|_| ())));
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the active segment grows by appending, holds records, and a preallocated one is
    /// ready: then rolling now makes every later fdatasync cheaper (on ext4 an append also
    /// writes the inode's size; measured here 120 µs against 90 µs for a small commit).
    pub fn prealloc_ready(&self) -> bool {
        self.appending && self.offset > SEGMENT_HEADER_LEN as u64 && self.next_prealloc.as_ref().is_some_and(|h| h.is_finished())
    }

    /// Whether `len` more bytes would overflow the segment (a segment always takes at least one record).
    pub fn needs_roll(&self, len: usize) -> bool {
        self.offset > SEGMENT_HEADER_LEN as u64 && self.offset + len as u64 > self.segment_bytes
    }

    /// Write framed records at the current offset. Not durable until `sync`.
    pub fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_at(self.offset, bytes).map_err(|e| Error::io(&self.path, e))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }

    /// Seal the active segment (fsynced first, so a sealed segment is always complete) and
    /// start a new one at `next_seq`.
    pub fn roll(&mut self, next_seq: u64) -> Result<()> {
        self.sync()?;
        self.trim()?;
        let prepared = match self.next_prealloc.take() {
            Some(handle) => match handle.join() {
                Ok(Ok(())) => Some(self.dir.join(PREALLOC_FILE)),
                // A failed background zero-fill is not fatal: fall back to an inline one.
                _ => None,
            },
            None => None,
        };
        let (file, path) = Self::new_segment(&self.storage, &self.dir, next_seq, self.segment_bytes, self.prealloc, prepared, self.flags)?;
        self.appending = self.prealloc == Prealloc::Off;
        self.file = file;
        self.path = path;
        self.first_seq = next_seq;
        self.offset = SEGMENT_HEADER_LEN as u64;
        self.start_prealloc();
        Ok(())
    }

    /// Cut the unused preallocated zeros off a segment that takes no more records, so that
    /// recovery, archives and backups never read them. Needs no fsync: if the new length is
    /// lost in a crash, the file merely keeps its zeros.
    pub fn trim(&self) -> Result<()> {
        self.file.set_len(self.offset).map_err(|e| Error::io(&self.path, e))
    }

    /// Wait for background work so that no thread touches the directory after close.
    pub fn finish(&mut self) {
        if let Some(h) = self.next_prealloc.take() {
            let _ = h.join();
        }
    }
}

impl Drop for WalWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Leftovers of an interrupted segment creation, safe to remove at open. (A complete
/// `next.prealloc` is not one: `create` reuses it.)
pub fn is_leftover(name: &str) -> bool {
    name.strip_suffix(TMP_SUFFIX).is_some_and(|n| n.ends_with(WAL_EXT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::OsStorage;
    use crate::wal::record::{encode_record, RECORD_TYPE_BATCH};

    #[test]
    fn first_segment_after_open_is_left_once_a_preallocated_one_is_ready() {
        let dir = std::env::temp_dir().join(format!("cairn-walwriter-{}", std::process::id()));
        let storage: Arc<dyn Storage> = Arc::new(OsStorage);
        let _ = storage.remove_dir_all(&dir);
        storage.create_dir_all(&dir).expect("temp dir");
        let segment_bytes = 1 << 20;
        let mut w = WalWriter::create(storage.clone(), &dir, 1, segment_bytes, Prealloc::Background, 0).expect("create");
        let mut rec = Vec::new();
        encode_record(&mut rec, RECORD_TYPE_BATCH, 1, 0, b"payload");
        w.append(&rec).expect("append");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !w.prealloc_ready() {
            assert!(std::time::Instant::now() < deadline, "background zero-fill never finished");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        w.roll(2).expect("roll");
        assert!(!w.prealloc_ready());
        // The new segment overwrites preallocated space; the old one was trimmed to its records.
        assert_eq!(storage.open(w.path()).and_then(|f| f.len()).expect("new segment"), segment_bytes);
        let first = dir.join(segment_name(1));
        assert_eq!(storage.open(&first).and_then(|f| f.len()).expect("first segment"), (SEGMENT_HEADER_LEN + rec.len()) as u64);
        w.finish();
        let _ = storage.remove_dir_all(&dir);
    }
}
