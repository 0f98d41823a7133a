//! All file I/O of the engine, snapshot, restore, scrub and quarantine goes through `Storage`,
//! so that tests can inject faults (see `fault.rs`): fail the Nth write or sync, drop unsynced
//! bytes, tear a write. Only this file and `fault.rs` touch `std::fs`.

use std::any::Any;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

#[allow(clippy::len_without_is_empty, reason = "a file's length is a size, not a collection")]
pub trait StorageFile: Send + Sync {
    /// Positional write of the whole buffer.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Positional read of up to `buf.len()` bytes; fewer only at the end of the file (0 there).
    fn read_up_to(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Append up to `n` bytes read at `offset` to `buf`; fewer only at the end of the file.
    /// The real file system reads into the spare capacity, never zero-filling it first (one
    /// pass less over every byte a scrub checks).
    fn read_append(&self, offset: u64, n: usize, buf: &mut Vec<u8>) -> io::Result<usize> {
        let before = buf.len();
        buf.resize(before + n, 0);
        let got = self.read_up_to(offset, &mut buf[before..]);
        buf.truncate(before + *got.as_ref().unwrap_or(&0));
        got
    }
    /// fdatasync: data and the metadata needed to read it back (size), not timestamps.
    fn sync_data(&self) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    /// What the file is, as opposed to its name: two names with one identity are hard links,
    /// and a name whose identity changed was replaced.
    fn identity(&self) -> io::Result<FileId>;
}

/// (device, inode) on a real file system.
pub type FileId = (u64, u64);

pub trait Storage: Send + Sync {
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Create (or truncate) a file for writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Open an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Open an existing file for reading only (it may be read-only, as a backup can be).
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    fn exists(&self, path: &Path) -> bool;
    fn is_dir(&self, path: &Path) -> bool;
    /// File and directory names (not paths) in a directory, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Remove a file's name.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Remove an empty directory.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Remove a directory and everything under it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// A second name for an existing file (same bytes, no copy). Err(AlreadyExists) if `to` exists.
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// fsync a directory so that creations, renames and removals in it survive a power cut.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Create `to` as a copy-on-write clone of `from` (Linux `FICLONE`): its own inode sharing
    /// the same extents until either is written. Err(Unsupported) where the storage or the file
    /// system cannot (ext4, another file system); `to` is then left absent.
    fn reflink(&self, from: &Path, to: &Path) -> io::Result<()> {
        let _ = (from, to);
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    /// Last modification time in ms since the epoch (WAL archive retention by age).
    fn modified_ms(&self, path: &Path) -> io::Result<u64> {
        let _ = path;
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    /// Take the exclusive writer lock; the returned guard releases it when dropped.
    /// Err(WouldBlock) when another writer holds it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn Any + Send + Sync>>;
}

/// The real file system.
pub struct OsStorage;

struct OsFile(File);

impl StorageFile for OsFile {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn read_up_to(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.0.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }
    fn read_append(&self, offset: u64, n: usize, buf: &mut Vec<u8>) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        buf.reserve(n);
        let mut got = 0;
        while got < n {
            let spare = &mut buf.spare_capacity_mut()[..n - got];
            // SAFETY: pread writes at most `spare.len()` bytes into memory this Vec owns.
            let r =
                unsafe { libc::pread(self.0.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), (offset + got as u64) as libc::off_t) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if r == 0 {
                break;
            }
            // SAFETY: pread initialised exactly the `r` bytes after the current length.
            unsafe { buf.set_len(buf.len() + r as usize) };
            got += r as usize;
        }
        Ok(got)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn identity(&self) -> io::Result<FileId> {
        use std::os::unix::fs::MetadataExt;
        let m = self.0.metadata()?;
        Ok((m.dev(), m.ino()))
    }
}

/// Whether another open file description holds the writer lock at `path` (a store open in some
/// process), without taking it: a shared `flock` is tried and dropped at once. While it is held,
/// for a few microseconds, a writer opening the store would be refused with `Locked`. A missing
/// lock file means no writer ever opened the store.
pub fn lock_held(path: &Path) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    // SAFETY: plain syscall on a descriptor we own; closing `f` releases the shared lock.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(false);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(true)
    } else {
        Err(e)
    }
}

struct OsLock(File);

impl Drop for OsLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor we own; failure only means the lock is released at close.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl Storage for OsStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        Ok(Box::new(OsFile(f)))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(OsFile(f)))
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(OsFile(File::open(path)?)))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::hard_link(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    #[cfg(target_os = "linux")]
    fn reflink(&self, from: &Path, to: &Path) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let src = File::open(from)?;
        let dst = OpenOptions::new().write(true).create_new(true).open(to)?;
        // SAFETY: ioctl on two descriptors we own; FICLONE reads only the source descriptor.
        let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            drop(dst);
            let _ = fs::remove_file(to);
            return Err(e);
        }
        Ok(())
    }
    fn modified_ms(&self, path: &Path) -> io::Result<u64> {
        let t = fs::metadata(path)?.modified()?;
        Ok(t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0))
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        use std::os::fd::AsRawFd;
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        // flock locks belong to the open file description, so a second open() of the same
        // directory in this very process is refused too, not only one from another process.
        // SAFETY: plain syscall on a descriptor we own.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Box::new(OsLock(f)))
    }
}
