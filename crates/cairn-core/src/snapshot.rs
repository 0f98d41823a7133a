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
use crate::progress::ByteProgress;
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
    hash_file_counted(storage, path, None)
}

/// `hash_file`, adding each chunk read to `progress`.
fn hash_file_counted(storage: &dyn Storage, path: &Path, progress: Option<&ByteProgress>) -> Result<(u64, String)> {
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
        if let Some(p) = progress {
            p.add(n as u64);
        }
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
    let (_, info) = engine.checkpoint_then(|m, dir| write_snapshot(storage.as_ref(), dir, m, incremental, None))?;
    Ok(info)
}

/// `take`, counting into `progress` the bytes the checkpoint writes and, for an incremental
/// snapshot, the archived WAL it reads to checksum (hard links move no bytes). The total is
/// set before the first byte; at the end (or on an error) it is cut to `done`.
pub fn take_tracked(engine: &Engine, incremental: bool, progress: &ByteProgress) -> Result<SnapshotInfo> {
    let storage = engine.storage().clone();
    let fs = storage.as_ref();
    let extra = |dir: &Path, seq: u64| -> Result<u64> {
        if !incremental {
            return Ok(0);
        }
        let all = list_on(fs, dir)?;
        // Refused by `write_snapshot` (no write since it was taken): nothing to count.
        if all.iter().any(|s| s.id == format!("{seq:020}-incremental")) {
            return Ok(0);
        }
        let Some(base) = all.last() else { return Ok(0) };
        // The segments the checkpoint is about to archive are still in `wal/`; the active one
        // starts after `seq` and is left out by `wal_since`.
        let mut names = Vec::new();
        for sub in [ARCHIVE_DIR, WAL_DIR] {
            let d = dir.join(sub);
            let found = match segment_names(fs, &d) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(Error::io(&d, e)),
            };
            names.extend(found.into_iter().map(|(first, name)| (first, name, sub)));
        }
        names.sort();
        names.dedup_by_key(|n| n.0);
        let plain: Vec<(u64, String)> = names.iter().map(|(f, n, _)| (*f, n.clone())).collect();
        let mut total = 0;
        for (first, _) in wal_since(&plain, base.seq, seq) {
            let (_, name, sub) = names.iter().find(|n| n.0 == first).ok_or_else(|| Error::NotFound(format!("segment {first}")))?;
            let path = dir.join(sub).join(name);
            total += storage.open_read(&path).and_then(|f| f.len()).map_err(io(&path))?;
        }
        Ok(total)
    };
    let result = engine.checkpoint_tracked_then(progress, extra, |m, dir| write_snapshot(fs, dir, m, incremental, Some(progress)));
    // Done or refused, the counter ends where the work stopped.
    progress.finish();
    result.map(|(_, info)| info)
}

/// WAL segment names in `dir` by first seq.
fn segment_names(storage: &dyn Storage, dir: &Path) -> std::io::Result<Vec<(u64, String)>> {
    Ok(storage.list(dir)?.into_iter().filter_map(|n| crate::layout::parse_wal_segment_name(&n).map(|s| (s, n))).collect())
}

/// Of `names` (sorted by first seq), the segments that hold any record in (base_seq, seq].
fn wal_since(names: &[(u64, String)], base_seq: u64, seq: u64) -> Vec<(u64, String)> {
    let names: Vec<&(u64, String)> = names.iter().filter(|n| n.0 <= seq).collect();
    let mut out = Vec::new();
    for (i, (first, name)) in names.iter().map(|n| (n.0, &n.1)).enumerate() {
        let next_first = names.get(i + 1).map_or(u64::MAX, |n| n.0);
        if next_first > base_seq + 1 {
            out.push((first, name.clone()));
        }
    }
    out
}

