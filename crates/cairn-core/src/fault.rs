//! An in-memory `Storage` that models the page cache, for crash and fault-injection tests.
//!
//! Every file has `current` bytes (what the process sees) and `durable` bytes (what survives a
//! power cut). `sync_data` makes a file's bytes durable; `sync_dir` makes the directory's names
//! durable. `crash` keeps only what is durable, optionally with a torn prefix of the last
//! unsynced write, exactly as a kernel may have flushed part of it.

use std::any::Any;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::storage::{Storage, StorageFile};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOp {
    Write,
    Sync,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashKind {
    /// Drop every unsynced byte.
    DropUnsynced,
    /// Keep the first `n` bytes of the last unsynced write to each file (a torn write).
    TearLastWrite(usize),
    /// Keep a pseudo-random subset (from the seed) of each file's unsynced 4 KiB pages, as a
    /// kernel writing back dirty pages in any order may have done before the power went.
    PartialWriteback(u64),
}

/// Page size of `PartialWriteback`.
const PAGE: usize = 4096;

#[derive(Clone, Default)]
struct FileData {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// The last write not yet covered by a sync: (offset, bytes).
    last_unsynced: Option<(u64, Vec<u8>)>,
}

#[derive(Default)]
struct FsState {
    files: Vec<FileData>,
    names: BTreeMap<PathBuf, usize>,
    durable_names: BTreeMap<PathBuf, usize>,
    dirs: Vec<PathBuf>,
    write_count: u64,
    sync_count: u64,
    fail_at: Option<(FaultOp, u64)>,
    failed: bool,
}

#[derive(Clone, Default)]
pub struct FaultStorage {
    fs: Arc<Mutex<FsState>>,
}

fn lock(fs: &Mutex<FsState>) -> MutexGuard<'_, FsState> {
    fs.lock().unwrap_or_else(|p| p.into_inner())
}

fn injected() -> io::Error {
    io::Error::other("injected fault")
}

impl FaultStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fail the `n`th (1-based) write or sync from now on, and every one of that kind after it.
    pub fn fail_at(&self, op: FaultOp, n: u64) {
        let mut fs = lock(&self.fs);
        let base = match op {
            FaultOp::Write => fs.write_count,
            FaultOp::Sync => fs.sync_count,
        };
        fs.fail_at = Some((op, base + n));
    }

    pub fn clear_faults(&self) {
        let mut fs = lock(&self.fs);
        fs.fail_at = None;
    }

    /// Whether an injected fault has fired.
    pub fn fault_fired(&self) -> bool {
        lock(&self.fs).failed
    }

    pub fn counts(&self) -> (u64, u64) {
        let fs = lock(&self.fs);
        (fs.write_count, fs.sync_count)
    }

    /// A new storage holding only what would survive a power cut now.
    pub fn crash(&self, kind: CrashKind) -> FaultStorage {
        let fs = lock(&self.fs);
        let mut next = FsState::default();
        for (name, &id) in &fs.durable_names {
            let f = &fs.files[id];
            let mut bytes = f.durable.clone();
            if let CrashKind::PartialWriteback(seed) = kind {
                let mut x = seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                for start in (0..f.current.len()).step_by(PAGE) {
                    let end = (start + PAGE).min(f.current.len());
                    let page = &f.current[start..end];
                    if bytes.get(start..end) == Some(page) {
                        continue;
                    }
                    // xorshift: deterministic per seed, file and page.
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if x & 1 == 1 {
                        if bytes.len() < end {
                            bytes.resize(end, 0);
                        }
                        bytes[start..end].copy_from_slice(page);
                    }
                }
            }
            if let (CrashKind::TearLastWrite(n), Some((off, data))) = (kind, &f.last_unsynced) {
                let keep = &data[..n.min(data.len())];
                let end = *off as usize + keep.len();
                if bytes.len() < end {
                    bytes.resize(end, 0);
                }
                bytes[*off as usize..end].copy_from_slice(keep);
            }
            let new_id = next.files.len();
            next.files.push(FileData { current: bytes.clone(), durable: bytes, last_unsynced: None });
            next.names.insert(name.clone(), new_id);
            next.durable_names.insert(name.clone(), new_id);
        }
        next.dirs = fs.dirs.clone();
        FaultStorage { fs: Arc::new(Mutex::new(next)) }
    }

    /// Direct access for corruption tests: mutate a file's bytes (current and durable).
    pub fn mutate(&self, path: &Path, f: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        let id = *fs.names.get(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let file = &mut fs.files[id];
        f(&mut file.current);
        file.durable = file.current.clone();
        Ok(())
    }
}

