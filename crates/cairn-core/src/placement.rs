//! Placing an immutable, checksummed file (a snapshot's checkpoint or graph file) into a store
//! that a restore is building. Such a file is never written again once its manifest names it,
//! so a restore on the same file system can give it a second name instead of copying it:
//! a copy-on-write clone (`FICLONE`: its own inode, shared extents) where the file system
//! supports it, else a hard link (the same inode). Either way the source is read once, to
//! verify its checksum, and nothing is rewritten. `Placement::Copy` makes an independent copy,
//! verified by reading it back.
//!
//! What a link means for scrub: a hard-linked file and its source are one inode, so damage to
//! one is damage to both, and neither can repair the other; a clone shares its disk blocks
//! until written, so a bad block is shared too. Only a copy is an independent repair source.

use std::path::Path;

use crate::checksum::Xxh3Stream;
use crate::error::{Error, Result};
use crate::snapshot::hash_file;
use crate::storage::Storage;

/// How a restore puts immutable files into the store it builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Placement {
    /// Clone, else hard-link, else (another file system) copy.
    #[default]
    Link,
    /// Always an independent copy.
    Copy,
}

/// How one file was placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placed {
    Cloned,
    HardLinked,
    Copied,
}

/// Bytes per read while copying.
const CHUNK: usize = 1 << 20;

/// Put `from` at `to` (absent) as `placement` says, after checking that it has `bytes` bytes and
/// xxh3 `xxh3`. A mismatch is corruption naming `from`; nothing is left at `to` then.
pub fn place_verified(storage: &dyn Storage, from: &Path, to: &Path, bytes: u64, xxh3: &str, placement: Placement) -> Result<Placed> {
    if placement == Placement::Link {
        let (len, sum) = hash_file(storage, from).map_err(|e| missing(from, e))?;
        check(from, len, &sum, bytes, xxh3, "snapshot file does not match its manifest")?;
        if storage.reflink(from, to).is_ok() {
            // durability: the clone's own inode; the shared blocks were synced with the source.
            storage.open_read(to).and_then(|f| f.sync_data()).map_err(|e| Error::io(to, e))?;
            return Ok(Placed::Cloned);
        }
        if storage.hard_link(from, to).is_ok() {
            return Ok(Placed::HardLinked);
        }
    }
    copy_hashed(storage, from, to, bytes, xxh3)?;
    Ok(Placed::Copied)
}

fn missing(from: &Path, e: Error) -> Error {
    match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Error::corruption(from, 0, "snapshot file is missing"),
        other => other,
    }
}

fn check(path: &Path, len: u64, sum: &str, bytes: u64, xxh3: &str, what: &str) -> Result<()> {
    if len != bytes || sum != xxh3 {
        return Err(Error::corruption(path, 0, format!("{what} ({len} bytes, xxh3 {sum}; expected {bytes} bytes, xxh3 {xxh3})")));
    }
    Ok(())
}

/// Copy while hashing the source (one read of it), fdatasync, then read the copy back: a
/// restore must never produce a silently different store.
fn copy_hashed(storage: &dyn Storage, from: &Path, to: &Path, bytes: u64, xxh3: &str) -> Result<()> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| Error::io(&p, e)
    };
    let src = storage.open_read(from).map_err(|e| missing(from, Error::io(from, e)))?;
    let dst = storage.create(to).map_err(io(to))?;
    let mut h = Xxh3Stream::default();
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64;
    loop {
        let n = src.read_up_to(at, &mut buf).map_err(io(from))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        dst.write_at(at, &buf[..n]).map_err(io(to))?;
        at += n as u64;
    }
    let outcome =
        check(from, at, &format!("{:016x}", h.digest()), bytes, xxh3, "snapshot file does not match its manifest").and_then(|()| {
            dst.sync_data().map_err(io(to))?;
            let (len2, sum2) = hash_file(storage, to)?;
            check(to, len2, &sum2, bytes, xxh3, "copy differs from the snapshot file")
        });
    if outcome.is_err() {
        drop(dst);
        let _ = storage.remove(to);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::write_synced;
    use crate::storage::OsStorage;

    fn digest(b: &[u8]) -> String {
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(b))
    }

    /// The file's identity (device and inode), through the storage layer like all file access.
    fn identity(fs: &OsStorage, p: &Path) -> crate::storage::FileId {
        fs.open_read(p).and_then(|f| f.identity()).expect("identity")
    }

    #[test]
    fn link_shares_or_clones_and_copy_is_independent() {
        let dir = std::env::temp_dir().join(format!("cairn-placement-{}", std::process::id()));
        let fs = OsStorage;
        let _ = fs.remove_dir_all(&dir);
        fs.create_dir_all(&dir).expect("dir");
        let body = vec![7u8; 3 * CHUNK + 5];
        let src = dir.join("a.seg");
        write_synced(&fs, &src, &body).expect("write");
        let sum = digest(&body);
        let linked = place_verified(&fs, &src, &dir.join("l.seg"), body.len() as u64, &sum, Placement::Link).expect("link");
        assert_ne!(linked, Placed::Copied);
        if linked == Placed::HardLinked {
            assert_eq!(identity(&fs, &src), identity(&fs, &dir.join("l.seg")));
        }
        let copied = place_verified(&fs, &src, &dir.join("c.seg"), body.len() as u64, &sum, Placement::Copy).expect("copy");
        assert_eq!(copied, Placed::Copied);
        assert_ne!(identity(&fs, &src), identity(&fs, &dir.join("c.seg")));
        assert_eq!(fs.read(&dir.join("c.seg")).expect("read"), body);
        let _ = fs.remove_dir_all(&dir);
    }

    #[test]
    fn mismatch_is_corruption_and_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("cairn-placement-bad-{}", std::process::id()));
        let fs = OsStorage;
        let _ = fs.remove_dir_all(&dir);
        fs.create_dir_all(&dir).expect("dir");
        let src = dir.join("a.seg");
        write_synced(&fs, &src, b"hello").expect("write");
        let wrong = digest(b"hellO");
        for p in [Placement::Link, Placement::Copy] {
            let to = dir.join("t.seg");
            let e = place_verified(&fs, &src, &to, 5, &wrong, p).expect_err("mismatch");
            assert!(matches!(e, Error::Corruption { .. }), "{e:?}");
            assert!(!fs.exists(&to));
        }
        let _ = fs.remove_dir_all(&dir);
    }
}
