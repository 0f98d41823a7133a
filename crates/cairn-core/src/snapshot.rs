//! Snapshots: a consistent set of immutable files at a sequence number, in
//! `snapshots/<seq>-<kind>/` (docs/format.md, "Snapshot").
//!
//! A snapshot is taken right after a checkpoint, under the checkpoint lock, so the files the
//! manifest names cannot be removed meanwhile. Checkpoint files are immutable and hard-linked;
//! the manifest is copied. An incremental snapshot holds only the checkpoint files its base
//! chain lacks, plus the archived WAL segments since its base (for point-in-time recovery
//! inside that span). The snapshot manifest `SNAPSHOT` is written last, under a temporary
//! directory name that is renamed into place, so a snapshot killed halfway is never listed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checksum::Xxh3Stream;
use crate::durable::{copy_synced, write_synced};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::layout::{ARCHIVE_DIR, DATA_DIR, GRAPH_EXT, MANIFEST_FILE, SNAPSHOTS_DIR, SNAPSHOT_FILE, TMP_SUFFIX, WAL_DIR};
use crate::manifest::{self, decode_framed, encode_framed, Manifest};
use crate::storage::{OsStorage, Storage};

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"CAIRNSNP";
pub const SNAPSHOT_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SnapshotFile {
    /// Relative to the snapshot directory: `MANIFEST`, `data/...` or `wal/...`.
    pub path: String,
    pub bytes: u64,
    pub xxh3: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SnapshotInfo {
    pub id: String,
    pub seq: u64,
    pub time_ms: u64,
    /// "full" or "incremental".
    pub kind: String,
    pub base: Option<String>,
    /// Wall-clock creation time in ns: orders snapshots taken at the same seq (a full and an
    /// incremental with no write between), so "the newest snapshot" is the one taken last.
    #[serde(default)]
    pub created_ns: u64,
    pub bytes: u64,
    pub files: Vec<SnapshotFile>,
}

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(p, e)
}

/// Bytes hashed per read by `hash_file`.
const HASH_CHUNK: usize = 1 << 20;

/// xxh3 and length of a file, streamed.
pub fn hash_file(storage: &dyn Storage, path: &Path) -> Result<(u64, String)> {
    let f = storage.open_read(path).map_err(io(path))?;
    let mut h = Xxh3Stream::default();
    let mut buf = vec![0u8; HASH_CHUNK];
    let mut len = 0u64;
    loop {
        let n = f.read_up_to(len, &mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, format!("{:016x}", h.digest())))
}

/// Complete snapshots of the store in `dir` on the real file system (see `list_on`).
pub fn list(dir: &Path) -> Result<Vec<SnapshotInfo>> {
    list_on(&OsStorage, dir)
}

/// Complete snapshots of the store in `dir`, oldest first. Leftover `*.tmp` directories of
/// interrupted snapshots are ignored here and removed by the next `take`.
pub fn list_on(storage: &dyn Storage, dir: &Path) -> Result<Vec<SnapshotInfo>> {
    let root = dir.join(SNAPSHOTS_DIR);
    let mut out = Vec::new();
    let names = match storage.list(&root) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(&root, e)),
    };
    for name in names {
        if name.ends_with(TMP_SUFFIX) {
            continue;
        }
        out.push(read_info(storage, &root.join(&name))?);
    }
    out.sort_by(|a, b| (a.seq, a.created_ns, &a.id).cmp(&(b.seq, b.created_ns, &b.id)));
    Ok(out)
}

pub fn read_info(storage: &dyn Storage, snapshot_dir: &Path) -> Result<SnapshotInfo> {
    let path = snapshot_dir.join(SNAPSHOT_FILE);
    let buf = storage.read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::corruption(&path, 0, "snapshot manifest is missing"),
        _ => Error::io(&path, e),
    })?;
    let body = decode_framed(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, &buf, &path)?;
    serde_json::from_slice(body).map_err(|e| Error::corruption(&path, 0, format!("snapshot manifest body: {e}")))
}

