//! Reading the log for replication (docs/format.md, "Replication: WAL chunk"): whole framed
//! records exactly as on disk, consecutive from a sequence number, across `wal-archive/` and
//! `wal/`. Every record's checksum is verified before it is returned; a bad one is
//! `Error::Corruption` with its file and offset and is never returned.
//!
//! Invariants the reader relies on, and why it needs no lock against the commit thread or a
//! checkpoint:
//! - Records up to the caller's `through_seq` (the engine's `last_seq`, loaded first) are
//!   completely written before it is published, so they can be read while later ones are being
//!   appended; nothing past `through_seq` is ever decoded.
//! - A checkpoint only renames a segment from `wal/` to `wal-archive/`, and archive retention
//!   only deletes the oldest segments. `wal/` is listed before `wal-archive/`, so a segment
//!   moving between the two is seen in at least one of them; a segment gone before it is opened
//!   makes the read start over with a fresh listing (`Attempt::Moved`).
//! - An open file keeps its bytes across a rename or a removal, and a trim only cuts zeros.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use super::record::{
    decode_record, decode_segment_header, record_len, u32_at, Decoded, RecordHeader, MAX_PAYLOAD_LEN, RECORD_HEADER_LEN, REC_OFF_LEN,
    SEGMENT_HEADER_LEN,
};
use crate::error::{Error, Result};
use crate::layout::{parse_wal_segment_name, ARCHIVE_DIR, WAL_DIR};
use crate::storage::{Storage, StorageFile};

/// Consecutive framed records, as `Engine::read_wal` returns them and `Engine::submit_replicated`
/// takes them. An empty chunk has `count == 0`, `first_seq` the requested sequence number and
/// `last_seq == first_seq - 1`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalChunk {
    pub bytes: Vec<u8>,
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u64,
}

/// Where the record after a returned chunk starts: the next read of a live tail resumes there
/// instead of walking its segment from the header again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShipCursor {
    pub segment_first_seq: u64,
    pub offset: u64,
    pub next_seq: u64,
}

/// Bytes read from a segment at a time: the first read of a call is small, because a live tail
/// usually wants a few new records before the preallocated zeros; each further read doubles, up
/// to the largest. A record larger than the block is read whole.
const FIRST_READ_BLOCK: usize = 8 << 10;
const MAX_READ_BLOCK: usize = 256 << 10;
/// Listings retried when segments keep moving under the reader; each retry means a checkpoint
/// or a retention pass ran meanwhile, so this is never reached in practice.
pub const MAX_ATTEMPTS: usize = 16;

pub enum Attempt {
    Done(WalChunk, Option<ShipCursor>),
    /// A listed segment was gone when it was opened: list again.
    Moved,
}

/// Segments of `wal/` and `wal-archive/` by first sequence number. `wal/` is listed first: a
/// segment a checkpoint moves meanwhile is then listed in one directory or in both.
pub fn list_segments(storage: &dyn Storage, dir: &Path) -> Result<BTreeMap<u64, PathBuf>> {
    let mut out = BTreeMap::new();
    for sub in [WAL_DIR, ARCHIVE_DIR] {
        let d = dir.join(sub);
        let names = match storage.list(&d) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&d, e)),
        };
        for name in names {
            if let Some(first) = parse_wal_segment_name(&name) {
                out.insert(first, d.join(name));
            }
        }
    }
    Ok(out)
}

/// The sequence number of the oldest record still on disk: the first sequence number of the
/// oldest segment (`through_seq + 1` when there is none).
pub fn oldest_retained(segments: &BTreeMap<u64, PathBuf>, through_seq: u64) -> u64 {
    segments.keys().next().copied().unwrap_or(through_seq + 1)
}

