//! The last scrub's result (docs/format.md, "Scrub result"): a fixed 80-byte record in
//! `<store>/SCRUB_RESULT`, replaced atomically after each scrub so that `cairn status` and
//! `/status` can show it without opening the store. A reader sees the previous result or the
//! new one, never a mix; a damaged file reads as corruption, never as a made-up result.

use std::path::Path;

use crate::checksum::xxh3;
use crate::durable::write_file_atomic;
use crate::error::{Error, Result};
use crate::layout::SCRUB_RESULT_FILE;
use crate::storage::Storage;
use crate::wal::record::{u32_at, u64_at};

pub const SCRUB_RESULT_MAGIC: &[u8; 8] = b"CAIRNSCR";
pub const SCRUB_RESULT_VERSION: u32 = 1;
const OFF_VERSION: usize = 8;
const OFF_FLAGS: usize = 12;
const OFF_TIME: usize = 16;
const OFF_DURATION: usize = 24;
const OFF_FILES: usize = 32;
const OFF_BYTES: usize = 40;
const OFF_CORRUPT: usize = 48;
const OFF_REPAIRED: usize = 56;
const OFF_UNREPAIRED: usize = 64;
const OFF_CHECKSUM: usize = 72;
pub const SCRUB_RESULT_LEN: usize = 80;
/// Flags bit 0: the scrub was asked to repair.
const FLAG_REPAIR: u32 = 1;

/// What one scrub found and did, in counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrubResult {
    /// When it finished, ms since the Unix epoch.
    pub time_ms: u64,
    pub duration_ms: u64,
    /// Names checked.
    pub files: u64,
    /// Bytes read and verified.
    pub bytes: u64,
    /// Damage found (findings, each a file and an offset).
    pub corrupt: u64,
    /// Files repaired.
    pub repaired: u64,
    /// Damaged files left as they are.
    pub unrepaired: u64,
    /// The scrub was asked to repair.
    pub repair: bool,
}

pub fn encode(r: &ScrubResult) -> [u8; SCRUB_RESULT_LEN] {
    let mut b = [0u8; SCRUB_RESULT_LEN];
    b[..8].copy_from_slice(SCRUB_RESULT_MAGIC);
    b[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&SCRUB_RESULT_VERSION.to_le_bytes());
    let flags = if r.repair { FLAG_REPAIR } else { 0 };
    b[OFF_FLAGS..OFF_FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
    for (off, v) in [
        (OFF_TIME, r.time_ms),
        (OFF_DURATION, r.duration_ms),
        (OFF_FILES, r.files),
        (OFF_BYTES, r.bytes),
        (OFF_CORRUPT, r.corrupt),
        (OFF_REPAIRED, r.repaired),
        (OFF_UNREPAIRED, r.unrepaired),
    ] {
        b[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    let sum = xxh3(&b[..OFF_CHECKSUM]);
    b[OFF_CHECKSUM..].copy_from_slice(&sum.to_le_bytes());
    b
}

pub fn decode(buf: &[u8], path: &Path) -> Result<ScrubResult> {
    if buf.len() != SCRUB_RESULT_LEN {
        return Err(Error::corruption(path, 0, format!("scrub result is {} bytes, expected {SCRUB_RESULT_LEN}", buf.len())));
    }
    if &buf[..8] != SCRUB_RESULT_MAGIC {
        return Err(Error::corruption(path, 0, "bad scrub result magic"));
    }
    let (want, got) = (u64_at(buf, OFF_CHECKSUM), xxh3(&buf[..OFF_CHECKSUM]));
    if want != got {
        return Err(Error::ChecksumMismatch { file: path.to_path_buf(), offset: OFF_CHECKSUM as u64, expected: want, got });
    }
    let version = u32_at(buf, OFF_VERSION);
    if version != SCRUB_RESULT_VERSION {
        return Err(Error::corruption(path, OFF_VERSION as u64, format!("unsupported scrub result version {version}")));
    }
    let flags = u32_at(buf, OFF_FLAGS);
    if flags & !FLAG_REPAIR != 0 {
        return Err(Error::corruption(path, OFF_FLAGS as u64, format!("unknown scrub result flags {flags:#x}")));
    }
    Ok(ScrubResult {
        time_ms: u64_at(buf, OFF_TIME),
        duration_ms: u64_at(buf, OFF_DURATION),
        files: u64_at(buf, OFF_FILES),
        bytes: u64_at(buf, OFF_BYTES),
        corrupt: u64_at(buf, OFF_CORRUPT),
        repaired: u64_at(buf, OFF_REPAIRED),
        unrepaired: u64_at(buf, OFF_UNREPAIRED),
        repair: flags & FLAG_REPAIR != 0,
    })
}

/// Replace `<dir>/SCRUB_RESULT` durably (temp file, fsync, rename, directory fsync).
pub fn write(storage: &dyn Storage, dir: &Path, r: &ScrubResult) -> Result<()> {
    let path = dir.join(SCRUB_RESULT_FILE);
    write_file_atomic(storage, &path, &encode(r)).map_err(|e| Error::io(&path, e))
}

/// The last scrub's result, or None when no scrub has recorded one.
pub fn read(storage: &dyn Storage, dir: &Path) -> Result<Option<ScrubResult>> {
    let path = dir.join(SCRUB_RESULT_FILE);
    if !storage.exists(&path) {
        return Ok(None);
    }
    let buf = storage.read(&path).map_err(|e| Error::io(&path, e))?;
    decode(&buf, &path).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::{CrashKind, FaultStorage};

    fn sample() -> ScrubResult {
        ScrubResult {
            time_ms: 1_700_000_000_123,
            duration_ms: 42,
            files: 7,
            bytes: 123_456_789,
            corrupt: 2,
            repaired: 1,
            unrepaired: 1,
            repair: true,
        }
    }

    #[test]
    fn scrub_result_round_trips_and_survives_a_power_cut_once_written() {
        let fs = FaultStorage::new();
        let dir = Path::new("/s");
        fs.create_dir_all(dir).expect("mkdir");
        assert_eq!(read(&fs, dir).expect("read"), None);
        write(&fs, dir, &sample()).expect("write");
        let after = fs.crash(CrashKind::DropUnsynced);
        assert_eq!(read(&after, dir).expect("read"), Some(sample()));
        let next = ScrubResult { repair: false, corrupt: 0, repaired: 0, unrepaired: 0, ..sample() };
        write(&fs, dir, &next).expect("write");
        assert_eq!(read(&fs.crash(CrashKind::DropUnsynced), dir).expect("read"), Some(next));
    }

    #[test]
    fn a_flipped_bit_or_a_short_file_is_corruption() {
        let good = encode(&sample());
        let p = Path::new("SCRUB_RESULT");
        for i in 0..SCRUB_RESULT_LEN {
            let mut bad = good;
            bad[i] ^= 0x10;
            assert!(decode(&bad, p).is_err(), "bit flip at byte {i} accepted");
        }
        assert!(decode(&good[..SCRUB_RESULT_LEN - 1], p).is_err());
        assert_eq!(decode(&good, p).expect("decode"), sample());
    }
}
