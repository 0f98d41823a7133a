//! Point-in-time recovery: restore the newest snapshot at or before the target, then replay
//! the archived WAL up to and including the target record. Reads only immutable files
//! (snapshots, archived segments) and the valid prefix of the live WAL, and never takes the
//! writer's lock, so it runs while another process writes the source.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::{Engine, Options, ARCHIVE_DIR, DATA_DIR, WAL_DIR};
use crate::error::{Error, Result};
use crate::manifest::{self, Manifest, MANIFEST_FILE};
use crate::snapshot::{self, hash_file, write_synced, SnapshotInfo};
use crate::wal::reader::{scan_segment, ScanItem};
use crate::wal::record::{decode_segment_header, encode_segment_header};
use crate::wal::{parse_segment_name, segment_name};
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
}

struct Segment {
    path: PathBuf,
    first_seq: u64,
    /// (seq, commit time) of every valid record, in order.
    records: Vec<(u64, u64)>,
    /// Where the usable records end early: (file, offset, reason).
    damaged: Option<(PathBuf, u64, String)>,
}

/// What the source holds: its snapshots and its WAL, as one continuous run of records.
struct History {
    snapshots: Vec<SnapshotInfo>,
    segments: Vec<Segment>,
    /// Records from `first` through `last` are all present, consecutively.
    wal_first: Option<u64>,
    wal_last: Option<Point>,
    damage: Option<(PathBuf, u64, String)>,
}

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(p, e)
}