/// One attempt at reading records `from_seq..=through_seq`, at most `max_bytes` of them but at
/// least one. `hint` is a cursor a previous read returned. Damage ends a chunk before the
/// damaged record: the records before it are returned, and the read that starts at it fails.
pub fn read_chunk(
    storage: &dyn Storage,
    dir: &Path,
    from_seq: u64,
    through_seq: u64,
    max_bytes: usize,
    hint: Option<ShipCursor>,
) -> Result<Attempt> {
    if from_seq > through_seq {
        return Ok(Attempt::Done(empty(from_seq), None));
    }
    let segments = list_segments(storage, dir)?;
    let oldest = oldest_retained(&segments, through_seq);
    if from_seq < oldest {
        return Err(Error::WalPruned { requested: from_seq, oldest });
    }
    let Some((&holder, _)) = segments.range(..=from_seq).next_back() else {
        return Err(Error::WalPruned { requested: from_seq, oldest });
    };
    let mut chunk = empty(from_seq);
    let mut cursor = None;
    let read = collect(storage, dir, &segments, holder, through_seq, max_bytes, hint, &mut chunk, &mut cursor);
    match read {
        Ok(Collected::Moved) if chunk.count == 0 => Ok(Attempt::Moved),
        Err(e) if chunk.count == 0 => Err(e),
        _ => Ok(Attempt::Done(chunk, cursor)),
    }
}

enum Collected {
    Done,
    Moved,
}

#[expect(clippy::too_many_arguments, reason = "one read's parameters and its two outputs, called from one place")]
fn collect(
    storage: &dyn Storage,
    dir: &Path,
    segments: &BTreeMap<u64, PathBuf>,
    holder: u64,
    through_seq: u64,
    max_bytes: usize,
    hint: Option<ShipCursor>,
    chunk: &mut WalChunk,
    cursor: &mut Option<ShipCursor>,
) -> Result<Collected> {
    let from_seq = chunk.first_seq;
    let mut next = from_seq;
    for (&first, path) in segments.range(holder..) {
        let Some(mut seg) = SegmentReader::open(storage, path)? else {
            return Ok(Collected::Moved);
        };
        // Where to start in this segment, and the sequence number expected there.
        let (mut offset, mut expected) = match hint {
            Some(h) if first == holder && h.segment_first_seq == first && h.next_seq == from_seq => (h.offset, h.next_seq),
            _ => {
                let header = seg.read(0, SEGMENT_HEADER_LEN)?;
                match decode_segment_header(header) {
                    Ok(s) if s == first => {}
                    Ok(s) => return Err(Error::corruption(path, 0, format!("segment header says first seq {s}, name says {first}"))),
                    Err(reason) => return Err(Error::corruption(path, 0, reason)),
                }
                (SEGMENT_HEADER_LEN as u64, first)
            }
        };
        if expected != next && first != holder {
            return Err(Error::corruption(path, 0, format!("segment starts at seq {first} but the previous one ends before seq {next}")));
        }
        loop {
            if expected > through_seq {
                return Ok(Collected::Done);
            }
            let header = seg.read(offset, RECORD_HEADER_LEN)?;
            if header.len() < RECORD_HEADER_LEN || header.iter().all(|&b| b == 0) {
                break; // the end of this segment's records
            }
            let payload_len = u32_at(header, REC_OFF_LEN) as usize;
            if payload_len > MAX_PAYLOAD_LEN {
                return Err(Error::corruption(path, offset, "implausible record length"));
            }
            let len = record_len(payload_len);
            let shipping = expected >= from_seq;
            if shipping && chunk.count > 0 && chunk.bytes.len() + len > max_bytes {
                return Ok(Collected::Done);
            }
            let bytes = seg.read(offset, len)?;
            let found: RecordHeader = match decode_record(bytes) {
                Decoded::Record { header, .. } => header,
                Decoded::End => break,
                Decoded::Invalid(reason) => return Err(Error::corruption(path, offset, reason)),
            };
            if found.seq != expected {
                let reason = format!("record has seq {} where seq {expected} was expected", found.seq);
                return Err(Error::corruption(path, offset, reason));
            }
            offset += len as u64;
            expected += 1;
            if shipping {
                if chunk.count == 0 {
                    chunk.bytes.reserve(max_bytes.min(MAX_READ_BLOCK).max(len));
                }
                chunk.bytes.extend_from_slice(bytes);
                chunk.count += 1;
                chunk.last_seq = found.seq;
                *cursor = Some(ShipCursor { segment_first_seq: first, offset, next_seq: expected });
            }
        }
        next = expected;
    }
    // Every listed segment ended before `through_seq`: records that were acknowledged are
    // missing from the log.
    let last = segments.values().next_back().map_or_else(|| dir.join(WAL_DIR), Clone::clone);
    Err(Error::corruption(last, 0, format!("the WAL ends before seq {next}, but records through seq {through_seq} were acknowledged")))
}

