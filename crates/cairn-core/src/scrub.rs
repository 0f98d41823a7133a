//! Scrubbing (docs/architecture.md, "Scrub"): verify one file the store depends on against its
//! checksums, chunk by chunk, throttled and cancellable; and the primitives repair needs:
//! quarantine (docs/format.md, "Quarantine") and a verified, atomic install. Which files to
//! check, and where a repair comes from, is decided in TypeScript (packages/cairn/src/scrub/);
//! the bytes are read and hashed here.
//!
//! A file is read once, in chunks small enough to stay in the CPU cache while they are checked.
//! A file whose size and xxh3 are recorded is hashed whole, and only when they differ read again
//! record by record to locate the damage; a large one can be hashed in ranges by several tasks
//! (`hash_range`). A WAL segment is checked record by record as it streams by
//! (`wal::stream_check`), and scanned whole by the recovery reader only when that finds
//! something wrong.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::checksum::blocks::{self, DeltaBuffer, RangeFold, RangeHasher, Xxh3Blocks};
use crate::clock::now_ms;
use crate::datafile::{self, DATAFILE_HEADER_LEN, FOOTER_LEN};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::layout::MANIFEST_FILE;
use crate::layout::{DATA_DIR, INSTALL_SUFFIX};
use crate::manifest::{self, Manifest, MANIFEST_HEADER_LEN};
use crate::quarantine::quarantine as keep_in_quarantine;
pub use crate::quarantine::{Damage, QuarantineNote};
use crate::snapshot::{SnapshotInfo, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
use crate::storage::OsStorage;
use crate::wal::reader::{scan_segment, ScanItem};
use crate::wal::record::{decode_segment_header, u64_at, SEGMENT_HEADER_LEN};
use crate::wal::stream_check::StreamCheck;

/// Temporary name of a copy being installed; removed by the next install of the same file.
/// Read size when unthrottled. Reads of up to 128 KiB into a reused buffer copy out of the page
/// cache at about 8 GB/s here; from 192 KiB up the same copy costs 4 times as much kernel time
/// (measured on the 2-core dev VM: 125 against 500 ms per GB), and the buffer must stay in the
/// CPU cache for the checks that follow the read.
const CHUNK: usize = 128 << 10;

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
    fn add(&mut self, offset: u64, kind: Damage, id: Option<String>, detail: impl Into<String>) {
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

fn hex(v: u64) -> String {
    format!("{v:016x}")
}

/// Shared by every file and range task of one scrub, on every thread: a token bucket that holds
/// the aggregate read rate, cancellation, a progress counter, and the files being hashed by
/// ranges.
pub struct ScanControl {
    /// Bytes per second; None is unthrottled.
    rate: Option<f64>,
    bucket: Mutex<Bucket>,
    cancelled: AtomicBool,
    read: AtomicU64,
    /// Files being hashed by ranges, by id (`split_open`).
    splits: Mutex<HashMap<u32, SplitFile>>,
    next_split: AtomicU32,
    /// Delta buffers of folded ranges, for the next ranges.
    spare: Mutex<Vec<DeltaBuffer>>,
}

/// Spare delta buffers kept (64 bytes per KiB of a range): enough for a few workers.
const KEEP_SPARE: usize = 8;

/// A file hashed by ranges on several threads; each range is folded in as it completes.
struct SplitFile {
    total: u64,
    fold: RangeFold,
    /// (device, inode) of the file the first range read: every range must read the same one.
    identity: Option<(u64, u64)>,
    read: u64,
    /// Why the ranges cannot prove the file intact (the caller then verifies it whole).
    failed: Option<String>,
    cancelled: bool,
}

struct Bucket {
    /// May go negative: a reader that overdraws sleeps off the debt, and so do the readers after it.
    tokens: f64,
    last: Instant,
}

impl ScanControl {
    pub fn new(bytes_per_sec: Option<f64>) -> ScanControl {
        ScanControl {
            rate: bytes_per_sec.filter(|r| r.is_finite() && *r > 0.0),
            bucket: Mutex::new(Bucket { tokens: 0.0, last: Instant::now() }),
            cancelled: AtomicBool::new(false),
            read: AtomicU64::new(0),
            splits: Mutex::new(HashMap::new()),
            next_split: AtomicU32::new(1),
            spare: Mutex::new(Vec::new()),
        }
    }

    fn take_spare(&self) -> DeltaBuffer {
        self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default()
    }

    fn keep_spare(&self, buffers: Vec<DeltaBuffer>) {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        for b in buffers {
            if spare.len() < KEEP_SPARE {
                spare.push(b);
            }
        }
    }

    /// Start hashing a file of `total` bytes by ranges (`hash_range`, then `split_finish`).
    pub fn split_open(&self, total: u64) -> u32 {
        let id = self.next_split.fetch_add(1, Ordering::Relaxed);
        let split = SplitFile { total, fold: RangeFold::new(total), identity: None, read: 0, failed: None, cancelled: false };
        self.splits().insert(id, split);
        id
    }

    fn splits(&self) -> std::sync::MutexGuard<'_, HashMap<u32, SplitFile>> {
        self.splits.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_split<T>(&self, id: u32, f: impl FnOnce(&mut SplitFile) -> T) -> Result<T> {
        self.splits().get_mut(&id).map(f).ok_or_else(|| Error::InvalidArgument(format!("split {id} is not open")))
    }

    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Bytes read so far by every task of this scrub.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Read size: a throttled scan reads about 1/20 s worth at a time so the rate is smooth.
    fn chunk(&self) -> usize {
        match self.rate {
            None => CHUNK,
            Some(r) => ((r / 20.0) as usize).clamp(64 << 10, CHUNK),
        }
    }

    /// Account for `n` bytes about to be read, sleeping as long as the rate requires.
    /// False when the scrub was cancelled (also while sleeping).
    fn admit(&self, n: usize) -> bool {
        if self.is_cancelled() {
            return false;
        }
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        let Some(rate) = self.rate else { return true };
        let wait = {
            let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            // A burst of at most 1/10 s after an idle spell.
            b.tokens = (b.tokens + rate * now.duration_since(b.last).as_secs_f64()).min(rate / 10.0);
            b.last = now;
            b.tokens -= n as f64;
            if b.tokens < 0.0 {
                -b.tokens / rate
            } else {
                0.0
            }
        };
        let until = Instant::now() + Duration::from_secs_f64(wait);
        loop {
            if self.is_cancelled() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(20)));
        }
    }
}

enum Chunk {
    Eof,
    Bytes(usize),
    Cancelled,
}