fn read_segment_file(source: &Path, path: &Path) -> Result<Vec<u8>> {
    match fs::read(path) {
        Ok(b) => Ok(b),
        // The live writer's checkpoint may have moved it to the archive meanwhile.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let moved = source.join(ARCHIVE_DIR).join(path.file_name().unwrap_or_default());
            fs::read(&moved).map_err(io(&moved))
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

fn load_history(source: &Path) -> Result<History> {
    if !source.join(MANIFEST_FILE).exists() {
        return Err(Error::NotFound(format!("{} is not a Cairn store (no MANIFEST)", source.display())));
    }
    let snapshots = snapshot::list(source)?;
    // Segment name -> path; the live directories win over snapshot copies (same bytes).
    let mut paths: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut dirs: Vec<PathBuf> = snapshots.iter().map(|s| snapshot::snapshot_dir(source, &s.id).join("wal")).collect();
    dirs.push(source.join(ARCHIVE_DIR));
    dirs.push(source.join(WAL_DIR));
    for d in dirs {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(first) = parse_segment_name(&name) {
                paths.insert(first, d.join(name));
            }
        }
    }
    let count = paths.len();
    let mut segments = Vec::new();
    for (i, (first, path)) in paths.into_iter().enumerate() {
        let buf = read_segment_file(source, &path)?;
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
    // The continuous run of records, stopping at the first gap or damage.
    let mut wal_first = None;
    let mut wal_last: Option<Point> = None;
    let mut damage = None;
    'outer: for seg in &segments {
        for &(seq, time_ms) in &seg.records {
            match wal_last {
                Some(p) if seq <= p.seq => continue,
                Some(p) if seq != p.seq + 1 => break 'outer,
                _ => {}
            }
            wal_first.get_or_insert(seq);
            wal_last = Some(Point { seq, time_ms });
        }
        if seg.damaged.is_some() {
            damage = seg.damaged.clone();
            break;
        }
    }
    Ok(History { snapshots, segments, wal_first, wal_last, damage })
}

impl History {
    fn range(&self) -> Result<Range> {
        let newest_snap = self.snapshots.last().map(|s| Point { seq: s.seq, time_ms: s.time_ms });
        // The oldest point a restore can start from and continue to the newest record: the empty
        // store while the WAL still holds the very first record, else the oldest snapshot from
        // which the retained WAL continues, else the newest snapshot alone.
        let continues = |seq: u64| self.wal_first.is_some_and(|f| f <= seq + 1);
        let from = if self.wal_first == Some(1) {
            Some(Point { seq: 0, time_ms: 0 })
        } else {
            self.snapshots.iter().find(|s| continues(s.seq)).map(|s| Point { seq: s.seq, time_ms: s.time_ms }).or(newest_snap)
        };
        let from = from.ok_or_else(|| Error::NotFound("no snapshot and no WAL from the first record: nothing can be restored".into()))?;
        let to = match self.wal_last {
            Some(w) if w.seq >= from.seq && continues(from.seq) => w,
            _ => newest_snap.unwrap_or(from),
        };
        Ok(Range { from, to })
    }

    fn time_of(&self, seq: u64) -> Option<u64> {
        self.segments.iter().flat_map(|s| s.records.iter()).find(|r| r.0 == seq).map(|r| r.1)
    }

    /// The last record at or before `time_ms` within the range.
    fn seq_at_time(&self, time_ms: u64, range: &Range) -> u64 {
        let mut best = range.from.seq;
        for s in &self.snapshots {
            if s.time_ms <= time_ms && s.seq > best {
                best = s.seq;
            }
        }
        for &(seq, t) in self.segments.iter().flat_map(|s| s.records.iter()) {
            if t <= time_ms && seq > best && seq <= range.to.seq {
                best = seq;
            }
        }
        best
    }
}

fn out_of_range(what: String, r: &Range) -> Error {
    Error::InvalidArgument(format!(
        "{what} is outside the recoverable range: seq {}..{} (time {}..{} ms)",
        r.from.seq, r.to.seq, r.from.time_ms, r.to.time_ms
    ))
}

/// The seqs and times a restore of `source` can reach.
pub fn recoverable_range(source: &Path) -> Result<Range> {
    load_history(source)?.range()
}

/// Restore `source` as of `to` into `target`, which must not exist or be an empty directory.
/// The result is built beside the target and renamed into place, so an interrupted restore
/// leaves no partial target, and a rerun starts afresh.
pub fn restore(source: &Path, target: &Path, to: RestoreTarget) -> Result<RestoreResult> {
    if let Ok(mut entries) = fs::read_dir(target) {
        if entries.next().is_some() {
            return Err(Error::InvalidArgument(format!("target {} is not empty; restore never overwrites", target.display())));
        }
    }
    let history = load_history(source)?;
    let range = history.range()?;
    let seq = match to {
        RestoreTarget::Latest => range.to.seq,
        RestoreTarget::Seq(s) => {
            if s < range.from.seq || s > range.to.seq {
                return Err(out_of_range(format!("seq {s}"), &range));
            }
            s
        }
        RestoreTarget::Time(t) => {
            if t < range.from.time_ms || t > range.to.time_ms {
                return Err(out_of_range(format!("time {t}"), &range));
            }
            history.seq_at_time(t, &range)
        }
    };
    // Newest snapshot at or before the target.
    let base = history.snapshots.iter().rev().find(|s| s.seq <= seq).cloned();
    let base_seq = base.as_ref().map_or(0, |b| b.seq);
    if base.is_none() && history.wal_first != Some(1) {
        return Err(out_of_range(format!("seq {seq}"), &range));
    }
    if seq > base_seq {
        let covered = history.wal_first.is_some_and(|f| f <= base_seq + 1) && history.wal_last.is_some_and(|l| l.seq >= seq);
        if !covered {
            if let Some((file, offset, reason)) = &history.damage {
                return Err(Error::corruption(file, *offset, format!("WAL needed for seq {seq} is damaged: {reason}")));
            }
            return Err(out_of_range(format!("seq {seq} (WAL records {}..{seq} are not retained)", base_seq + 1), &range));
        }
    }

    let parent = target.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io(parent))?;
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "restore".into());
    let tmp = parent.join(format!(".{name}.cairn-restore-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    let result = build(source, &history, base.as_ref(), seq, &tmp);
    let replayed = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if target.exists() {
        fs::remove_dir(target).map_err(io(target))?;
    }
    fs::rename(&tmp, target).map_err(io(&tmp))?;
    // durability: the restored store appears under its name only once this is synced.
    fs::File::open(parent).and_then(|f| f.sync_all()).map_err(io(parent))?;
    Ok(RestoreResult {
        seq,
        time_ms: history.time_of(seq).or(base.as_ref().map(|b| b.time_ms)).unwrap_or(0),
        snapshot: base.map(|b| b.id),
        replayed_records: replayed,
    })
}

fn build(source: &Path, history: &History, base: Option<&SnapshotInfo>, seq: u64, tmp: &Path) -> Result<u64> {
    for sub in [DATA_DIR, WAL_DIR, ARCHIVE_DIR] {
        fs::create_dir_all(tmp.join(sub)).map_err(io(tmp))?;
    }
    // 1. Checkpoint files of the snapshot chain, each verified against its snapshot manifest.
    let manifest_bytes = match base {
        Some(b) => {
            let chain = snapshot::chain(&history.snapshots, &b.id)?;
            for s in &chain {
                let sdir = snapshot::snapshot_dir(source, &s.id);
                for f in &s.files {
                    if !f.path.starts_with("data/") {
                        continue;
                    }
                    let from = sdir.join(&f.path);
                    copy_verified(&from, &tmp.join(&f.path), f.bytes, &f.xxh3)?;
                }
            }
            let sdir = snapshot::snapshot_dir(source, &b.id);
            let mf = b
                .files
                .iter()
                .find(|f| f.path == MANIFEST_FILE)
                .ok_or_else(|| Error::corruption(sdir.join(snapshot::SNAPSHOT_FILE), 0, "snapshot lists no MANIFEST"))?;
            copy_verified(&sdir.join(MANIFEST_FILE), &tmp.join(MANIFEST_FILE), mf.bytes, &mf.xxh3)?;
            fs::read(tmp.join(MANIFEST_FILE)).map_err(io(tmp))?
        }
        None => {
            let m = manifest::encode(&Manifest::default());
            write_synced(&tmp.join(MANIFEST_FILE), &m)?;
            m
        }
    };
    let base_seq = manifest::decode(&manifest_bytes, &tmp.join(MANIFEST_FILE))?.checkpoint_seq;
    // 2. The WAL records (base_seq, seq], copied byte for byte into one new segment.
    let mut out = encode_segment_header(base_seq + 1).to_vec();
    let mut copied = 0u64;
    for seg in &history.segments {
        let last = seg.records.last().map_or(0, |r| r.0);
        if seg.records.is_empty() || last <= base_seq || seg.first_seq > seq {
            continue;
        }
        let buf = read_segment_file(source, &seg.path)?;
        for item in scan_segment(&buf, seg.first_seq).items {
            if let ScanItem::Record { offset, header, len, .. } = item {
                if header.seq > base_seq && header.seq <= seq {
                    if header.seq != base_seq + 1 + copied {
                        return Err(Error::corruption(&seg.path, offset, format!("expected seq {} while restoring", base_seq + 1 + copied)));
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
        write_synced(&tmp.join(WAL_DIR).join(segment_name(base_seq + 1)), &out)?;
    }
    // 3. Open it as a store: recovery replays the WAL and verifies every file; close cleanly.
    let opts = Options { recovery: RecoveryMode::AbsoluteConsistency, ..Options::default() };
    let engine = Engine::open(tmp, opts)?;
    let reached = engine.last_seq();
    engine.close()?;
    if reached != seq {
        return Err(Error::corruption(tmp, 0, format!("restored store ends at seq {reached}, expected {seq}")));
    }
    Ok(copied)
}

fn copy_verified(from: &Path, to: &Path, bytes: u64, xxh3: &str) -> Result<()> {
    let (len, sum) = hash_file(from).map_err(|e| match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Error::corruption(from, 0, "snapshot file is missing"),
        other => other,
    })?;
    if len != bytes || sum != xxh3 {
        return Err(Error::corruption(from, 0, format!("snapshot file does not match its manifest ({len} bytes, xxh3 {sum}; expected {bytes} bytes, xxh3 {xxh3})")));
    }
    fs::copy(from, to).map_err(io(from))?;
    fs::File::open(to).and_then(|f| f.sync_all()).map_err(io(to))?;
    // Verify the copy too: a restore must never produce a silently different store.
    let (len2, sum2) = hash_file(to)?;
    if len2 != bytes || sum2 != xxh3 {
        return Err(Error::corruption(to, 0, "copy differs from the snapshot file"));
    }
    Ok(())
}