fn empty(from_seq: u64) -> WalChunk {
    WalChunk { bytes: Vec::new(), first_seq: from_seq, last_seq: from_seq.saturating_sub(1), count: 0 }
}

/// Reads a segment through a window of growing size (`FIRST_READ_BLOCK`..`MAX_READ_BLOCK`).
/// Bytes past the end of the file read as absent (a shorter slice): a segment may be trimmed
/// while it is read, and a trim only cuts zeros past its records.
struct SegmentReader {
    path: PathBuf,
    file: Box<dyn StorageFile>,
    window: Vec<u8>,
    window_start: u64,
    block: usize,
}

impl SegmentReader {
    /// `None` when the file is gone (moved or removed since it was listed).
    fn open(storage: &dyn Storage, path: &Path) -> Result<Option<SegmentReader>> {
        match storage.open(path) {
            Ok(file) => {
                Ok(Some(SegmentReader { path: path.to_path_buf(), file, window: Vec::new(), window_start: 0, block: FIRST_READ_BLOCK }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Up to `n` bytes at `offset`; fewer only at the end of the file.
    fn read(&mut self, offset: u64, n: usize) -> Result<&[u8]> {
        let end = offset + n as u64;
        let window_end = self.window_start + self.window.len() as u64;
        if offset < self.window_start || end > window_end {
            self.fill(offset, n.max(self.block))?;
            self.block = (self.block * 2).min(MAX_READ_BLOCK);
        }
        let from = (offset - self.window_start) as usize;
        let to = (from + n).min(self.window.len());
        Ok(self.window.get(from..to).unwrap_or_default())
    }

    fn fill(&mut self, offset: u64, want: usize) -> Result<()> {
        let io = |e| Error::io(&self.path, e);
        // Twice at most: a trim between `len` and `read_at` shortens the file once.
        for _ in 0..2 {
            let len = self.file.len().map_err(io)?;
            let n = (len.saturating_sub(offset)).min(want as u64) as usize;
            let mut buf = vec![0u8; n];
            match self.file.read_at(offset, &mut buf) {
                Ok(()) => {
                    self.window = buf;
                    self.window_start = offset;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => continue,
                Err(e) => return Err(io(e)),
            }
        }
        Err(Error::io(&self.path, io::Error::from(io::ErrorKind::UnexpectedEof)))
    }
}

#[cfg(test)]
mod tests {
    use std::any::Any;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::fault::FaultStorage;
    use crate::layout::wal_segment_name;
    use crate::wal::record::{encode_record, encode_segment_header, RECORD_TYPE_BATCH};

    /// Moves one segment from `wal/` to `wal-archive/` once, at a chosen moment, the way a
    /// checkpoint running on another thread would.
    struct Checkpointing {
        inner: FaultStorage,
        moving: PathBuf,
        after_wal_listing: bool,
        moved: AtomicBool,
    }

    impl Checkpointing {
        fn move_once(&self) {
            if !self.moved.swap(true, Ordering::SeqCst) {
                let to = Path::new("/s").join(ARCHIVE_DIR).join(self.moving.file_name().unwrap_or_default());
                self.inner.rename(&self.moving, &to).expect("move the segment");
            }
        }
    }

    impl Storage for Checkpointing {
        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            self.inner.create_dir_all(path)
        }
        fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
            self.inner.create(path)
        }
        fn open(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
            if !self.after_wal_listing && path == self.moving {
                self.move_once();
            }
            self.inner.open(path)
        }
        fn open_read(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
            if !self.after_wal_listing && path == self.moving {
                self.move_once();
            }
            self.inner.open_read(path)
        }
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            self.inner.read(path)
        }
        fn is_dir(&self, path: &Path) -> bool {
            self.inner.is_dir(path)
        }
        fn remove_dir(&self, path: &Path) -> io::Result<()> {
            self.inner.remove_dir(path)
        }
        fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
            self.inner.remove_dir_all(path)
        }
        fn exists(&self, path: &Path) -> bool {
            self.inner.exists(path)
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            let names = self.inner.list(dir);
            if self.after_wal_listing && dir.ends_with(WAL_DIR) {
                self.move_once();
            }
            names
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.inner.rename(from, to)
        }
        fn remove(&self, path: &Path) -> io::Result<()> {
            self.inner.remove(path)
        }
        fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.inner.hard_link(from, to)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            self.inner.sync_dir(dir)
        }
        fn lock(&self, path: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
            self.inner.lock(path)
        }
    }

    /// `/s` with records 1..=9 in three segments: 1..=3 archived, 4..=6 and 7..=9 in `wal/`.
    fn store() -> FaultStorage {
        let fs = FaultStorage::new();
        for sub in [ARCHIVE_DIR, WAL_DIR] {
            fs.create_dir_all(&Path::new("/s").join(sub)).expect("mkdir");
        }
        for (sub, first) in [(ARCHIVE_DIR, 1u64), (WAL_DIR, 4), (WAL_DIR, 7)] {
            let mut buf = encode_segment_header(first).to_vec();
            for seq in first..first + 3 {
                encode_record(&mut buf, RECORD_TYPE_BATCH, seq, seq, &[seq as u8; 11]);
            }
            let f = fs.create(&Path::new("/s").join(sub).join(wal_segment_name(first))).expect("create");
            f.write_at(0, &buf).expect("write");
        }
        fs
    }

    fn seqs(a: Attempt) -> Option<(u64, u64, u64)> {
        match a {
            Attempt::Done(c, _) => Some((c.first_seq, c.last_seq, c.count)),
            Attempt::Moved => None,
        }
    }

    #[test]
    fn segment_moved_between_the_two_listings_is_still_read() {
        let moving = Path::new("/s").join(WAL_DIR).join(wal_segment_name(4));
        let s = Checkpointing { inner: store(), moving, after_wal_listing: true, moved: AtomicBool::new(false) };
        let got = read_chunk(&s, Path::new("/s"), 2, 9, usize::MAX, None).expect("read");
        assert!(s.moved.load(Ordering::SeqCst));
        assert_eq!(seqs(got), Some((2, 9, 8)));
    }

    #[test]
    fn segment_moved_before_it_is_opened_is_listed_again() {
        let moving = Path::new("/s").join(WAL_DIR).join(wal_segment_name(4));
        let s = Checkpointing { inner: store(), moving, after_wal_listing: false, moved: AtomicBool::new(false) };
        assert_eq!(seqs(read_chunk(&s, Path::new("/s"), 4, 9, usize::MAX, None).expect("read")), None, "the first attempt sees it gone");
        assert_eq!(seqs(read_chunk(&s, Path::new("/s"), 4, 9, usize::MAX, None).expect("read")), Some((4, 9, 6)));
        // Gone after records were collected: the chunk ends there instead.
        let s = Checkpointing {
            inner: store(),
            moving: Path::new("/s").join(WAL_DIR).join(wal_segment_name(7)),
            after_wal_listing: false,
            moved: AtomicBool::new(false),
        };
        assert_eq!(seqs(read_chunk(&s, Path::new("/s"), 2, 9, usize::MAX, None).expect("read")), Some((2, 6, 5)));
    }

    #[test]
    fn nothing_past_through_seq_and_a_gap_is_corruption() {
        let fs = store();
        assert_eq!(seqs(read_chunk(&fs, Path::new("/s"), 5, 7, usize::MAX, None).expect("read")), Some((5, 7, 3)));
        assert_eq!(seqs(read_chunk(&fs, Path::new("/s"), 8, 7, usize::MAX, None).expect("read")), Some((8, 7, 0)));
        fs.remove(&Path::new("/s").join(WAL_DIR).join(wal_segment_name(4))).expect("remove");
        match read_chunk(&fs, Path::new("/s"), 1, 9, usize::MAX, None).map(seqs) {
            Ok(Some((1, 3, 3))) => {}
            other => panic!("a chunk ends before a missing segment, got {:?}", other.err()),
        }
        assert!(matches!(read_chunk(&fs, Path::new("/s"), 4, 9, usize::MAX, None), Err(Error::Corruption { .. })));
        assert!(matches!(read_chunk(&fs, Path::new("/s"), 1, 12, usize::MAX, None), Ok(Attempt::Done(..))));
    }
}
