//! Point-in-time recovery: restore the newest snapshot at or before the target, then replay
//! the archived WAL up to and including the target record. Reads only immutable files
//! (snapshots, archived segments) and the valid prefix of the live WAL, and never takes the
//! writer's lock, so it runs while another process writes the source. Every file operation
//! goes through one `Storage`, the restored store's open included.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::clock::iso8601;
use crate::durable::write_synced;
use crate::engine::{Engine, Options};
use crate::error::{Error, Result};
use crate::layout::{
    parse_wal_segment_name as parse_segment_name, wal_segment_name as segment_name, ARCHIVE_DIR, DATA_DIR, MANIFEST_FILE, WAL_DIR,
};
use crate::manifest::{self, Manifest};
use crate::placement::{place_verified, Placed, Placement};
use crate::snapshot::{self, SnapshotInfo};
use crate::storage::{OsStorage, Storage};
use crate::wal::reader::{scan_segment, ScanItem};
use crate::wal::record::{decode_segment_header, encode_segment_header};
use crate::RecoveryMode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreTarget {
    Latest,
    Seq(u64),
    /// Milliseconds since the Unix epoch: the last write committed at or before it.
    Time(u64),
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Point {
    pub seq: u64,
    pub time_ms: u64,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Range {
    pub from: Point,
    pub to: Point,
}

#[derive(Clone, Debug, Serialize)]
pub struct RestoreResult {
    pub seq: u64,
    pub time_ms: u64,
    pub snapshot: Option<String>,
    pub replayed_records: u64,
    /// Snapshot files placed by a copy-on-write clone, a hard link, or a copy (`placement`).
    pub cloned_files: u64,
    pub linked_files: u64,
    pub copied_files: u64,
}

/// How many snapshot files each placement took.
#[derive(Default)]
struct PlacedCounts {
    cloned: u64,
    linked: u64,
    copied: u64,
}

struct Segment {
    path: PathBuf,
    first_seq: u64,
    /// (seq, commit time) of every valid record, in order.
    records: Vec<(u64, u64)>,
    /// Where the usable records end early: (file, offset, reason).
    damaged: Option<(PathBuf, u64, String)>,
}

/// Records `first` through `last` are all present, consecutively.
#[derive(Clone, Copy)]
struct Run {
    first: u64,
    last: Point,
}

/// Damage in a segment; `after` is the last good seq before it.
struct Damage {
    after: u64,
    file: PathBuf,
    offset: u64,
    reason: String,
}

/// What the source holds: its snapshots and its WAL as runs of consecutive records. Damage or a
/// lost segment splits the WAL into several runs: a damaged old segment must not hide the
/// records after a later snapshot, nor make "latest" quietly mean an older state.
struct History {
    snapshots: Vec<SnapshotInfo>,
    segments: Vec<Segment>,
    /// Ascending and disjoint.
    runs: Vec<Run>,
    damages: Vec<Damage>,
}

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(p, e)
}

fn read_segment_file(storage: &dyn Storage, source: &Path, path: &Path) -> Result<Vec<u8>> {
    match storage.read(path) {
        Ok(b) => Ok(b),
        // The live writer's checkpoint may have moved it to the archive meanwhile.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let moved = source.join(ARCHIVE_DIR).join(path.file_name().unwrap_or_default());
            storage.read(&moved).map_err(io(&moved))
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

fn load_history(storage: &dyn Storage, source: &Path) -> Result<History> {
    // A store, or a directory holding only imported snapshots.
    if !storage.exists(&source.join(MANIFEST_FILE)) && !storage.exists(&source.join(crate::layout::SNAPSHOTS_DIR)) {
        return Err(Error::NotFound(format!("{} is not a Cairn store (no MANIFEST, no snapshots)", source.display())));
    }
    let snapshots = snapshot::list_on(storage, source)?;
    // Segment name -> path; the live directories win over snapshot copies (same bytes). `wal/`
    // is listed before the archive: a segment a live checkpoint moves between the two listings
    // is then seen at least once (the other order could miss it).
    let mut paths: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut dirs: Vec<PathBuf> = snapshots.iter().map(|s| snapshot::snapshot_dir(source, &s.id).join(WAL_DIR)).collect();
    dirs.push(source.join(WAL_DIR));
    dirs.push(source.join(ARCHIVE_DIR));
    for d in dirs {
        let Ok(names) = storage.list(&d) else { continue };
        for name in names {
            if let Some(first) = parse_segment_name(&name) {
                paths.insert(first, d.join(name));
            }
        }
    }
    let count = paths.len();
    let mut segments = Vec::new();
    for (i, (first, path)) in paths.into_iter().enumerate() {
        let buf = match read_segment_file(storage, source, &path) {
            Ok(b) => b,
            // Archive retention on a live source removed it after the listing: not retained.
            Err(Error::Io { source: e, .. }) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut seg = Segment { path: path.clone(), first_seq: first, records: Vec::new(), damaged: None };
        match decode_segment_header(&buf) {
            Ok(f) if f == first => {
                let scan = scan_segment(&buf, first);
                for item in scan.items {
                    match item {
                        ScanItem::Record { header, .. } if seg.damaged.is_none() => seg.records.push((header.seq, header.time_ms)),
                        ScanItem::Record { .. } => {}
                        ScanItem::Corrupt { offset, reason } => {
                            seg.damaged.get_or_insert((path.clone(), offset, reason.to_string()));
                        }
                    }
                }
                // An invalid tail of the live, last segment is a write in progress, not damage.
                if let Some(reason) = scan.invalid_tail {
                    if i + 1 < count {
                        seg.damaged.get_or_insert((path.clone(), scan.end, reason.to_string()));
                    }
                }
            }
            Ok(_) => seg.damaged = Some((path.clone(), 0, "segment header does not match its name".into())),
            Err(reason) => seg.damaged = Some((path.clone(), 0, reason)),
        }
        segments.push(seg);
    }
    // Runs of consecutive records. A segment's records stop at its first damage, so damage
    // (or a lost segment) shows as a gap that starts a new run.
    let mut runs: Vec<Run> = Vec::new();
    let mut damages = Vec::new();
    for seg in &segments {
        for &(seq, time_ms) in &seg.records {
            match runs.last_mut() {
                Some(r) if seq <= r.last.seq => {}
                Some(r) if seq == r.last.seq + 1 => r.last = Point { seq, time_ms },
                _ => runs.push(Run { first: seq, last: Point { seq, time_ms } }),
            }
        }
        if let Some((file, offset, reason)) = &seg.damaged {
            let after = seg.records.last().map_or(seg.first_seq.saturating_sub(1), |r| r.0);
            damages.push(Damage { after, file: file.clone(), offset: *offset, reason: reason.clone() });
        }
    }
    Ok(History { snapshots, segments, runs, damages })
}

impl History {
    /// The WAL still holds the very first record, so a restore can start from the empty store.
    fn starts_empty(&self) -> bool {
        self.runs.first().is_some_and(|r| r.first == 1)
    }

    /// Where a restore can start, oldest first: the empty store, then each snapshot.
    fn starts(&self) -> Vec<Point> {
        let empty = self.starts_empty().then_some(Point { seq: 0, time_ms: 0 });
        empty.into_iter().chain(self.snapshots.iter().map(|s| Point { seq: s.seq, time_ms: s.time_ms })).collect()
    }

    /// The newest point reachable from `start` by replaying consecutive WAL records.
    fn reach(&self, start: Point) -> Point {
        self.runs.iter().find(|r| r.first <= start.seq + 1 && start.seq < r.last.seq).map_or(start, |r| r.last)
    }

    /// The newest record or snapshot the source holds, reachable or not.
    fn newest(&self) -> Option<Point> {
        let snaps = self.snapshots.iter().map(|s| Point { seq: s.seq, time_ms: s.time_ms });
        self.runs.iter().map(|r| r.last).chain(snaps).max_by_key(|p| p.seq)
    }

    /// `to` is the newest reachable point; `from` the oldest start from which the retained WAL
    /// continues to it (the empty store, seq 0, while the WAL still holds the very first record).
    /// `from.time_ms` is a real commit time, never 0: the empty store's is the first record's,
    /// since no earlier time names a moment of the store's history.
    fn range(&self) -> Result<Range> {
        let starts = self.starts();
        let to = starts
            .iter()
            .map(|s| self.reach(*s))
            .max_by_key(|p| p.seq)
            .ok_or_else(|| Error::NotFound("no snapshot and no WAL from the first record: nothing can be restored".into()))?;
        let mut from = starts.iter().copied().find(|s| self.reach(*s).seq == to.seq).unwrap_or(to);
        if from.seq == 0 {
            from.time_ms = self.time_of(1).unwrap_or(to.time_ms);
        }
        Ok(Range { from, to })
    }

    fn time_of(&self, seq: u64) -> Option<u64> {
        self.segments.iter().flat_map(|s| s.records.iter()).find(|r| r.0 == seq).map(|r| r.1)
    }

    /// The last record (or snapshot) committed at or before `time_ms`, if any.
    fn seq_at_time(&self, time_ms: u64) -> Option<u64> {
        let snaps = self.starts().into_iter().map(|p| (p.seq, p.time_ms));
        let records = self.segments.iter().flat_map(|s| s.records.iter().copied());
        snaps.chain(records).filter(|&(_, t)| t <= time_ms).map(|(seq, _)| seq).max()
    }
}

fn out_of_range(what: String, r: &Range) -> Error {
    Error::InvalidArgument(format!(
        "{what} is outside the recoverable range: seq {}..{} (time {}..{})",
        r.from.seq,
        r.to.seq,
        iso8601(r.from.time_ms),
        iso8601(r.to.time_ms)
    ))
}

/// The seqs and times a restore of `source` on the real file system can reach.
pub fn recoverable_range(source: &Path) -> Result<Range> {
    recoverable_range_on(&OsStorage, source)
}

/// The seqs and times a restore of `source` can reach.
pub fn recoverable_range_on(storage: &dyn Storage, source: &Path) -> Result<Range> {
    load_history(storage, source)?.range()
}

/// `restore_on` the real file system.
pub fn restore(source: &Path, target: &Path, to: RestoreTarget) -> Result<RestoreResult> {
    restore_on(Arc::new(OsStorage), source, target, to)
}

/// How far a restore is, in bytes of the source files it copies or reads: the chain's checkpoint
/// files and `MANIFEST` (each counted once copied and verified) and the WAL segments it takes
/// records from (each counted once read). `total` is set before the first byte is read; `done`
/// never passes it.
pub type RestoreProgress = crate::progress::ByteProgress;

/// `restore` on the real file system, reporting its progress into `progress`.
pub fn restore_tracked(source: &Path, target: &Path, to: RestoreTarget, progress: &RestoreProgress) -> Result<RestoreResult> {
    restore_on_tracked(Arc::new(OsStorage), source, target, to, progress)
}

/// `restore_on`, reporting its progress into `progress`.
pub fn restore_on_tracked(
    storage: Arc<dyn Storage>,
    source: &Path,
    target: &Path,
    to: RestoreTarget,
    progress: &RestoreProgress,
) -> Result<RestoreResult> {
    restore_placed(storage, source, target, to, Placement::Link, Some(progress))
}

/// `restore_placed` on the real file system.
pub fn restore_with(
    source: &Path,
    target: &Path,
    to: RestoreTarget,
    placement: Placement,
    progress: Option<&RestoreProgress>,
) -> Result<RestoreResult> {
    restore_placed(Arc::new(OsStorage), source, target, to, placement, progress)
}

/// Restore `source` as of `to` into `target`, which must not exist or be an empty directory.
/// The result is built beside the target and renamed into place, so an interrupted restore
/// leaves no partial target, and a rerun starts afresh. Snapshot files are linked
/// (`Placement::Link`): see `restore_placed`.
pub fn restore_on(storage: Arc<dyn Storage>, source: &Path, target: &Path, to: RestoreTarget) -> Result<RestoreResult> {
    restore_placed(storage, source, target, to, Placement::Link, None)
}

/// `restore_on`, placing the snapshot's immutable checkpoint and graph files as `placement`
/// says: `Link` clones or hard-links them after verifying their checksum (no byte is
/// rewritten; a linked file is not an independent copy, see `placement.rs`), `Copy` copies
/// them. The WAL and `MANIFEST` are always written anew: the restored store writes them.
/// `progress`, when given, counts the bytes copied or read (see `RestoreProgress`).
pub fn restore_placed(
    storage: Arc<dyn Storage>,
    source: &Path,
    target: &Path,
    to: RestoreTarget,
    placement: Placement,
    progress: Option<&RestoreProgress>,
) -> Result<RestoreResult> {
    let fs = storage.as_ref();
    if fs.exists(target) {
        // A file in the target's place used to fail late, as I/O, after the whole build.
        if !fs.is_dir(target) {
            return Err(Error::InvalidArgument(format!(
                "target {} exists and is not a directory; restore never overwrites",
                target.display()
            )));
        }
        if !fs.list(target).map_err(io(target))?.is_empty() {
            return Err(Error::InvalidArgument(format!("target {} is not empty; restore never overwrites", target.display())));
        }
    }
    let history = load_history(fs, source)?;
    let range = history.range()?;
    let newest = history.newest().unwrap_or(range.to);
    // "Latest" is the newest record the source holds: when damage makes it unreachable, the
    // restore fails below, naming the file, instead of quietly returning an older state.
    let seq = match to {
        RestoreTarget::Latest => newest.seq,
        RestoreTarget::Seq(s) => {
            if s > newest.seq {
                return Err(out_of_range(format!("seq {s}"), &range));
            }
            s
        }
        RestoreTarget::Time(t) => {
            // Before the first retained commit time there is no state to name (it used to
            // restore the empty store).
            if t > newest.time_ms || t < range.from.time_ms {
                return Err(out_of_range(format!("time {}", iso8601(t)), &range));
            }
            history.seq_at_time(t).ok_or_else(|| out_of_range(format!("time {}", iso8601(t)), &range))?
        }
    };
    // Newest snapshot at or before the target; the WAL must continue from it to the target.
    let base = history.snapshots.iter().rev().find(|s| s.seq <= seq).cloned();
    let base_seq = base.as_ref().map_or(0, |b| b.seq);
    if base.is_none() && !history.starts_empty() {
        return Err(out_of_range(format!("seq {seq}"), &range));
    }
    if history.reach(Point { seq: base_seq, time_ms: 0 }).seq < seq {
        if let Some(d) = history.damages.iter().find(|d| d.after >= base_seq && d.after < seq) {
            return Err(Error::corruption(&d.file, d.offset, format!("WAL needed for seq {seq} is damaged: {}", d.reason)));
        }
        return Err(out_of_range(format!("seq {seq} (WAL records {}..{seq} are not retained)", base_seq + 1), &range));
    }

    let parent = target.parent().unwrap_or(Path::new("."));
    fs.create_dir_all(parent).map_err(io(parent))?;
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "restore".into());
    let prefix = format!(".{name}.cairn-restore-");
    remove_dead_restores(fs, parent, &prefix);
    let tmp = parent.join(format!("{prefix}{}", std::process::id()));
    if fs.exists(&tmp) {
        fs.remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    let mut counts = PlacedCounts::default();
    let result = build(&storage, source, &history, base.as_ref(), seq, &tmp, placement, progress, &mut counts);
    let replayed = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = fs.remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = put_in_place(fs, &tmp, target) {
        // Something appeared in the target meanwhile: leave it alone and drop ours.
        let _ = fs.remove_dir_all(&tmp);
        return Err(e);
    }
    // durability: the restored store appears under its name only once this is synced.
    if let Err(e) = fs.sync_dir(parent) {
        // Not durable, so not restored: take the name back, as a failed restore leaves no target.
        if fs.rename(target, &tmp).is_ok() {
            let _ = fs.remove_dir_all(&tmp);
        }
        return Err(Error::io(parent, e));
    }
    Ok(RestoreResult {
        seq,
        time_ms: history.time_of(seq).or(base.as_ref().map(|b| b.time_ms)).unwrap_or(0),
        snapshot: base.map(|b| b.id),
        replayed_records: replayed,
        cloned_files: counts.cloned,
        linked_files: counts.linked,
        copied_files: counts.copied,
    })
}

fn put_in_place(storage: &dyn Storage, tmp: &Path, target: &Path) -> Result<()> {
    if storage.exists(target) {
        storage.remove_dir(target).map_err(io(target))?;
    }
    storage.rename(tmp, target).map_err(io(tmp))
}

/// Remove the temporary directories of restores into the same target whose process is gone
/// (killed halfway): they are never renamed into place and would otherwise stay forever.
/// Only where a process's liveness can be told (Linux `/proc`, asked of the OS, not of the
/// store's storage); elsewhere they are kept.
fn remove_dead_restores(storage: &dyn Storage, parent: &Path, prefix: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(names) = storage.list(parent) else { return };
    for name in names {
        let Some(pid) = name.strip_prefix(prefix).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = storage.remove_dir_all(&parent.join(&name));
        }
    }
}

/// Size of a WAL segment the restore will read (where `read_segment_file` will find it).
fn segment_len(storage: &dyn Storage, source: &Path, path: &Path) -> u64 {
    let moved = source.join(ARCHIVE_DIR).join(path.file_name().unwrap_or_default());
    [path, moved.as_path()].iter().find_map(|p| storage.open_read(p).and_then(|f| f.len()).ok()).unwrap_or(0)
}

#[expect(clippy::too_many_arguments, reason = "one private step of restore_placed, called once")]
fn build(
    storage: &Arc<dyn Storage>,
    source: &Path,
    history: &History,
    base: Option<&SnapshotInfo>,
    seq: u64,
    tmp: &Path,
    placement: Placement,
    progress: Option<&RestoreProgress>,
    counts: &mut PlacedCounts,
) -> Result<u64> {
    let fs = storage.as_ref();
    for sub in [DATA_DIR, WAL_DIR, ARCHIVE_DIR] {
        fs.create_dir_all(&tmp.join(sub)).map_err(io(tmp))?;
    }
    let base_seq_of = |b: Option<&SnapshotInfo>| b.map_or(0, |b| b.seq);
    let wanted = |seg: &Segment, base_seq: u64| {
        let last = seg.records.last().map_or(0, |r| r.0);
        !(seg.records.is_empty() || last <= base_seq || seg.first_seq > seq)
    };
    if let Some(p) = progress {
        let mut total = 0u64;
        if let Some(b) = base {
            for s in &snapshot::chain(&history.snapshots, &b.id)? {
                total += s.files.iter().filter(|f| f.path.starts_with(&format!("{DATA_DIR}/"))).map(|f| f.bytes).sum::<u64>();
            }
            total += b.files.iter().filter(|f| f.path == MANIFEST_FILE).map(|f| f.bytes).sum::<u64>();
        }
        for seg in history.segments.iter().filter(|s| wanted(s, base_seq_of(base))) {
            total += segment_len(fs, source, &seg.path);
        }
        p.set_total(total);
    }
    // 1. Checkpoint files of the snapshot chain, each verified against its snapshot manifest.
    let manifest_bytes = match base {
        Some(b) => {
            let chain = snapshot::chain(&history.snapshots, &b.id)?;
            for s in &chain {
                let sdir = snapshot::snapshot_dir(source, &s.id);
                for f in &s.files {
                    if !f.path.starts_with(&format!("{DATA_DIR}/")) {
                        continue;
                    }
                    let from = sdir.join(&f.path);
                    match place_verified(fs, &from, &tmp.join(&f.path), f.bytes, &f.xxh3, placement)? {
                        Placed::Cloned => counts.cloned += 1,
                        Placed::HardLinked => counts.linked += 1,
                        Placed::Copied => counts.copied += 1,
                    }
                    if let Some(p) = progress {
                        p.add(f.bytes);
                    }
                }
            }
            let sdir = snapshot::snapshot_dir(source, &b.id);
            let mf = b
                .files
                .iter()
                .find(|f| f.path == MANIFEST_FILE)
                .ok_or_else(|| Error::corruption(sdir.join(crate::layout::SNAPSHOT_FILE), 0, "snapshot lists no MANIFEST"))?;
            // Always a copy: the restored store replaces its MANIFEST (a rename, but the bytes
            // are small and it keeps the snapshot's copy out of the new store's life).
            place_verified(fs, &sdir.join(MANIFEST_FILE), &tmp.join(MANIFEST_FILE), mf.bytes, &mf.xxh3, Placement::Copy)?;
            if let Some(p) = progress {
                p.add(mf.bytes);
            }
            fs.read(&tmp.join(MANIFEST_FILE)).map_err(io(tmp))?
        }
        None => {
            let m = manifest::encode(&Manifest::default());
            let path = tmp.join(MANIFEST_FILE);
            write_synced(fs, &path, &m).map_err(io(&path))?;
            m
        }
    };
    let base_seq = manifest::decode(&manifest_bytes, &tmp.join(MANIFEST_FILE))?.checkpoint_seq;
    // 2. The WAL records (base_seq, seq], copied byte for byte into one new segment.
    let mut out = encode_segment_header(base_seq + 1).to_vec();
    let mut copied = 0u64;
    for seg in &history.segments {
        if !wanted(seg, base_seq) {
            continue;
        }
        let buf = read_segment_file(fs, source, &seg.path)?;
        if let Some(p) = progress {
            p.add(buf.len() as u64);
        }
        for item in scan_segment(&buf, seg.first_seq).items {
            if let ScanItem::Record { offset, header, len, .. } = item {
                if header.seq > base_seq && header.seq <= seq {
                    if header.seq != base_seq + 1 + copied {
                        return Err(Error::corruption(
                            &seg.path,
                            offset,
                            format!("expected seq {} while restoring", base_seq + 1 + copied),
                        ));
                    }
                    out.extend_from_slice(&buf[offset as usize..offset as usize + len]);
                    copied += 1;
                }
            }
        }
    }
    if copied != seq.saturating_sub(base_seq) {
        return Err(Error::corruption(source.join(ARCHIVE_DIR), 0, format!("found {copied} of the {} WAL records needed", seq - base_seq)));
    }
    if copied > 0 {
        let path = tmp.join(WAL_DIR).join(segment_name(base_seq + 1));
        write_synced(fs, &path, &out).map_err(io(&path))?;
    }
    for sub in [DATA_DIR, WAL_DIR] {
        // durability: the copied files' names, before the open below relies on them.
        let d = tmp.join(sub);
        fs.sync_dir(&d).map_err(io(&d))?;
    }
    // 3. Open it as a store: recovery replays the WAL and verifies every file; close cleanly.
    let opts = Options { recovery: RecoveryMode::AbsoluteConsistency, storage: storage.clone(), ..Options::default() };
    let engine = Engine::open(tmp, opts)?;
    let reached = engine.last_seq();
    engine.close()?;
    if reached != seq {
        return Err(Error::corruption(tmp, 0, format!("restored store ends at seq {reached}, expected {seq}")));
    }
    // durability: the store's own directories, before it is renamed into place.
    fs.sync_dir(tmp).map_err(io(tmp))?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{CollectionSpec, Op};
    use crate::distance::Metric;
    use crate::engine::SyncMode;
    use crate::fault::FaultStorage;
    use std::sync::atomic::Ordering;

    #[test]
    fn restore_progress_ends_at_its_total_from_a_snapshot_chain_and_from_the_wal_alone() {
        let fs = Arc::new(FaultStorage::new());
        let src = Path::new("/src");
        let opts = Options { sync: SyncMode::Always, storage: fs.clone(), segment_bytes: 4096, ..Options::default() };
        let e = Engine::open(src, opts).expect("open");
        let spec = CollectionSpec { name: "c".into(), dim: 4, metric: Metric::L2, m: 16, ef_construction: 64 };
        e.commit(&[Op::CreateCollection(spec)]).expect("create");
        let upsert = |i: usize| Op::Upsert {
            collection: "c".into(),
            id: format!("r{i}"),
            vector: vec![i as f32, 1.0, 2.0, 3.0].into(),
            metadata: "{}".into(),
        };
        for i in 0..40 {
            e.commit(&[upsert(i)]).expect("commit");
        }
        let middle = e.last_seq();
        snapshot::take(&e, false).expect("snapshot");
        for i in 40..80 {
            e.commit(&[upsert(i)]).expect("commit");
        }
        snapshot::take(&e, true).expect("incremental");
        for i in 80..100 {
            e.commit(&[upsert(i)]).expect("commit");
        }
        e.close().expect("close");
        drop(e);
        for (name, to) in [("latest", RestoreTarget::Latest), ("wal only", RestoreTarget::Seq(middle - 1))] {
            let progress = RestoreProgress::default();
            let target = PathBuf::from(format!("/restored-{}", name.replace(' ', "-")));
            let r = restore_on_tracked(fs.clone(), src, &target, to, &progress).expect("restore");
            assert!(progress.total() > 0, "{name}: a total before the first byte");
            // Exactly the total, not clamped to it: the total is the byte set the restore reads.
            assert_eq!(progress.done.load(Ordering::Relaxed), progress.total(), "{name}: ends at its total");
            assert_eq!(r.snapshot.is_some(), name == "latest", "{name}");
        }
    }
}
