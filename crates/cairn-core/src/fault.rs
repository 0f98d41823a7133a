//! An in-memory `Storage` that models the page cache, for crash and fault-injection tests.
//!
//! Every file has `current` bytes (what the process sees) and `durable` bytes (what survives a
//! power cut). Names point at file and directory ids; each directory also keeps the entries a
//! power cut would leave. `sync_data` makes a file's bytes durable; `sync_dir` makes the
//! directory's names durable (new, renamed, linked and removed ones alike). `crash` keeps only what is durable, optionally with a torn prefix of the last
//! unsynced write, exactly as a kernel may have flushed part of it.

use std::any::Any;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::storage::{FileId, Storage, StorageFile};

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

/// What a name points at: a file or a directory, by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    File(usize),
    Dir(usize),
}

/// Directory id of the root. Its entries are keyed by full path (`/store` or `store`), those
/// of every other directory by file name.
const ROOT: usize = 0;

struct FsState {
    files: Vec<FileData>,
    /// Every name the process sees, file or directory, by full path; the root is implicit.
    names: BTreeMap<PathBuf, Node>,
    /// Per directory id: its entries as a power cut would leave them, set by `sync_dir`.
    durable: Vec<BTreeMap<PathBuf, Node>>,
    write_count: u64,
    sync_count: u64,
    fail_at: Option<(FaultOp, u64)>,
    failed: bool,
}

impl Default for FsState {
    fn default() -> Self {
        FsState {
            files: Vec::new(),
            names: BTreeMap::new(),
            durable: vec![BTreeMap::new()],
            write_count: 0,
            sync_count: 0,
            fail_at: None,
            failed: false,
        }
    }
}