/// The chain a snapshot restores from: itself and its bases, oldest (the full one) first.
pub fn chain(all: &[SnapshotInfo], id: &str) -> Result<Vec<SnapshotInfo>> {
    let mut out = Vec::new();
    let mut next = Some(id.to_string());
    while let Some(id) = next {
        let s = all
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| Error::NotFound(format!("snapshot '{id}' (needed by a later incremental) is missing")))?;
        next = s.base.clone();
        out.push(s.clone());
    }
    out.reverse();
    Ok(out)
}

/// Checkpoint the store and snapshot the result, through the engine's storage.
pub fn take(engine: &Engine, incremental: bool) -> Result<SnapshotInfo> {
    let storage = engine.storage().clone();
    let (_, info) = engine.checkpoint_then(|m, dir| write_snapshot(storage.as_ref(), dir, m, incremental))?;
    Ok(info)
}

fn write_snapshot(storage: &dyn Storage, dir: &Path, m: &Manifest, incremental: bool) -> Result<SnapshotInfo> {
    let root = dir.join(SNAPSHOTS_DIR);
    if !storage.is_dir(&root) {
        storage.create_dir_all(&root).map_err(io(&root))?;
        // durability: a snapshot is published in `snapshots/`, whose own name must survive too.
        storage.sync_dir(dir).map_err(io(dir))?;
    }
    for name in storage.list(&root).map_err(io(&root))? {
        if name.ends_with(TMP_SUFFIX) {
            let p = root.join(&name);
            storage.remove_dir_all(&p).map_err(io(&p))?;
        }
    }
    let all = list_on(storage, dir)?;
    let base = if incremental {
        Some(
            all.last()
                .cloned()
                .ok_or_else(|| Error::InvalidArgument("an incremental snapshot needs an earlier snapshot as its base".into()))?,
        )
    } else {
        None
    };
    let kind = if incremental { "incremental" } else { "full" };
    let id = format!("{:020}-{kind}", m.checkpoint_seq);
    if all.iter().any(|s| s.id == id) {
        return Err(Error::AlreadyExists(format!("snapshot '{id}' already exists (no write since it was taken)")));
    }
    // Files the base chain already holds, by name.
    let mut held: HashSet<String> = HashSet::new();
    if let Some(b) = &base {
        for s in chain(&all, &b.id)? {
            held.extend(s.files.iter().map(|f| f.path.clone()));
        }
    }
    let tmp = root.join(format!("{id}{TMP_SUFFIX}"));
    storage.create_dir_all(&tmp.join(DATA_DIR)).map_err(io(&tmp))?;
    storage.create_dir_all(&tmp.join(WAL_DIR)).map_err(io(&tmp))?;
    let mut files = Vec::new();
    let mut snap_manifest = m.clone();
    snap_manifest.clean_shutdown_seq = None;
    for c in &mut snap_manifest.collections {
        for s in &c.data_files {
            let rel = format!("{DATA_DIR}/{}", s.file);
            if !held.contains(&rel) {
                link(storage, &dir.join(&rel), &tmp.join(&rel))?;
                files.push(SnapshotFile { path: rel, bytes: s.bytes, xxh3: s.xxh3.clone() });
            }
        }
        if let Some(s) = &c.payload_file {
            let rel = format!("{DATA_DIR}/{}", s.file);
            if !held.contains(&rel) {
                link(storage, &dir.join(&rel), &tmp.join(&rel))?;
                files.push(SnapshotFile { path: rel, bytes: s.bytes, xxh3: s.xxh3.clone() });
            }
        }
        // The graph is derived data and large: an incremental keeps the base's graph file when
        // the base has one for this collection (open inserts the newer rows into it).
        if let Some(ix) = c.index.clone() {
            let rel = format!("{DATA_DIR}/{}", ix.file);
            if held.contains(&rel) {
                continue;
            }
            if incremental {
                c.index = base_index(&all, base.as_ref(), c.id)?;
            } else {
                link(storage, &dir.join(&rel), &tmp.join(&rel))?;
                files.push(SnapshotFile { path: rel, bytes: ix.bytes, xxh3: ix.xxh3 });
            }
        }
    }
    if let Some(b) = &base {
        // Archived WAL since the base, so that point-in-time recovery inside this span needs
        // nothing but the snapshots.
        let archive = dir.join(ARCHIVE_DIR);
        let mut names: Vec<(u64, String)> = storage
            .list(&archive)
            .map_err(io(&archive))?
            .into_iter()
            .filter_map(|n| crate::layout::parse_wal_segment_name(&n).map(|s| (s, n)))
            .collect();
        names.sort();
        for (i, (first, name)) in names.iter().enumerate() {
            let next_first = names.get(i + 1).map_or(u64::MAX, |n| n.0);
            // Keep segments that hold any record in (base.seq, m.checkpoint_seq].
            if next_first > b.seq + 1 && *first <= m.checkpoint_seq {
                let rel = format!("{WAL_DIR}/{name}");
                link(storage, &archive.join(name), &tmp.join(&rel))?;
                let (bytes, xxh3) = hash_file(storage, &tmp.join(&rel))?;
                files.push(SnapshotFile { path: rel, bytes, xxh3 });
            }
        }
    }
    let manifest_bytes = manifest::encode(&snap_manifest);
    let mpath = tmp.join(MANIFEST_FILE);
    write_synced(storage, &mpath, &manifest_bytes).map_err(io(&mpath))?;
    files.push(SnapshotFile {
        path: MANIFEST_FILE.to_string(),
        bytes: manifest_bytes.len() as u64,
        xxh3: format!("{:016x}", crate::checksum::xxh3(&manifest_bytes)),
    });
    let info = SnapshotInfo {
        id: id.clone(),
        seq: m.checkpoint_seq,
        time_ms: m.checkpoint_time_ms,
        kind: kind.to_string(),
        base: base.map(|b| b.id),
        created_ns: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0),
        bytes: files.iter().map(|f| f.bytes).sum(),
        files,
    };
    let body = serde_json::to_vec_pretty(&info).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let spath = tmp.join(SNAPSHOT_FILE);
    write_synced(storage, &spath, &encode_framed(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, &body)).map_err(io(&spath))?;
    for sub in [DATA_DIR, WAL_DIR] {
        // durability: the links must be durable before the snapshot is published.
        let d = tmp.join(sub);
        storage.sync_dir(&d).map_err(io(&d))?;
    }
    storage.sync_dir(&tmp).map_err(io(&tmp))?;
    let final_dir = root.join(&id);
    storage.rename(&tmp, &final_dir).map_err(io(&tmp))?;
    // durability: publishing the snapshot is the rename; make it survive a power cut.
    storage.sync_dir(&root).map_err(io(&root))?;
    Ok(info)
}