/// Append up to one chunk of `f` to `buf`, throttled. Reads into the spare capacity, so the
/// buffer is never zero-filled first (that would be one more pass over every byte).
fn read_chunk(f: &mut File, buf: &mut Vec<u8>, ctl: &ScanControl) -> std::io::Result<Chunk> {
    let n = ctl.chunk();
    if !ctl.admit(n) {
        return Ok(Chunk::Cancelled);
    }
    buf.reserve(n);
    let got = f.by_ref().take(n as u64).read_to_end(buf)?;
    Ok(if got == 0 { Chunk::Eof } else { Chunk::Bytes(got) })
}

/// Read until `buf` is full or the file ends; returns the bytes read.
fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

enum Next<'a> {
    Bytes(&'a [u8]),
    Eof,
    Cancelled,
}

/// Reads a file chunk by chunk into one buffer, throttled and cancellable; each chunk is checked
/// while it is still in the CPU cache.
struct ChunkReader {
    buf: Vec<u8>,
}

impl ChunkReader {
    fn new() -> ChunkReader {
        ChunkReader { buf: vec![0; CHUNK] }
    }

    /// The next chunk, at most `left` bytes.
    fn next(&mut self, f: &mut File, ctl: &ScanControl, left: u64) -> std::io::Result<Next<'_>> {
        let n = (ctl.chunk() as u64).min(left) as usize;
        if n == 0 {
            return Ok(Next::Eof);
        }
        if !ctl.admit(n) {
            return Ok(Next::Cancelled);
        }
        let got = read_full(f, &mut self.buf[..n])?;
        Ok(if got == 0 { Next::Eof } else { Next::Bytes(&self.buf[..got]) })
    }
}

/// Verify one file. Never fails: every problem, including a missing or unreadable file, is a
/// finding in the result.
pub fn verify_file(path: &Path, kind: FileKind, expected: Option<Expected>, ctl: &ScanControl) -> FileCheck {
    let mut out = FileCheck::default();
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            out.add(0, Damage::Missing, None, "file is missing");
            return out;
        }
        Err(e) => {
            out.add(0, Damage::Unreadable, None, format!("cannot open: {e}"));
            return out;
        }
    };
    out.bytes = match f.metadata() {
        Ok(m) => m.len(),
        Err(e) => {
            out.add(0, Damage::Unreadable, None, format!("cannot stat: {e}"));
            return out;
        }
    };
    if let Some(exp) = expected {
        if out.bytes < exp.bytes {
            out.add(out.bytes, Damage::Truncated, None, format!("file is {} bytes, {} recorded", out.bytes, exp.bytes));
        } else if out.bytes > exp.bytes {
            out.add(exp.bytes, Damage::Checksum, None, format!("file is {} bytes, {} recorded: bytes were appended", out.bytes, exp.bytes));
        }
    }
    let result = match kind {
        FileKind::Segment | FileKind::SegmentDeep => verify_segment_fast_or_deep(&mut f, kind, expected, &mut out, ctl),
        FileKind::Wal | FileKind::WalTail => verify_wal(path, &mut f, kind == FileKind::WalTail, expected.is_some(), &mut out, ctl),
        FileKind::Manifest | FileKind::SnapshotManifest => verify_framed(&mut f, kind, &mut out, ctl),
        FileKind::Blob => hash_all(&mut f, &mut out, ctl),
    };
    if let Err(e) = result {
        out.add(out.read, Damage::Unreadable, None, format!("read failed: {e}"));
        return out;
    }
    if out.cancelled {
        return out;
    }
    if let (Some(exp), Some(found)) = (expected, out.xxh3.as_deref()) {
        // Only worth saying when nothing more precise was found.
        if out.findings.is_empty() && parse_xxh3(found) != Some(exp.xxh3) {
            out.add(0, Damage::Checksum, None, format!("whole-file xxh3 is {found}, {} recorded", hex(exp.xxh3)));
        }
    }
    out
}

/// Range boundaries, from 0 to `bytes`, for hashing a file of `bytes` bytes by `hash_range`
/// tasks of about `range_bytes` each; a file shorter than two ranges is one range.
pub fn ranges(bytes: u64, range_bytes: u64) -> Vec<u64> {
    blocks::split(bytes, range_bytes)
}

/// Hash bytes `start..end` (boundaries from `ranges`) of the file of split `split` and fold them
/// in. Returns the bytes read. A file that is not there, has another size than the split was
/// opened with, another inode than an earlier range read, or cannot be read marks the split
/// failed, and `split_finish` then leaves the file to a whole-file verification that reports
/// it; only a bad range or split id is an error.
pub fn hash_range(ctl: &ScanControl, split: u32, path: &Path, start: u64, end: u64) -> Result<u64> {
    let total = ctl.with_split(split, |s| s.total)?;
    let mut hasher = RangeHasher::new(start, end, total, ctl.take_spare())
        .map_err(|e| Error::InvalidArgument(format!("range {start}..{end} of {total} bytes: {e}")))?;
    let fail = |why: String| ctl.with_split(split, |s| s.failed = Some(why)).map(|_| 0);
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot open: {e}")),
    };
    let identity = match f.metadata() {
        Ok(m) if m.len() == total => (m.dev(), m.ino()),
        Ok(m) => return fail(format!("file is {} bytes, {total} expected", m.len())),
        Err(e) => return fail(format!("cannot stat: {e}")),
    };
    if let Err(e) = f.seek(SeekFrom::Start(start)) {
        return fail(format!("seek failed: {e}"));
    }
    let mut reader = ChunkReader::new();
    let mut read = 0u64;
    loop {
        match reader.next(&mut f, ctl, end - start - read) {
            Ok(Next::Cancelled) => return ctl.with_split(split, |s| s.cancelled = true).map(|_| read),
            Ok(Next::Eof) => break,
            Ok(Next::Bytes(b)) => {
                read += b.len() as u64;
                hasher.update(b).map_err(|e| Error::InvalidArgument(e.to_string()))?;
            }
            Err(e) => return fail(format!("read failed at {}: {e}", start + read)),
        }
    }
    let part = match hasher.finish() {
        Ok(p) => p,
        Err(e) => return fail(format!("range {start}..{end}: {e}")),
    };
    let spent = ctl.with_split(split, |s| {
        s.read += read;
        if s.identity.is_some_and(|id| id != identity) {
            s.failed = Some("the file was replaced while its ranges were read".into());
        }
        s.identity = Some(identity);
        s.fold.add(part).unwrap_or_else(|e| {
            s.failed = Some(e.into());
            Vec::new()
        })
    })?;
    ctl.keep_spare(spent);
    Ok(read)
}