fn write_snapshot(
    storage: &dyn Storage,
    dir: &Path,
    m: &Manifest,
    incremental: bool,
    progress: Option<&ByteProgress>,
) -> Result<SnapshotInfo> {
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
        let mut names = segment_names(storage, &archive).map_err(io(&archive))?;
        names.sort();
        for (_, name) in wal_since(&names, b.seq, m.checkpoint_seq) {
            let rel = format!("{WAL_DIR}/{name}");
            link(storage, &archive.join(&name), &tmp.join(&rel))?;
            let (bytes, xxh3) = hash_file_counted(storage, &tmp.join(&rel), progress)?;
            files.push(SnapshotFile { path: rel, bytes, xxh3 });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{CollectionSpec, Op};
    use crate::distance::Metric;
    use crate::engine::{Options, SyncMode};
    use crate::fault::FaultStorage;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn upserts(from: usize, n: usize) -> Vec<Op> {
        (from..from + n)
            .map(|i| Op::Upsert {
                collection: "c".into(),
                id: format!("r{i:05}"),
                vector: vec![i as f32, 1.0, 0.5, 0.25].into(),
                metadata: "{}".into(),
            })
            .collect()
    }

    /// Polls the raw counter while `f` runs: it never passes the total, and counts nothing
    /// before the total is set.
    fn watched<T>(progress: &ByteProgress, f: impl FnOnce() -> T) -> T {
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                let mut polls = 0u32;
                while !stop.load(Ordering::Relaxed) && polls < 1_000_000 {
                    let done = progress.done.load(Ordering::Relaxed);
                    let total = progress.total();
                    assert!(done <= total, "done {done} passed total {total}");
                    polls += 1;
                }
            });
            let out = f();
            stop.store(true, Ordering::Relaxed);
            watcher.join().expect("watcher");
            out
        })
    }

    #[test]
    fn snapshot_progress_counts_the_files_written_and_the_wal_hashed_and_ends_at_its_total() {
        let fs = Arc::new(FaultStorage::new());
        let dir = Path::new("/snap-progress");
        let engine = Engine::open(dir, Options { sync: SyncMode::Always, storage: fs.clone(), ..Options::default() }).expect("open");
        let spec = CollectionSpec { name: "c".into(), dim: 4, metric: Metric::L2, m: 16, ef_construction: 100 };
        engine.commit(&[Op::CreateCollection(spec)]).expect("create");
        engine.commit(&upserts(0, 3_000)).expect("rows");

        let full = ByteProgress::default();
        let info = watched(&full, || take_tracked(&engine, false, &full)).expect("full snapshot");
        // A full snapshot links the checkpoint's files: the bytes counted are the ones this
        // checkpoint wrote, which are every data and graph file it names.
        let written: u64 = info.files.iter().filter(|f| f.path != MANIFEST_FILE).map(|f| f.bytes).sum();
        assert!(written > 3_000 * 16, "data and graph files: {written}");
        assert_eq!(full.total(), written);
        assert_eq!(full.done.load(Ordering::Relaxed), full.total());

        for i in 0..4 {
            engine.commit(&upserts(3_000 + i * 10, 10)).expect("more rows");
        }
        let inc = ByteProgress::default();
        let info = watched(&inc, || take_tracked(&engine, true, &inc)).expect("incremental snapshot");
        let wal: u64 = info.files.iter().filter(|f| f.path.starts_with(WAL_DIR)).map(|f| f.bytes).sum();
        let data: u64 = info.files.iter().filter(|f| f.path.starts_with(DATA_DIR)).map(|f| f.bytes).sum();
        assert!(wal > 0, "an incremental snapshot holds the WAL since its base");
        // The delta file is in the snapshot; the graph written beside it is counted too.
        let graph = engine.manifest().collections[0].index.as_ref().map_or(0, |f| f.bytes);
        assert_eq!(inc.total(), wal + data + graph);
        assert_eq!(inc.done.load(Ordering::Relaxed), inc.total());

        // Nothing new: the checkpoint writes nothing, the snapshot is refused, and the counter
        // never moved.
        let none = ByteProgress::default();
        assert!(matches!(take_tracked(&engine, true, &none), Err(Error::AlreadyExists(_))));
        assert_eq!((none.done(), none.total()), (0, 0));
    }
}