fn is_root(p: &Path) -> bool {
    p.as_os_str().is_empty() || p == Path::new("/")
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

/// The key of `path` in its parent's durable entries.
fn entry_key(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !is_root(p) => PathBuf::from(path.file_name().unwrap_or_default()),
        _ => path.to_path_buf(),
    }
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

    /// A file system holding `bytes`, synced, at `path` (its parent made): for tests that read
    /// one file.
    #[cfg(test)]
    pub(crate) fn holding(path: &Path, bytes: &[u8]) -> Self {
        let fs = Self::new();
        fs.create_dir_all(path.parent().expect("a file in a directory")).expect("dir");
        crate::durable::write_synced(&fs, path, bytes).expect("write");
        fs
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

    /// A new storage holding only what would survive a power cut now: the tree of durable
    /// directory entries from the root, each file with its durable bytes. Two durable names of
    /// one file stay hard links; a directory durably named twice (renamed, and only the new
    /// parent synced) keeps its first name.
    pub fn crash(&self, kind: CrashKind) -> FaultStorage {
        let fs = lock(&self.fs);
        let mut next = FsState::default();
        let mut file_ids: BTreeMap<usize, usize> = BTreeMap::new();
        let mut seen_dirs = std::collections::BTreeSet::new();
        // (old dir id, its path, new dir id)
        let mut stack = vec![(ROOT, PathBuf::new(), ROOT)];
        while let Some((old, base, new)) = stack.pop() {
            for (key, node) in &fs.durable[old] {
                let path = if old == ROOT { key.clone() } else { base.join(key) };
                let node = match *node {
                    Node::File(id) => {
                        let new_id = *file_ids.entry(id).or_insert_with(|| {
                            let bytes = survivor(&fs.files[id], id, kind);
                            next.files.push(FileData { current: bytes.clone(), durable: bytes, last_unsynced: None });
                            next.files.len() - 1
                        });
                        Node::File(new_id)
                    }
                    Node::Dir(d) => {
                        if !seen_dirs.insert(d) {
                            continue;
                        }
                        next.durable.push(BTreeMap::new());
                        let nd = next.durable.len() - 1;
                        stack.push((d, path.clone(), nd));
                        Node::Dir(nd)
                    }
                };
                next.names.insert(path, node);
                next.durable[new].insert(key.clone(), node);
            }
        }
        FaultStorage { fs: Arc::new(Mutex::new(next)) }
    }

    /// Direct access for corruption tests: mutate a file's bytes (current and durable).
    pub fn mutate(&self, path: &Path, f: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        let id = fs.file_id(path)?;
        let file = &mut fs.files[id];
        f(&mut file.current);
        file.durable = file.current.clone();
        Ok(())
    }
}

/// The bytes of file `id` after a power cut of `kind`.
fn survivor(f: &FileData, id: usize, kind: CrashKind) -> Vec<u8> {
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
    bytes
}

impl FsState {
    fn dir_id(&self, path: &Path) -> Option<usize> {
        if is_root(path) {
            return Some(ROOT);
        }
        match self.names.get(path) {
            Some(Node::Dir(id)) => Some(*id),
            _ => None,
        }
    }

    fn file_id(&self, path: &Path) -> io::Result<usize> {
        match self.names.get(path) {
            Some(Node::File(id)) => Ok(*id),
            Some(Node::Dir(_)) => Err(io::Error::other("is a directory")),
            None => Err(not_found()),
        }
    }

    /// The parent directory of `path` must exist, as for any creation on a real file system.
    fn check_parent(&self, path: &Path) -> io::Result<()> {
        let parent = path.parent().ok_or_else(not_found)?;
        self.dir_id(parent).map(|_| ()).ok_or_else(not_found)
    }

    fn children<'a>(&'a self, dir: &'a Path) -> impl Iterator<Item = (&'a PathBuf, &'a Node)> + 'a {
        self.names.iter().filter(move |(p, _)| p.parent().is_some_and(|q| q == dir || (is_root(q) && is_root(dir))))
    }

    /// `path` and every name under it.
    fn subtree(&self, path: &Path) -> Vec<PathBuf> {
        self.names.keys().filter(|p| p.starts_with(path)).cloned().collect()
    }

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
    fn read_up_to(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let fs = lock(&self.fs);
        let f = &fs.files[self.id];
        let start = (offset as usize).min(f.current.len());
        let n = buf.len().min(f.current.len() - start);
        buf[..n].copy_from_slice(&f.current[start..start + n]);
        Ok(n)
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
    fn identity(&self) -> io::Result<FileId> {
        Ok((0, self.id as u64))
    }
}

struct NoLock;

impl Storage for FaultStorage {
    /// Directories are created without a fault check. A new directory's name is durable once
    /// its parent is synced, except directly under the root: that stands for the file system
    /// the test mounts stores on, as if the store directory had existed beforehand.
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        let mut missing = Vec::new();
        for p in path.ancestors() {
            if is_root(p) {
                break;
            }
            match fs.names.get(p) {
                Some(Node::Dir(_)) => break,
                Some(Node::File(_)) => return Err(io::Error::from(io::ErrorKind::AlreadyExists)),
                None => missing.push(p.to_path_buf()),
            }
        }
        for p in missing.into_iter().rev() {
            fs.durable.push(BTreeMap::new());
            let node = Node::Dir(fs.durable.len() - 1);
            if p.parent().is_none_or(is_root) {
                fs.durable[ROOT].insert(entry_key(&p), node);
            }
            fs.names.insert(p, node);
        }
        Ok(())
    }
    /// An existing file is truncated in place (same id, like O_TRUNC), so its other names see it.
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut fs = lock(&self.fs);
        fs.check_fault(FaultOp::Write)?;
        let id = match fs.names.get(path) {
            Some(Node::File(id)) => {
                let id = *id;
                fs.files[id].current.clear();
                id
            }
            Some(Node::Dir(_)) => return Err(io::Error::other("is a directory")),
            None => {
                fs.check_parent(path)?;
                fs.files.push(FileData::default());
                let id = fs.files.len() - 1;
                fs.names.insert(path.to_path_buf(), Node::File(id));
                id
            }
        };
        Ok(Box::new(FaultFile { fs: self.fs.clone(), id }))
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let id = lock(&self.fs).file_id(path)?;
        Ok(Box::new(FaultFile { fs: self.fs.clone(), id }))
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        self.open(path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let fs = lock(&self.fs);
        let id = fs.file_id(path)?;
        Ok(fs.files[id].current.clone())
    }
    fn exists(&self, path: &Path) -> bool {
        is_root(path) || lock(&self.fs).names.contains_key(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        lock(&self.fs).dir_id(path).is_some()
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let fs = lock(&self.fs);
        fs.dir_id(dir).ok_or_else(not_found)?;
        Ok(fs.children(dir).filter_map(|(p, _)| p.file_name().map(|n| n.to_string_lossy().into_owned())).collect())
    }
    /// A file over a file replaces it; a directory over an empty directory replaces it; a
    /// directory takes every name under it along.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        fs.check_fault(FaultOp::Write)?;
        let node = *fs.names.get(from).ok_or_else(not_found)?;
        fs.check_parent(to)?;
        if from == to {
            return Ok(());
        }
        match (node, fs.names.get(to).copied()) {
            (_, None) | (Node::File(_), Some(Node::File(_))) => {}
            (Node::Dir(_), Some(Node::Dir(_))) if fs.children(to).next().is_none() => {}
            _ => return Err(io::Error::other("cannot rename over this target")),
        }
        if to.starts_with(from) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        fs.names.remove(to);
        for old in fs.subtree(from) {
            let n = fs.names.remove(&old).ok_or_else(not_found)?;
            let rest = old.strip_prefix(from).map_err(|_| not_found())?;
            let new = if rest.as_os_str().is_empty() { to.to_path_buf() } else { to.join(rest) };
            fs.names.insert(new, n);
        }
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        fs.check_fault(FaultOp::Write)?;
        fs.file_id(path)?;
        fs.names.remove(path);
        Ok(())
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        fs.check_fault(FaultOp::Write)?;
        if !matches!(fs.names.get(path), Some(Node::Dir(_))) {
            return Err(not_found());
        }
        if fs.children(path).next().is_some() {
            return Err(io::Error::other("directory not empty"));
        }
        fs.names.remove(path);
        Ok(())
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        fs.check_fault(FaultOp::Write)?;
        if !matches!(fs.names.get(path), Some(Node::Dir(_))) {
            return Err(not_found());
        }
        for p in fs.subtree(path) {
            fs.names.remove(&p);
        }
        Ok(())
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        fs.check_fault(FaultOp::Write)?;
        if fs.names.contains_key(to) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let id = fs.file_id(from)?;
        fs.check_parent(to)?;
        fs.names.insert(to.to_path_buf(), Node::File(id));
        Ok(())
    }
    /// The directory's entries as they are now become what a power cut leaves.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut fs = lock(&self.fs);
        fs.check_fault(FaultOp::Sync)?;
        let id = fs.dir_id(dir).ok_or_else(not_found)?;
        let entries: BTreeMap<PathBuf, Node> = fs.children(dir).map(|(p, n)| (entry_key(p), *n)).collect();
        fs.durable[id] = entries;
        Ok(())
    }
    fn lock(&self, _path: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        Ok(Box::new(NoLock))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::durable::write_synced;

    #[test]
    fn fault_storage_publishes_a_renamed_directory_only_once_its_parent_is_synced() {
        let fs = FaultStorage::new();
        let root = Path::new("/s");
        fs.create_dir_all(&root.join("a.tmp/sub")).expect("mkdir");
        write_synced(&fs, &root.join("a.tmp/sub/f"), b"bytes").expect("write");
        fs.sync_dir(&root.join("a.tmp/sub")).expect("sync");
        fs.sync_dir(&root.join("a.tmp")).expect("sync");
        fs.sync_dir(root).expect("sync");
        fs.rename(&root.join("a.tmp"), &root.join("a")).expect("rename");
        let names = |s: &FaultStorage| s.list(root).expect("list").into_iter().collect::<BTreeSet<_>>();
        // Not synced: a power cut keeps the old name, with the file under it.
        let cut = fs.crash(CrashKind::DropUnsynced);
        assert_eq!(names(&cut), BTreeSet::from(["a.tmp".to_string()]));
        assert_eq!(cut.read(&root.join("a.tmp/sub/f")).expect("read"), b"bytes");
        fs.sync_dir(root).expect("sync");
        let cut = fs.crash(CrashKind::DropUnsynced);
        assert_eq!(names(&cut), BTreeSet::from(["a".to_string()]));
        assert_eq!(cut.read(&root.join("a/sub/f")).expect("read"), b"bytes");
        // A file whose name was never synced is lost; a hard link survives as the same file.
        write_synced(&fs, &root.join("a/sub/g"), b"g").expect("write");
        fs.hard_link(&root.join("a/sub/f"), &root.join("a/sub/h")).expect("link");
        let cut = fs.crash(CrashKind::DropUnsynced);
        assert!(!cut.exists(&root.join("a/sub/g")) && !cut.exists(&root.join("a/sub/h")));
        fs.sync_dir(&root.join("a/sub")).expect("sync");
        let cut = fs.crash(CrashKind::DropUnsynced);
        let (f, h) = (cut.open(&root.join("a/sub/f")).expect("f"), cut.open(&root.join("a/sub/h")).expect("h"));
        assert_eq!(f.identity().expect("id"), h.identity().expect("id"));
        // Removing a directory is durable only once its parent is synced.
        fs.remove_dir_all(&root.join("a")).expect("remove");
        assert!(!fs.exists(&root.join("a")));
        assert!(fs.crash(CrashKind::DropUnsynced).exists(&root.join("a/sub/f")));
        fs.sync_dir(root).expect("sync");
        assert!(!fs.crash(CrashKind::DropUnsynced).exists(&root.join("a")));
    }

    #[test]
    fn create_over_a_file_truncates_it_in_place_as_every_name_of_it_sees() {
        let fs = FaultStorage::new();
        let d = Path::new("/s");
        fs.create_dir_all(d).expect("mkdir");
        write_synced(&fs, &d.join("f"), b"old bytes").expect("write");
        fs.hard_link(&d.join("f"), &d.join("link")).expect("link");
        fs.sync_dir(d).expect("sync");
        let f = fs.create(&d.join("f")).expect("create");
        assert_eq!(fs.read(&d.join("link")).expect("read"), b"");
        f.write_at(0, b"new").expect("write");
        assert_eq!(fs.read(&d.join("link")).expect("read"), b"new");
        // Not synced: a power cut keeps the old bytes under both names.
        let cut = fs.crash(CrashKind::DropUnsynced);
        assert_eq!(cut.read(&d.join("f")).expect("read"), b"old bytes");
        assert_eq!(cut.read(&d.join("link")).expect("read"), b"old bytes");
        // A file cannot be created in a directory that does not exist.
        assert_eq!(fs.create(&d.join("missing/f")).err().map(|e| e.kind()), Some(io::ErrorKind::NotFound));
    }
}