/// Close split `split` after all its `hash_range` tasks: the check of the file at `path` when
/// the ranges prove it intact (its xxh3 is the expected one) or the scan was cancelled; None
/// when the file must be verified whole (`verify_file`) to say what is wrong, or whether
/// anything is (a replaced file).
pub fn split_finish(ctl: &ScanControl, split: u32, path: &Path, kind: FileKind, expected: Expected) -> Result<Option<FileCheck>> {
    let s = ctl.splits().remove(&split).ok_or_else(|| Error::InvalidArgument(format!("split {split} is not open")))?;
    let mut out = FileCheck { bytes: s.total, read: s.read, ..FileCheck::default() };
    if s.cancelled {
        out.cancelled = true;
        return Ok(Some(out));
    }
    if s.failed.is_some() || s.total != expected.bytes || s.fold.digest() != Some(expected.xxh3) {
        return Ok(None);
    }
    out.xxh3 = Some(hex(expected.xxh3));
    if kind == FileKind::Segment {
        match File::open(path) {
            Ok(f) => out.records = footer_count(&f, s.total),
            Err(_) => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// Hash the rest of the file (`out.cancelled` when cancelled).
fn hash_all(f: &mut File, out: &mut FileCheck, ctl: &ScanControl) -> std::io::Result<()> {
    let mut h = Xxh3Blocks::default();
    let mut reader = ChunkReader::new();
    loop {
        match reader.next(f, ctl, u64::MAX)? {
            Next::Cancelled => {
                out.cancelled = true;
                return Ok(());
            }
            Next::Eof => break,
            Next::Bytes(b) => {
                h.update(b);
                out.read += b.len() as u64;
            }
        }
    }
    out.xxh3 = Some(hex(h.digest()));
    Ok(())
}

thread_local! {
    /// The whole-file buffer of this thread, kept between files: a fresh 32 MiB allocation per
    /// WAL segment costs more in page faults than scanning it does.
    static WHOLE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}
/// A larger buffer than this is released after use rather than kept for the next file.
const KEEP_BUFFER: usize = 256 << 20;

/// Read the whole file into this thread's buffer (WAL segments and manifests are bounded in
/// size) and run `f` on it; None when cancelled.
fn with_whole_file<T>(
    f: &mut File,
    out: &mut FileCheck,
    ctl: &ScanControl,
    then: impl FnOnce(&[u8], &mut FileCheck) -> T,
) -> std::io::Result<Option<T>> {
    WHOLE.with(|cell| {
        let mut buf = cell.take();
        buf.clear();
        let result = read_all_into(f, &mut buf, out, ctl).map(|done| done.then(|| then(&buf, out)));
        if buf.capacity() <= KEEP_BUFFER {
            cell.replace(buf);
        }
        result
    })
}

fn read_all_into(f: &mut File, buf: &mut Vec<u8>, out: &mut FileCheck, ctl: &ScanControl) -> std::io::Result<bool> {
    let mut h = Xxh3Blocks::default();
    buf.reserve(out.bytes as usize + 1);
    loop {
        let before = buf.len();
        match read_chunk(f, buf, ctl)? {
            Chunk::Cancelled => {
                out.cancelled = true;
                return Ok(false);
            }
            Chunk::Eof => break,
            Chunk::Bytes(n) => h.update(&buf[before..before + n]),
        }
    }
    out.read = buf.len() as u64;
    out.xxh3 = Some(hex(h.digest()));
    Ok(true)
}

fn verify_framed(f: &mut File, kind: FileKind, out: &mut FileCheck, ctl: &ScanControl) -> std::io::Result<()> {
    with_whole_file(f, out, ctl, |buf, out| check_framed(buf, kind, out)).map(|_| ())
}

fn check_framed(buf: &[u8], kind: FileKind, out: &mut FileCheck) {
    let (magic, version) = match kind {
        FileKind::SnapshotManifest => (SNAPSHOT_MAGIC, SNAPSHOT_VERSION),
        _ => (manifest::MANIFEST_MAGIC, manifest::MANIFEST_VERSION),
    };
    let len = buf.len();
    if len < MANIFEST_HEADER_LEN {
        out.add(len as u64, Damage::Truncated, None, format!("{len} bytes is shorter than the header"));
        return;
    }
    if &buf[..8] != magic {
        out.add(0, Damage::Checksum, None, "bad magic");
        return;
    }
    let total = (u64_at(buf, 16) as u128) + (MANIFEST_HEADER_LEN as u128) + 8;
    if total != len as u128 {
        // Either the file lost or gained bytes, or its length field is damaged. The trailing
        // checksum covers the length field, so try the length the file actually has.
        let mut patched = buf.to_vec();
        patched[16..24].copy_from_slice(&((len - MANIFEST_HEADER_LEN).saturating_sub(8) as u64).to_le_bytes());
        if len >= MANIFEST_HEADER_LEN + 8 && u64_at(&patched, len - 8) == crate::checksum::xxh3(&patched[..len - 8]) {
            out.add(16, Damage::Checksum, None, "length field is damaged");
        } else if total > len as u128 {
            out.add(len as u64, Damage::Truncated, None, format!("header says {total} bytes, file has {len}"));
        } else {
            out.add(total as u64, Damage::Checksum, None, format!("{} bytes follow the checksum", len as u128 - total));
        }
        return;
    }
    let path = Path::new("");
    let body = match manifest::decode_framed(magic, version, buf, path) {
        Ok(b) => b,
        Err(Error::Corruption { offset, reason, .. }) => {
            out.add(offset, Damage::Checksum, None, reason);
            return;
        }
        Err(e) => {
            out.add(0, Damage::Checksum, None, e.to_string());
            return;
        }
    };
    let parsed = match kind {
        FileKind::SnapshotManifest => serde_json::from_slice::<SnapshotInfo>(body).map(|_| ()),
        _ => serde_json::from_slice::<Manifest>(body).map(|_| ()),
    };
    if let Err(e) = parsed {
        out.add(MANIFEST_HEADER_LEN as u64, Damage::Checksum, None, format!("body does not parse: {e}"));
    }
}

/// A segment is checked as it streams by; only if that finds anything wrong is it read again,
/// whole, and scanned by the recovery reader to locate and classify the damage. The whole-file
/// xxh3 is computed when a snapshot recorded one (`hash_whole`), or for a damaged segment.
fn verify_wal(
    path: &Path,
    f: &mut File,
    tail_may_tear: bool,
    hash_whole: bool,
    out: &mut FileCheck,
    ctl: &ScanControl,
) -> std::io::Result<()> {
    if out.findings.is_empty() {
        let named = path.file_name().and_then(|n| crate::layout::parse_wal_segment_name(&n.to_string_lossy()));
        let mut check = StreamCheck::new(named);
        let mut whole = hash_whole.then(Xxh3Blocks::default);
        let mut reader = ChunkReader::new();
        loop {
            match reader.next(f, ctl, u64::MAX)? {
                Next::Cancelled => {
                    out.cancelled = true;
                    return Ok(());
                }
                Next::Eof => break,
                Next::Bytes(b) => {
                    out.read += b.len() as u64;
                    if let Some(h) = whole.as_mut() {
                        h.update(b);
                    }
                    if !check.feed(b) {
                        break;
                    }
                }
            }
        }
        if let Some(clean) = check.finish() {
            out.first_seq = Some(clean.first_seq);
            out.last_seq = clean.last_seq;
            out.end = Some(clean.end);
            out.records = clean.records;
            out.xxh3 = whole.map(|h| hex(h.digest()));
            return Ok(());
        }
        f.seek(SeekFrom::Start(0))?;
        out.read = 0;
    }
    with_whole_file(f, out, ctl, |buf, out| check_wal(path, buf, tail_may_tear, out)).map(|_| ())
}

fn check_wal(path: &Path, buf: &[u8], tail_may_tear: bool, out: &mut FileCheck) {
    if buf.len() < SEGMENT_HEADER_LEN {
        out.add(buf.len() as u64, Damage::Truncated, None, "shorter than the segment header");
        return;
    }
    let first_seq = match decode_segment_header(buf) {
        Ok(s) => s,
        Err(reason) => {
            out.add(0, Damage::Checksum, None, reason);
            return;
        }
    };
    let named = path.file_name().and_then(|n| crate::layout::parse_wal_segment_name(&n.to_string_lossy()));
    if named.is_some_and(|n| n != first_seq) {
        out.add(16, Damage::Checksum, None, format!("header says first seq {first_seq}, the name says otherwise"));
    }
    out.first_seq = Some(first_seq);
    let scan = scan_segment(buf, first_seq);
    for item in &scan.items {
        match item {
            ScanItem::Record { .. } => out.records += 1,
            ScanItem::Corrupt { offset, reason } => out.add(*offset, Damage::Checksum, None, format!("{reason}; a later record is intact")),
        }
    }
    out.last_seq = scan.last_seq;
    out.end = Some(scan.end);
    if let Some(reason) = scan.invalid_tail {
        if !tail_may_tear {
            let rest = &buf[scan.end as usize..];
            // A cut record keeps the start of its header (type 1, zero reserved bytes); a few
            // stray bytes after the last record were appended.
            let cut_header = rest.len() >= 8 && rest[4] == crate::wal::record::RECORD_TYPE_BATCH && rest[5..8] == [0, 0, 0];
            let kind = if reason == "record extends past end of file" || (reason == "truncated header" && cut_header) {
                Damage::Truncated
            } else {
                Damage::Checksum
            };
            let after = scan.last_seq.map_or_else(|| "the header".to_string(), |s| format!("seq {s}"));
            out.add(scan.end, kind, None, format!("{reason} after {after} in a sealed segment"));
        }
    }
}

fn verify_segment_fast_or_deep(
    f: &mut File,
    kind: FileKind,
    expected: Option<Expected>,
    out: &mut FileCheck,
    ctl: &ScanControl,
) -> std::io::Result<()> {
    if let (FileKind::Segment, Some(exp), true) = (kind, expected, out.findings.is_empty()) {
        hash_all(f, out, ctl)?;
        if out.cancelled || out.xxh3.as_deref().and_then(parse_xxh3) == Some(exp.xxh3) {
            out.records = footer_count(f, out.bytes);
            return Ok(());
        }
        // Damaged: read it again, record by record, to say where and which rows.
        f.seek(SeekFrom::Start(0))?;
        out.xxh3 = None;
    }
    // With a recorded size that matches, damage is never a truncation.
    let size_is_right = expected.is_some_and(|e| e.bytes == out.bytes);
    verify_segment(f, size_is_right, out, ctl)
}

/// The record count of an intact segment file's footer (0 if it cannot be read).
fn footer_count(f: &File, bytes: u64) -> u64 {
    let mut footer = [0u8; FOOTER_LEN];
    if bytes >= FOOTER_LEN as u64 && f.read_exact_at(&mut footer, bytes - FOOTER_LEN as u64).is_ok() {
        return datafile::check_footer(&footer).map_or(0, |(count, _)| count);
    }
    0
}

fn verify_segment(f: &mut File, size_is_right: bool, out: &mut FileCheck, ctl: &ScanControl) -> std::io::Result<()> {
    let len = out.bytes as usize;
    if len < DATAFILE_HEADER_LEN + FOOTER_LEN {
        let kind = if out.findings.iter().any(|f| f.kind == Damage::Truncated) { Damage::Truncated } else { Damage::Checksum };
        out.add(len as u64, kind, None, "shorter than a segment header and footer");
        return hash_all(f, out, ctl);
    }
    let footer_at = len - FOOTER_LEN;
    let mut whole = Xxh3Blocks::default();
    let mut body_sum: Option<u64> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(2 * ctl.chunk());
    // File offset of buf[0], and of the next record to check.
    let mut base = 0usize;
    let mut pos = DATAFILE_HEADER_LEN;
    let mut dim: Option<datafile::RecordFormat> = None;
    let mut framed = true;
    let mut read = 0usize;
    loop {
        let before = buf.len();
        let eof = match read_chunk(f, &mut buf, ctl)? {
            Chunk::Cancelled => {
                out.cancelled = true;
                return Ok(());
            }
            Chunk::Eof => true,
            Chunk::Bytes(n) => {
                // The footer's body checksum covers everything before the footer; the manifest's
                // covers the whole file. One pass gives both.
                let new = &buf[before..before + n];
                let (start, end) = (read, read + n);
                if start < footer_at && end >= footer_at {
                    let cut = footer_at - start;
                    whole.update(&new[..cut]);
                    body_sum = Some(whole.digest());
                    whole.update(&new[cut..]);
                } else {
                    whole.update(new);
                }
                read = end;
                false
            }
        };
        let avail = base + buf.len();
        if dim.is_none() && framed && (avail >= DATAFILE_HEADER_LEN || eof) {
            match datafile::check_header(&buf) {
                Ok(h) => dim = Some(h.record_format()),
                Err(reason) => {
                    out.add(0, Damage::Checksum, None, reason);
                    framed = false;
                }
            }
        }
        if let Some(d) = dim.filter(|_| framed) {
            while pos < footer_at {
                let rel = pos - base;
                if rel + 4 > buf.len() {
                    break;
                }
                let rlen = u32::from_le_bytes([buf[rel], buf[rel + 1], buf[rel + 2], buf[rel + 3]]) as usize;
                let plausible = rlen >= datafile::R_FIXED + 8 && rlen.is_multiple_of(8) && pos + rlen <= footer_at;
                if plausible && pos + rlen > avail {
                    break; // need more bytes
                }
                if !plausible {
                    // The length is unusable, so nothing after it can be framed.
                    let cut_short = rlen >= datafile::R_FIXED + 8 && rlen.is_multiple_of(8) && pos + rlen > footer_at && !size_is_right;
                    let kind = if cut_short || out.findings.iter().any(|f| f.kind == Damage::Truncated) {
                        Damage::Truncated
                    } else {
                        Damage::Checksum
                    };
                    out.add(pos as u64, kind, None, "implausible record length; the rest of the file cannot be framed");
                    framed = false;
                    break;
                }
                match datafile::check_record(&buf, rel, rel + rlen, &d) {
                    Ok(_) => out.records += 1,
                    Err((reason, _)) => {
                        let id = datafile::record_identity(&buf, rel, rel + rlen, &d)
                            .map(|i| i.id)
                            .or_else(|| datafile::record_id_hint(&buf[rel..rel + rlen], &d));
                        out.add(pos as u64, Damage::Checksum, id, reason);
                    }
                }
                pos += rlen;
            }
        }
        // Keep only what the next record check needs.
        let keep_from = if framed { pos.min(base + buf.len()) } else { base + buf.len() };
        let drop = keep_from - base;
        if drop > 0 {
            buf.drain(..drop);
            base += drop;
        }
        if eof {
            break;
        }
    }
    out.read = read as u64;
    out.xxh3 = Some(hex(whole.digest()));
    if framed && dim.is_some() && pos != footer_at {
        out.add(pos as u64, Damage::Truncated, None, "records end before the footer");
    }
    let mut footer = [0u8; FOOTER_LEN];
    f.read_exact_at(&mut footer, footer_at as u64)?;
    match datafile::check_footer(&footer) {
        None => {
            let kind = if out.findings.iter().any(|f| f.kind == Damage::Truncated) { Damage::Truncated } else { Damage::Checksum };
            out.add(footer_at as u64, kind, None, "footer missing or damaged");
        }
        Some((count, sum)) if out.findings.is_empty() => {
            if count != out.records {
                out.add(footer_at as u64, Damage::Checksum, None, format!("footer counts {count} records, {} found", out.records));
            } else if Some(sum) != body_sum {
                out.add(footer_at as u64, Damage::Checksum, None, "body checksum differs from the footer's");
            }
        }
        Some(_) => {}
    }
    Ok(())
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Install {
    /// The copy verified and is in place; the damaged file (if any) is in quarantine.
    Installed { quarantined: Option<String> },
    /// The copy did not verify (for example a hard link to the same damaged bytes); nothing changed.
    Rejected { detail: String },
    /// The store no longer names this file (a checkpoint replaced it meanwhile); nothing changed.
    Moot,
}

/// Copy `source` next to `dir/rel`, fsync it, verify the copy as `kind` against `expected`,
/// then quarantine the damaged file and rename the copy over it, and fsync the directory.
/// What is installed is exactly what was verified.
pub fn install_copy(dir: &Path, rel: &str, source: &Path, kind: FileKind, expected: Expected, note: &QuarantineNote) -> Result<Install> {
    let target = dir.join(rel);
    let parent = target.parent().map(Path::to_path_buf).unwrap_or_else(|| dir.to_path_buf());
    if !parent.is_dir() {
        return Ok(Install::Moot);
    }
    let mut tmp_name = target.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(INSTALL_SUFFIX);
    let tmp = parent.join(tmp_name);
    let _ = fs::remove_file(&tmp);
    if let Err(e) = fs::copy(source, &tmp) {
        let _ = fs::remove_file(&tmp);
        return Ok(Install::Rejected { detail: format!("cannot copy {}: {e}", source.display()) });
    }
    File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
    let check = verify_file(&tmp, kind, Some(expected), &ScanControl::new(None));
    if let Some(bad) = check.findings.first() {
        let _ = fs::remove_file(&tmp);
        return Ok(Install::Rejected {
            detail: format!("copy from {} does not verify: {} at offset {}", source.display(), bad.detail, bad.offset),
        });
    }
    let quarantined = keep_in_quarantine(&OsStorage, dir, rel, note)?;
    fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))?;
    // durability: the repaired file's name must survive a power cut.
    crate::storage::Storage::sync_dir(&OsStorage, &parent).map_err(|e| Error::io(&parent, e))?;
    Ok(Install::Installed { quarantined })
}

/// `install_copy` into an open store, under its checkpoint lock so that no checkpoint writes,
/// archives, prunes or sweeps files meanwhile. A `data/` file must still be named by the
/// manifest with the expected checksum, otherwise the repair is moot.
pub fn install_copy_live(
    engine: &Engine,
    rel: &str,
    source: &Path,
    kind: FileKind,
    expected: Expected,
    note: &QuarantineNote,
) -> Result<Install> {
    engine.with_checkpoint_lock(|m, dir| {
        if let Some(name) = rel.strip_prefix(&format!("{DATA_DIR}/")) {
            let named = m
                .collections
                .iter()
                .flat_map(|c| c.data_files.iter().chain(c.index.iter()))
                .any(|s| s.file == name && parse_xxh3(&s.xxh3) == Some(expected.xxh3));
            if !named {
                return Ok(Install::Moot);
            }
        }
        install_copy(dir, rel, source, kind, expected, note)
    })
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Rebuild {
    /// Rewritten from the engine's verified in-memory state; the damaged file is in quarantine.
    Rebuilt {
        quarantined: Option<String>,
        checkpoint_seq: Option<u64>,
    },
    Moot,
}

/// Rebuild a damaged file of an open store from its in-memory state: `MANIFEST` is rewritten
/// from the manifest the engine holds; a `data/` file by a full checkpoint of its collection
/// (`Engine::rewrite_collection_files`). The damaged file is quarantined first, so the
/// checkpoint's sweep of unnamed files never deletes it.
pub fn rebuild_live(engine: &Engine, rel: &str, note: &QuarantineNote) -> Result<Rebuild> {
    if rel == MANIFEST_FILE || rel == crate::layout::MANIFEST_COPY_FILE {
        let mut quarantined = None;
        engine.rewrite_manifest(|_, dir| {
            quarantined = keep_in_quarantine(&OsStorage, dir, rel, note)?;
            Ok(())
        })?;
        return Ok(Rebuild::Rebuilt { quarantined, checkpoint_seq: None });
    }
    let Some(name) = rel.strip_prefix(&format!("{DATA_DIR}/")) else { return Ok(Rebuild::Moot) };
    let owner =
        engine.manifest().collections.iter().find(|c| c.data_files.iter().chain(c.index.iter()).any(|s| s.file == name)).map(|c| c.id);
    let Some(id) = owner else { return Ok(Rebuild::Moot) };
    let mut quarantined = None;
    let mut moot = false;
    let seq = engine.rewrite_collection_files(id, |m, dir| {
        // Checked again under the lock: a checkpoint may have replaced the file meanwhile.
        moot = !m.collections.iter().any(|c| c.id == id && c.data_files.iter().chain(c.index.iter()).any(|s| s.file == name));
        if !moot {
            quarantined = keep_in_quarantine(&OsStorage, dir, rel, note)?;
        }
        Ok(())
    })?;
    Ok(if moot { Rebuild::Moot } else { Rebuild::Rebuilt { quarantined, checkpoint_seq: Some(seq) } })
}

/// Paths of a store directory relative to it, for notes and reports.
pub fn relative(dir: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(dir).map(Path::to_path_buf).unwrap_or_else(|_| path.to_path_buf())
}

pub fn note(file: &str, check: &FileCheck, expected: Option<Expected>) -> QuarantineNote {
    let first = check.findings.first();
    QuarantineNote {
        file: file.to_string(),
        time_ms: now_ms(),
        kind: first.map_or(Damage::Checksum, |f| f.kind),
        offset: first.map_or(0, |f| f.offset),
        detail: first.map_or_else(String::new, |f| f.detail.clone()),
        bytes: check.bytes,
        expected_bytes: expected.map(|e| e.bytes),
        expected_xxh3: expected.map(|e| hex(e.xxh3)),
        found_xxh3: check.xxh3.clone(),
        repaired_from: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datafile::{DataFileHeader, DataFileWriter, KIND_BASE};
    use crate::distance::Metric;
    use crate::layout::NOTE_SUFFIX;
    use crate::wal::record::{encode_record, encode_segment_header, RECORD_TYPE_BATCH};

    fn temp_dir(tag: &str) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let d = std::env::temp_dir().join(format!("cairn-scrub-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("temp dir");
        d
    }

    fn segment_bytes(rows: usize) -> Vec<u8> {
        let mut w = DataFileWriter::new(&DataFileHeader {
            version: crate::datafile::DATAFILE_VERSION,
            dim: 4,
            collection_id: 1,
            covered_seq: 9,
            metric: Metric::L2,
            kind: KIND_BASE,
        });
        for i in 0..rows {
            w.upsert(&format!("row-{i}"), i as u64, &[i as f32, 1.0, 2.0, 3.0], "{\"k\":1}");
        }
        w.finish().0
    }

    fn wal_bytes(first: u64, n: u64) -> Vec<u8> {
        let mut buf = encode_segment_header(first).to_vec();
        for s in first..first + n {
            encode_record(&mut buf, RECORD_TYPE_BATCH, s, s, &[s as u8; 21]);
        }
        buf
    }

    fn expected(bytes: &[u8]) -> Expected {
        Expected { bytes: bytes.len() as u64, xxh3: crate::checksum::xxh3(bytes) }
    }

    fn check(path: &Path, kind: FileKind, exp: Option<Expected>) -> FileCheck {
        verify_file(path, kind, exp, &ScanControl::new(None))
    }

    /// Damage the bytes of `good` every way the scrub matrix does and return (name, bytes, expected kind).
    fn damages(good: &[u8]) -> Vec<(&'static str, Option<Vec<u8>>, Damage)> {
        let mut flip = good.to_vec();
        flip[good.len() / 2] ^= 0x10;
        let mut zero = good.to_vec();
        let z = good.len() / 3;
        for b in &mut zero[z..(z + 4096).min(good.len())] {
            *b = 0;
        }
        let mut appended = good.to_vec();
        appended.push(0xa5);
        vec![
            ("flip", Some(flip), Damage::Checksum),
            ("zero", Some(zero), Damage::Checksum),
            ("truncate", Some(good[..good.len() / 2 + 3].to_vec()), Damage::Truncated),
            ("append", Some(appended), Damage::Checksum),
            ("delete", None, Damage::Missing),
        ]
    }

    fn matrix(kind: FileKind, good: Vec<u8>, name: &str, with_expected: bool) {
        let dir = temp_dir("matrix");
        let path = dir.join(name);
        fs::write(&path, &good).expect("write");
        let exp = with_expected.then(|| expected(&good));
        let clean = check(&path, kind, exp);
        assert!(clean.findings.is_empty(), "{kind:?} clean file: {:?}", clean.findings);
        for (what, bytes, want) in damages(&good) {
            match &bytes {
                Some(b) => fs::write(&path, b).expect("write"),
                None => fs::remove_file(&path).expect("remove"),
            }
            let c = check(&path, kind, exp);
            assert!(c.findings.iter().any(|f| f.kind == want), "{kind:?} {what}: expected {want:?}, got {:?}", c.findings);
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_damage_is_found_with_its_kind() {
        matrix(FileKind::Segment, segment_bytes(300), "x.seg", true);
        matrix(FileKind::SegmentDeep, segment_bytes(300), "x.seg", true);
        matrix(FileKind::Segment, segment_bytes(300), "x.seg", false);
        matrix(FileKind::Blob, (0..20_000u32).flat_map(|i| i.to_le_bytes()).collect(), "x.hnsw", true);
        matrix(FileKind::Manifest, manifest::encode(&Manifest::default()), "MANIFEST", false);
        // A sealed WAL segment needs no recorded checksum: its framing finds every damage kind
        // (an appended byte is non-zero here; appended zeros look like preallocation).
        matrix(FileKind::Wal, wal_bytes(1, 400), "00000000000000000001.wal", false);
        // As a snapshot lists it, with its size and xxh3.
        matrix(FileKind::Wal, wal_bytes(1, 400), "00000000000000000001.wal", true);
    }

    #[test]
    fn a_damaged_segment_record_is_located_and_named() {
        let dir = temp_dir("named");
        let good = segment_bytes(50);
        let mut bad = good.clone();
        let at = DATAFILE_HEADER_LEN + 3 * (good.len() - DATAFILE_HEADER_LEN - FOOTER_LEN) / 50 + 30;
        bad[at] ^= 1;
        let path = dir.join("x.seg");
        fs::write(&path, &bad).expect("write");
        let c = check(&path, FileKind::Segment, Some(expected(&good)));
        assert_eq!(c.findings.len(), 1, "{:?}", c.findings);
        assert_eq!(c.findings[0].kind, Damage::Checksum);
        assert_eq!(c.findings[0].id.as_deref(), Some("row-3"));
        assert_eq!(c.records, 49);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_tail_is_not_damage_in_the_last_segment() {
        let dir = temp_dir("tail");
        let mut buf = wal_bytes(5, 10);
        buf.truncate(buf.len() - 7);
        let path = dir.join("00000000000000000005.wal");
        fs::write(&path, &buf).expect("write");
        assert!(check(&path, FileKind::WalTail, None).findings.is_empty());
        let sealed = check(&path, FileKind::Wal, None);
        assert_eq!(sealed.findings[0].kind, Damage::Truncated);
        assert_eq!(sealed.last_seq, Some(13));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_streamed_segment_matches_the_one_shot_checksum_for_any_chunking() {
        let dir = temp_dir("chunks");
        let good = segment_bytes(3000);
        let path = dir.join("x.seg");
        fs::write(&path, &good).expect("write");
        for rate in [None, Some(64.0 * 1024.0 * 20.0 * 1000.0)] {
            let c = verify_file(&path, FileKind::SegmentDeep, Some(expected(&good)), &ScanControl::new(rate));
            assert!(c.findings.is_empty(), "{:?}", c.findings);
            assert_eq!(c.records, 3000);
            assert_eq!(c.xxh3, Some(hex(crate::checksum::xxh3(&good))));
        }
        let _ = fs::remove_dir_all(&dir);
    }

    const RANGE_BYTES: u64 = 32 << 20;

    /// Hash `path` by `ranges` in reverse order, as tasks on different threads may finish.
    fn by_ranges(path: &Path, kind: FileKind, exp: Expected, ctl: &ScanControl) -> Option<FileCheck> {
        let split = ctl.split_open(exp.bytes);
        let cuts = ranges(exp.bytes, RANGE_BYTES);
        for w in cuts.windows(2).rev() {
            hash_range(ctl, split, path, w[0], w[1]).expect("valid range");
        }
        split_finish(ctl, split, path, kind, exp).expect("open split")
    }

    #[test]
    fn a_file_hashed_by_ranges_is_proven_intact_or_left_to_a_whole_file_check() {
        let dir = temp_dir("ranges");
        // Large enough for several ranges; the tail is not a whole block.
        let mut rows = Vec::new();
        while rows.len() < (3 * RANGE_BYTES + 5000) as usize {
            rows.extend_from_slice(&(rows.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
        }
        let good = rows;
        assert!(ranges(good.len() as u64, RANGE_BYTES).len() > 3);
        let exp = expected(&good);
        let path = dir.join("x.hnsw");
        fs::write(&path, &good).expect("write");
        let ok = by_ranges(&path, FileKind::Blob, exp, &ScanControl::new(None)).expect("intact");
        assert!(ok.findings.is_empty() && !ok.cancelled);
        assert_eq!((ok.bytes, ok.read, ok.xxh3.clone()), (exp.bytes, exp.bytes, Some(hex(exp.xxh3))));
        for (what, bytes, want) in damages(&good) {
            match &bytes {
                Some(b) => fs::write(&path, b).expect("write"),
                None => fs::remove_file(&path).expect("remove"),
            }
            assert!(by_ranges(&path, FileKind::Blob, exp, &ScanControl::new(None)).is_none(), "{what}: ranges must not prove it intact");
            // The whole-file check the caller falls back to reports it.
            let c = check(&path, FileKind::Blob, Some(exp));
            assert!(c.findings.iter().any(|f| f.kind == want), "{what}: {:?}", c.findings);
        }
        // A recorded checksum that is wrong (the damage is in what was recorded) is not proven either.
        fs::write(&path, &good).expect("write");
        assert!(by_ranges(&path, FileKind::Blob, Expected { bytes: exp.bytes, xxh3: exp.xxh3 ^ 1 }, &ScanControl::new(None)).is_none());
        // A range that skips or repeats bytes never completes the fold.
        let ctl = ScanControl::new(None);
        let split = ctl.split_open(exp.bytes);
        let cuts = ranges(exp.bytes, RANGE_BYTES);
        hash_range(&ctl, split, &path, cuts[0], cuts[1]).expect("range");
        hash_range(&ctl, split, &path, cuts[0], cuts[1]).expect("range");
        assert!(split_finish(&ctl, split, &path, FileKind::Blob, exp).expect("split").is_none());
        assert!(hash_range(&ctl, split, &path, cuts[0], cuts[1]).is_err(), "the split is closed");
        let split = ctl.split_open(exp.bytes);
        assert!(hash_range(&ctl, split, &path, 1, cuts[1]).is_err(), "not a block boundary");
        // Cancelled: reported as such, not as damage.
        let ctl = ScanControl::new(None);
        ctl.cancel();
        let c = by_ranges(&path, FileKind::Blob, exp, &ctl).expect("cancelled");
        assert!(c.cancelled && c.findings.is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_segment_file_hashed_by_ranges_reports_its_footer_count() {
        let dir = temp_dir("seg-ranges");
        let mut w = DataFileWriter::new(&DataFileHeader {
            version: crate::datafile::DATAFILE_VERSION,
            dim: 4096,
            collection_id: 1,
            covered_seq: 9,
            metric: Metric::L2,
            kind: KIND_BASE,
        });
        let v = vec![0.25f32; 4096];
        let rows = (2 * RANGE_BYTES / (4096 * 4)) as usize + 40;
        for i in 0..rows {
            w.upsert(&format!("row-{i}"), i as u64, &v, "{}");
        }
        let good = w.finish().0;
        let path = dir.join("x.seg");
        fs::write(&path, &good).expect("write");
        let c = by_ranges(&path, FileKind::Segment, expected(&good), &ScanControl::new(None)).expect("intact");
        assert_eq!(c.records, rows as u64);
        assert_eq!(check(&path, FileKind::Segment, Some(expected(&good))).records, rows as u64);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn throttle_holds_the_rate_and_cancel_stops_a_scan() {
        let dir = temp_dir("throttle");
        let path = dir.join("x.hnsw");
        let data = vec![7u8; 3 << 20];
        fs::write(&path, &data).expect("write");
        let ctl = ScanControl::new(Some(6.0 * 1024.0 * 1024.0));
        let t = Instant::now();
        let c = verify_file(&path, FileKind::Blob, Some(expected(&data)), &ctl);
        let secs = t.elapsed().as_secs_f64();
        assert!(c.findings.is_empty());
        // 3 MiB at 6 MiB/s is 0.5 s; generous bounds, never a tight timing assertion.
        assert!(secs > 0.3, "took {secs}s");
        let ctl = ScanControl::new(Some(1024.0 * 1024.0));
        ctl.cancel();
        assert!(verify_file(&path, FileKind::Blob, None, &ctl).cancelled);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn install_copy_refuses_a_copy_that_does_not_verify_and_quarantines_what_it_replaces() {
        let dir = temp_dir("install");
        fs::create_dir_all(dir.join("data")).expect("mkdir");
        let good = segment_bytes(20);
        let mut bad = good.clone();
        bad[100] ^= 4;
        fs::write(dir.join("data/x.seg"), &bad).expect("write");
        let linked = dir.join("linked.seg");
        fs::hard_link(dir.join("data/x.seg"), &linked).expect("link");
        let exp = expected(&good);
        let found = check(&dir.join("data/x.seg"), FileKind::Segment, Some(exp));
        let n = note("data/x.seg", &found, Some(exp));
        // A hard link shares the damaged bytes: verification rejects it and nothing changes.
        let r = install_copy(&dir, "data/x.seg", &linked, FileKind::Segment, exp, &n).expect("install");
        assert!(matches!(r, Install::Rejected { .. }), "{r:?}");
        assert_eq!(fs::read(dir.join("data/x.seg")).expect("read"), bad);
        let copy = dir.join("copy.seg");
        fs::write(&copy, &good).expect("write");
        let r = install_copy(&dir, "data/x.seg", &copy, FileKind::Segment, exp, &n).expect("install");
        let Install::Installed { quarantined: Some(q) } = r else { panic!("{r:?}") };
        assert_eq!(fs::read(dir.join("data/x.seg")).expect("read"), good);
        assert_eq!(fs::read(dir.join(&q)).expect("quarantined"), bad);
        let kept: QuarantineNote = serde_json::from_slice(&fs::read(dir.join(format!("{q}{NOTE_SUFFIX}"))).expect("note")).expect("json");
        assert_eq!(kept.file, "data/x.seg");
        assert_eq!(kept.found_xxh3, found.xxh3);
        let _ = fs::remove_dir_all(&dir);
    }

    fn engine_with_rows(dir: &Path, rows: usize) -> Engine {
        use crate::batch::{CollectionSpec, Op};
        let e = Engine::open(dir, crate::Options::default()).expect("open");
        e.commit(&[Op::CreateCollection(CollectionSpec { name: "docs".into(), dim: 4, metric: Metric::L2, m: 8, ef_construction: 32 })])
            .expect("create");
        for chunk in (0..rows).collect::<Vec<_>>().chunks(100) {
            let ops: Vec<Op> = chunk
                .iter()
                .map(|i| Op::Upsert {
                    collection: "docs".into(),
                    id: format!("id-{i}"),
                    vector: vec![*i as f32, 0.5, 1.0, -1.0],
                    metadata: format!("{{\"i\":{i}}}"),
                })
                .collect();
            e.commit(&ops).expect("upsert");
        }
        e.checkpoint().expect("checkpoint");
        e
    }

    fn rows_of(e: &Engine, n: usize) -> Vec<Option<(Vec<f32>, String)>> {
        (0..n).map(|i| e.get("docs", &format!("id-{i}")).expect("get")).collect()
    }

    #[test]
    fn damaged_live_files_are_rebuilt_from_memory_and_the_store_reopens_equal() {
        let dir = temp_dir("rebuild");
        let e = engine_with_rows(&dir, 3000);
        let want = rows_of(&e, 3000);
        let m = e.manifest();
        let seg = m.collections[0].data_files[0].clone();
        let ix = m.collections[0].index.clone().expect("graph file");
        for (rel, kind, r) in [(format!("data/{}", seg.file), FileKind::Segment, &seg), (format!("data/{}", ix.file), FileKind::Blob, &ix)]
        {
            let path = dir.join(&rel);
            let mut bytes = fs::read(&path).expect("read");
            let at = bytes.len() / 2;
            bytes[at] ^= 0x40;
            fs::write(&path, &bytes).expect("damage");
            let exp = Expected { bytes: r.bytes, xxh3: parse_xxh3(&r.xxh3).expect("hex") };
            let found = check(&path, kind, Some(exp));
            assert!(!found.findings.is_empty(), "{rel}");
            let out = rebuild_live(&e, &rel, &note(&rel, &found, Some(exp))).expect("rebuild");
            let Rebuild::Rebuilt { quarantined: Some(q), .. } = out else { panic!("{out:?}") };
            assert_eq!(fs::read(dir.join(&q)).expect("kept"), bytes, "the damaged bytes are kept");
            for c in &e.manifest().collections {
                for s in c.data_files.iter().chain(c.index.iter()) {
                    let exp = Expected { bytes: s.bytes, xxh3: parse_xxh3(&s.xxh3).expect("hex") };
                    let k = if s.file.ends_with(".seg") { FileKind::Segment } else { FileKind::Blob };
                    assert!(check(&dir.join("data").join(&s.file), k, Some(exp)).findings.is_empty());
                }
            }
        }
        fs::write(dir.join(MANIFEST_FILE), b"garbage").expect("damage manifest");
        let found = check(&dir.join(MANIFEST_FILE), FileKind::Manifest, None);
        assert!(!found.findings.is_empty());
        rebuild_live(&e, MANIFEST_FILE, &note(MANIFEST_FILE, &found, None)).expect("rebuild manifest");
        assert!(check(&dir.join(MANIFEST_FILE), FileKind::Manifest, None).findings.is_empty());
        e.close().expect("close");
        drop(e);
        let e = Engine::open(&dir, crate::Options::default()).expect("reopen");
        assert!(e.recovery_report().index_rebuilds.is_empty(), "{:?}", e.recovery_report());
        assert_eq!(rows_of(&e, 3000), want);
        e.close().expect("close");
        let _ = fs::remove_dir_all(&dir);
    }
}