impl FsState {
    fn check_fault(&mut self, op: FaultOp) -> io::Result<()> {
        let count = match op {
            FaultOp::Write => {
                self.write_count += 1;
                self.write_count
            }
            FaultOp::Sync => {
                self.sync_count += 1;
                self.sync_count
            }
        };
        if let Some((fop, n)) = self.fail_at {
            if fop == op && count >= n {
                self.failed = true;
                return Err(injected());
            }
        }
        Ok(())
    }
}

struct FaultFile {
    fs: Arc<Mutex<FsState>>,
    id: usize,
}

impl StorageFile for FaultFile {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        fs.check_fault(FaultOp::Write)?;
        let f = &mut fs.files[self.id];
        let end = offset as usize + data.len();
        if f.current.len() < end {
            f.current.resize(end, 0);
        }
        f.current[offset as usize..end].copy_from_slice(data);
        f.last_unsynced = Some((offset, data.to_vec()));
        Ok(())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let fs = lock(&self.fs);
        let f = &fs.files[self.id];
        let end = offset as usize + buf.len();
        if end > f.current.len() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        buf.copy_from_slice(&f.current[offset as usize..end]);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        fs.check_fault(FaultOp::Sync)?;
        let f = &mut fs.files[self.id];
        f.durable = f.current.clone();
        f.last_unsynced = None;
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        fs.check_fault(FaultOp::Write)?;
        fs.files[self.id].current.resize(len as usize, 0);
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.fs).files[self.id].current.len() as u64)
    }
}

struct NoLock;

impl Storage for FaultStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        if !fs.dirs.iter().any(|d| d == path) {
            fs.dirs.push(path.to_path_buf());
        }
        Ok(())
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut fs = lock(&self.fs);
        fs.check_fault(FaultOp::Write)?;
        let id = fs.files.len();
        fs.files.push(FileData::default());
        fs.names.insert(path.to_path_buf(), id);
        Ok(Box::new(FaultFile { fs: self.fs.clone(), id }))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let fs = lock(&self.fs);
        let id = *fs.names.get(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(Box::new(FaultFile { fs: self.fs.clone(), id }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let fs = lock(&self.fs);
        let id = *fs.names.get(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(fs.files[id].current.clone())
    }
    fn exists(&self, path: &Path) -> bool {
        let fs = lock(&self.fs);
        fs.names.contains_key(path) || fs.dirs.iter().any(|d| d == path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let fs = lock(&self.fs);
        Ok(fs
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        fs.check_fault(FaultOp::Write)?;
        let id = fs.names.remove(from).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        fs.names.insert(to.to_path_buf(), id);
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        fs.check_fault(FaultOp::Write)?;
        fs.names.remove(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(())
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        fs.check_fault(FaultOp::Write)?;
        if fs.names.contains_key(to) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let id = *fs.names.get(from).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        fs.names.insert(to.to_path_buf(), id);
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        fs.check_fault(FaultOp::Sync)?;
        let FsState { names, durable_names, .. } = &mut *fs;
        durable_names.retain(|p, _| p.parent() != Some(dir));
        for (p, id) in names.iter() {
            if p.parent() == Some(dir) {
                durable_names.insert(p.clone(), *id);
            }
        }
        Ok(())
    }
    fn lock(&self, _path: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        Ok(Box::new(NoLock))
    }
}
