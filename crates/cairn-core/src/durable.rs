//! The one copy of the durable-replace sequence: write a temp file, fsync it, rename it into
//! place, fsync the directory. A reader sees the old file or the new one, never a mix, and the
//! new one survives a power cut once this returns.

use std::io;
use std::path::{Path, PathBuf};

use crate::checksum::Xxh3Stream;
use crate::layout::TMP_SUFFIX;
use crate::storage::{Storage, StorageFile};

/// Write a whole file durably under a temporary name and rename it into place.
pub fn write_file_atomic(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    write_synced(storage, &tmp, bytes)?;
    storage.rename(&tmp, path)?;
    // durability: the rename is only durable once the directory is synced.
    storage.sync_dir(parent(path))
}

/// Create (or truncate) `path`, write `bytes` and fdatasync them. The name itself is durable
/// only after the caller syncs the directory.
pub fn write_synced(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let file = storage.create(path)?;
    file.write_at(0, bytes)?;
    file.sync_data()
}

/// A file written front to back under its temporary name as its bytes are produced (so no
/// caller holds a whole file in memory), with the xxh3 of everything written: the digest a
/// manifest records. `commit` fdatasyncs it and renames it into place; the name is durable only
/// after the caller syncs the directory. Dropped uncommitted, it stays a temporary file, which
/// the next checkpoint or open removes.
pub struct StagedFile {
    file: Box<dyn StorageFile>,
    tmp: PathBuf,
    len: u64,
    digest: Xxh3Stream,
}

impl StagedFile {
    pub fn create(storage: &dyn Storage, path: &Path) -> io::Result<StagedFile> {
        let tmp = temp_path(path);
        Ok(StagedFile { file: storage.create(&tmp)?, tmp, len: 0, digest: Xxh3Stream::default() })
    }

    /// The temporary name, for errors.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_at(self.len, bytes)?;
        self.digest.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// fdatasync the file and rename it to `path`; returns its length and xxh3.
    pub fn commit(self, storage: &dyn Storage, path: &Path) -> io::Result<(u64, u64)> {
        self.file.sync_data()?;
        storage.rename(&self.tmp, path)?;
        Ok((self.len, self.digest.digest()))
    }
}

impl io::Write for StagedFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.append(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `name` → `name.tmp` in the same directory, so the rename never crosses file systems.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(TMP_SUFFIX);
    path.with_file_name(name)
}

pub fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Bytes moved per read and write by `copy_synced`.
const COPY_CHUNK: usize = 1 << 20;

/// Copy `from` to `to` (created or truncated) chunk by chunk and fdatasync the copy; returns the
/// bytes copied. The name `to` is durable only after the caller syncs its directory.
pub fn copy_synced(storage: &dyn Storage, from: &Path, to: &Path) -> io::Result<u64> {
    let (copy, n) = copy(storage, from, to)?;
    copy.sync_data()?;
    Ok(n)
}

/// Copy `from` to `to` (created or truncated) chunk by chunk, not synced; returns the open copy
/// and its length.
pub fn copy(storage: &dyn Storage, from: &Path, to: &Path) -> io::Result<(Box<dyn StorageFile>, u64)> {
    let src = storage.open_read(from)?;
    let dst = storage.create(to)?;
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut at = 0u64;
    loop {
        let n = src.read_up_to(at, &mut buf)?;
        if n == 0 {
            break;
        }
        dst.write_at(at, &buf[..n])?;
        at += n as u64;
    }
    Ok((dst, at))
}
