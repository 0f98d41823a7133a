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
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checksum::Xxh3Stream;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::layout::MANIFEST_FILE;
use crate::layout::{ARCHIVE_DIR, DATA_DIR, SNAPSHOTS_DIR, SNAPSHOT_FILE, TMP_SUFFIX, WAL_DIR};
use crate::manifest::{self, decode_framed, encode_framed, Manifest};

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

/// xxh3 and length of a file, streamed.
pub fn hash_file(path: &Path) -> Result<(u64, String)> {
    use std::io::Read;
    let mut f = fs::File::open(path).map_err(io(path))?;
    let mut h = Xxh3Stream::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, format!("{:016x}", h.digest())))
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|f| f.sync_all()).map_err(io(dir))
}

/// Complete snapshots of the store in `dir`, oldest first. Leftover `*.tmp` directories of
/// interrupted snapshots are ignored here and removed by the next `take`.
pub fn list(dir: &Path) -> Result<Vec<SnapshotInfo>> {
    let root = dir.join(SNAPSHOTS_DIR);
    let mut out = Vec::new();
    let entries = match fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(&root, e)),
    };
    for entry in entries {
        let name = entry.map_err(io(&root))?.file_name().to_string_lossy().into_owned();
        if name.ends_with(TMP_SUFFIX) {
            continue;
        }
        out.push(read_info(&root.join(&name))?);
    }
    out.sort_by(|a, b| (a.seq, a.created_ns, &a.id).cmp(&(b.seq, b.created_ns, &b.id)));
    Ok(out)
}

pub fn read_info(snapshot_dir: &Path) -> Result<SnapshotInfo> {
    let path = snapshot_dir.join(SNAPSHOT_FILE);
    let buf = fs::read(&path).map_err(|e| match e.kind() {
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

/// Checkpoint the store and snapshot the result.
pub fn take(engine: &Engine, incremental: bool) -> Result<SnapshotInfo> {
    let (_, info) = engine.checkpoint_then(|m, dir| write_snapshot(dir, m, incremental))?;
    Ok(info)
}

fn write_snapshot(dir: &Path, m: &Manifest, incremental: bool) -> Result<SnapshotInfo> {
    let root = dir.join(SNAPSHOTS_DIR);
    fs::create_dir_all(&root).map_err(io(&root))?;
    for entry in fs::read_dir(&root).map_err(io(&root))? {
        let p = entry.map_err(io(&root))?.path();
        if p.to_string_lossy().ends_with(TMP_SUFFIX) {
            fs::remove_dir_all(&p).map_err(io(&p))?;
        }
    }
    let all = list(dir)?;
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
    fs::create_dir_all(tmp.join(DATA_DIR)).map_err(io(&tmp))?;
    fs::create_dir_all(tmp.join(WAL_DIR)).map_err(io(&tmp))?;
    let mut files = Vec::new();
    let mut snap_manifest = m.clone();
    snap_manifest.clean_shutdown_seq = None;
    for c in &mut snap_manifest.collections {
        for s in &c.data_files {
            let rel = format!("{DATA_DIR}/{}", s.file);
            if !held.contains(&rel) {
                link(&dir.join(&rel), &tmp.join(&rel))?;
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
                link(&dir.join(&rel), &tmp.join(&rel))?;
                files.push(SnapshotFile { path: rel, bytes: ix.bytes, xxh3: ix.xxh3 });
            }
        }
    }
    if let Some(b) = &base {
        // Archived WAL since the base, so that point-in-time recovery inside this span needs
        // nothing but the snapshots.
        let archive = dir.join(ARCHIVE_DIR);
        let mut names: Vec<(u64, String)> = fs::read_dir(&archive)
            .map_err(io(&archive))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                crate::layout::parse_wal_segment_name(&n).map(|s| (s, n))
            })
            .collect();
        names.sort();
        for (i, (first, name)) in names.iter().enumerate() {
            let next_first = names.get(i + 1).map_or(u64::MAX, |n| n.0);
            // Keep segments that hold any record in (base.seq, m.checkpoint_seq].
            if next_first > b.seq + 1 && *first <= m.checkpoint_seq {
                let rel = format!("wal/{name}");
                link(&archive.join(name), &tmp.join(&rel))?;
                let (bytes, xxh3) = hash_file(&tmp.join(&rel))?;
                files.push(SnapshotFile { path: rel, bytes, xxh3 });
            }
        }
    }
    let manifest_bytes = manifest::encode(&snap_manifest);
    write_synced(&tmp.join(MANIFEST_FILE), &manifest_bytes)?;
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
    write_synced(&tmp.join(SNAPSHOT_FILE), &encode_framed(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, &body))?;
    for sub in [DATA_DIR, WAL_DIR] {
        // durability: the links must be durable before the snapshot is published.
        sync_dir(&tmp.join(sub))?;
    }
    sync_dir(&tmp)?;
    let final_dir = root.join(&id);
    fs::rename(&tmp, &final_dir).map_err(io(&tmp))?;
    // durability: publishing the snapshot is the rename; make it survive a power cut.
    sync_dir(&root)?;
    Ok(info)
}

/// The newest graph file of `collection_id` in the base chain, if any.
fn base_index(all: &[SnapshotInfo], base: Option<&SnapshotInfo>, collection_id: u64) -> Result<Option<crate::state::FileRef>> {
    let Some(b) = base else { return Ok(None) };
    let prefix = format!("{DATA_DIR}/{collection_id:020}-");
    for s in chain(all, &b.id)?.iter().rev() {
        if let Some(f) = s.files.iter().find(|f| f.path.starts_with(&prefix) && f.path.ends_with(".hnsw")) {
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

fn link(from: &Path, to: &Path) -> Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        // Another file system (or no hard links): copy, then sync the copy.
        Err(_) => {
            fs::copy(from, to).map_err(io(from))?;
            fs::File::open(to).and_then(|f| f.sync_all()).map_err(io(to))
        }
    }
}

pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Directory of a snapshot by id.
pub fn snapshot_dir(dir: &Path, id: &str) -> PathBuf {
    dir.join(SNAPSHOTS_DIR).join(id)
}