/// The newest graph file of `collection_id` in the base chain, if any.
fn base_index(all: &[SnapshotInfo], base: Option<&SnapshotInfo>, collection_id: u64) -> Result<Option<crate::state::FileRef>> {
    let Some(b) = base else { return Ok(None) };
    let prefix = format!("{DATA_DIR}/{collection_id:020}-");
    for s in chain(all, &b.id)?.iter().rev() {
        if let Some(f) = s.files.iter().find(|f| f.path.starts_with(&prefix) && f.path.ends_with(GRAPH_EXT)) {
            return Ok(Some(crate::state::FileRef {
                file: f.path[DATA_DIR.len() + 1..].to_string(),
                bytes: f.bytes,
                xxh3: f.xxh3.clone(),
                records: 0,
                covered_seq: s.seq,
            }));
        }
    }
    Ok(None)
}

fn link(storage: &dyn Storage, from: &Path, to: &Path) -> Result<()> {
    match storage.hard_link(from, to) {
        Ok(()) => Ok(()),
        // Another file system (or no hard links): copy, then sync the copy.
        Err(_) => copy_synced(storage, from, to).map(|_| ()).map_err(io(from)),
    }
}

/// Directory of a snapshot by id.
pub fn snapshot_dir(dir: &Path, id: &str) -> PathBuf {
    dir.join(SNAPSHOTS_DIR).join(id)
}
