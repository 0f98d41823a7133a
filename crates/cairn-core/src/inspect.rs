//! A read-only replay for status readers: what a store holds now (collections and row counts as
//! of the last record in its WAL), read without its lock while another process may be writing
//! it. Nothing is written, truncated or fsynced.
//!
//! Invariants:
//! - The result is a prefix of the committed history: the checkpoint the manifest names, then
//!   WAL records in sequence order from the one after it, stopping at the first record that is
//!   missing or invalid. The active segment's torn or still-being-written tail is where it stops;
//!   corruption is reported by recovery and scrub, not here.
//! - Cheap on a large store: row counts start from the manifest's `rows`, and only the ids the
//!   WAL tail writes are looked up in the checkpoint files (`datafile::IdLookup`, a few small
//!   reads each); a manifest without `rows` (older stores) has its files' ids read whole.
//! - A checkpoint may run meanwhile: it replaces `MANIFEST`, removes the data files it merged and
//!   moves WAL segments from `wal/` to `wal-archive/`. A data file that vanished means the
//!   manifest we read is stale, so the whole read is retried with the new one (bounded); a segment
//!   that vanished from `wal/` is read from `wal-archive/`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use crate::batch::{self, Op};
use crate::datafile::{record_ids, IdLookup};
use crate::distance::Metric;
use crate::error::{Error, Result};
use crate::layout::{parse_wal_segment_name, wal_segment_name, ARCHIVE_DIR, DATA_DIR, WAL_DIR};
use crate::manifest::{self, Manifest, ManifestCollection};
use crate::storage::Storage;
use crate::wal::reader::{scan_segment, ScanItem};
use crate::wal::record::{decode_segment_header, RECORD_HEADER_LEN};

/// Attempts when a checkpoint replaces the files being read.
const ATTEMPTS: usize = 8;

/// What a binary search for one id costs at most, about: a window per halving of a large file.
const LOOKUP_BYTES_PER_ID: usize = 40 * (4 << 10);

#[derive(Clone, Debug, PartialEq)]
pub struct LiveCollection {
    pub name: String,
    pub dim: u32,
    pub metric: Metric,
    /// Rows now (including rows known to be unreadable).
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LiveView {
    pub checkpoint_seq: u64,
    /// The last record applied (the checkpoint's seq when the WAL holds nothing after it).
    pub last_seq: u64,
    /// Its commit time, ms since the Unix epoch (the checkpoint's time when none).
    pub last_time_ms: u64,
    /// Records applied after the checkpoint.
    pub wal_records: u64,
    /// In name order.
    pub collections: Vec<LiveCollection>,
}

/// A collection as the WAL after the checkpoint leaves it.
struct TailColl {
    dim: u32,
    metric: Metric,
    /// Its index in the manifest when it is the checkpoint's collection (not created in the tail).
    checkpointed: Option<usize>,
    /// Ids the tail writes or deletes, with whether each exists at its end.
    touched: HashMap<String, bool>,
}

struct Tail {
    last_seq: u64,
    last_time_ms: u64,
    wal_records: u64,
    colls: BTreeMap<String, TailColl>,
}

/// What the store in `dir` holds now; `None` when it has no manifest (never checkpointed: a
/// store always writes one when it is created). Counts start from the manifest's `rows`; only
/// the ids the WAL tail touches are looked up in the checkpoint files, by binary search.
pub fn live_view(storage: &dyn Storage, dir: &Path) -> Result<Option<LiveView>> {
    let mut last_err = None;
    for _ in 0..ATTEMPTS {
        let Some(m) = manifest::load_or_copy(storage, dir)?.map(|(m, _)| m) else { return Ok(None) };
        let tail = replay_wal(storage, dir, &m)?;
        let mut collections = Vec::new();
        let mut stale = false;
        for (name, c) in &tail.colls {
            match count(storage, dir, &m, c) {
                Ok(Some(count)) => collections.push(LiveCollection { name: name.clone(), dim: c.dim, metric: c.metric, count }),
                // A data file is gone: a checkpoint replaced this manifest meanwhile.
                Ok(None) => stale = true,
                Err(e) => {
                    last_err = Some(e);
                    stale = true;
                }
            }
            if stale {
                break;
            }
        }
        if !stale {
            return Ok(Some(LiveView {
                checkpoint_seq: m.checkpoint_seq,
                last_seq: tail.last_seq,
                last_time_ms: tail.last_time_ms,
                wal_records: tail.wal_records,
                collections,
            }));
        }
    }
    Err(last_err.unwrap_or_else(|| Error::corruption(dir.join(DATA_DIR), 0, "checkpoint files kept changing while being read")))
}

/// Rows of `c` at the end of the tail; `None` when a file the manifest names is missing.
fn count(storage: &dyn Storage, dir: &Path, m: &Manifest, c: &TailColl) -> Result<Option<u64>> {
    let present = c.touched.values().filter(|&&p| p).count() as u64;
    let Some(i) = c.checkpointed else { return Ok(Some(present)) };
    let mc = &m.collections[i];
    let Some(rows) = mc.rows else {
        // A manifest from before `rows`: every id of the checkpoint, from its files.
        let Some(mut ids) = checkpoint_ids(storage, dir, mc)? else { return Ok(None) };
        for (id, &p) in &c.touched {
            if p {
                ids.insert(id.clone());
            } else {
                ids.remove(id);
            }
        }
        return Ok(Some(ids.len() as u64));
    };
    if c.touched.is_empty() {
        return Ok(Some(rows));
    }
    let Some(before) = in_checkpoint(storage, dir, mc, c.touched.keys())? else { return Ok(None) };
    let existed = before.len() as u64;
    // rows - (touched ids that existed) + (touched ids that exist now)
    Ok(Some(rows.saturating_sub(existed) + present))
}

/// Which of `ids` exist at the checkpoint; `None` when a file the manifest names is missing.
fn in_checkpoint<'a>(
    storage: &dyn Storage,
    dir: &Path,
    mc: &ManifestCollection,
    ids: impl Iterator<Item = &'a String>,
) -> Result<Option<HashSet<&'a str>>> {
    // Unreadable records override every data file: the id exists.
    let unreadable: HashSet<&str> = mc.unreadable.iter().map(|u| u.id.as_str()).collect();
    let mut existing = HashSet::new();
    let mut open: Vec<&'a str> = Vec::new();
    for id in ids {
        if unreadable.contains(id.as_str()) {
            existing.insert(id.as_str());
        } else {
            open.push(id.as_str());
        }
    }
    // Newest file first: the first file that names an id decides.
    for f in mc.data_files.iter().rev() {
        if open.is_empty() {
            break;
        }
        let path = dir.join(DATA_DIR).join(&f.file);
        let file = match storage.open_read(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let lookup = IdLookup::new(file.as_ref(), &path)?;
        let mut decided: HashMap<&str, bool> = HashMap::new();
        match lookup {
            // A few windows per id, unless that would read about as much as the whole file.
            Some(l) if open.len().saturating_mul(LOOKUP_BYTES_PER_ID) < l.records_len() => {
                for &id in &open {
                    if let Some(upsert) = l.find(id)? {
                        decided.insert(id, upsert);
                    }
                }
            }
            _ => {
                let buf = match storage.read(&path) {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(Error::io(&path, e)),
                };
                let wanted: HashSet<&str> = open.iter().copied().collect();
                for (upsert, id) in record_ids(&buf, &path)? {
                    if let Some(&w) = wanted.get(id) {
                        decided.insert(w, upsert);
                    }
                }
            }
        }
        open.retain(|id| match decided.get(id) {
            Some(&upsert) => {
                if upsert {
                    existing.insert(*id);
                }
                false
            }
            None => true,
        });
    }
    Ok(Some(existing))
}

/// Every id of the collection at the checkpoint, from its files (manifests without `rows`);
/// `None` when a file the manifest names is missing.
fn checkpoint_ids(storage: &dyn Storage, dir: &Path, mc: &ManifestCollection) -> Result<Option<HashSet<String>>> {
    let mut ids = HashSet::new();
    for f in &mc.data_files {
        let path = dir.join(DATA_DIR).join(&f.file);
        let buf = match storage.read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        // Ids only (no vectors decoded); damaged records are the business of recovery and
        // scrub, the rest still count.
        for (upsert, id) in record_ids(&buf, &path)? {
            if upsert {
                ids.insert(id.to_string());
            } else {
                ids.remove(id);
            }
        }
    }
    for u in &mc.unreadable {
        ids.insert(u.id.clone());
    }
    Ok(Some(ids))
}

/// The segments that may hold records after `after`, in order, each named once: `wal/` is
/// listed before `wal-archive/`, so a segment a checkpoint moves between the two listings is
/// in at least one of them.
fn segments_after(storage: &dyn Storage, dir: &Path, after: u64) -> Result<Vec<u64>> {
    let mut firsts = Vec::new();
    for sub in [WAL_DIR, ARCHIVE_DIR] {
        let d = dir.join(sub);
        match storage.list(&d) {
            Ok(names) => firsts.extend(names.iter().filter_map(|n| parse_wal_segment_name(n))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&d, e)),
        }
    }
    firsts.sort_unstable();
    firsts.dedup();
    // The segment holding `after + 1` is the last one starting at or before it.
    let start = firsts.iter().rposition(|&f| f <= after + 1).unwrap_or(0);
    Ok(firsts.split_off(start))
}

/// First read of a segment; doubled until what was read holds the segment's end marker.
const FIRST_READ: usize = 1 << 20;

/// A segment's bytes up to its end marker (a zero record header where the next record would
/// start), or all of it: the active segment is preallocated, mostly zeros a reader can skip.
fn read_records(storage: &dyn Storage, path: &Path, first: u64) -> std::io::Result<Vec<u8>> {
    let f = storage.open_read(path)?;
    let mut buf = Vec::new();
    let mut want = FIRST_READ;
    loop {
        while buf.len() < want {
            if f.read_append(buf.len() as u64, want - buf.len(), &mut buf)? == 0 {
                return Ok(buf); // the whole file
            }
        }
        let end = scan_segment(&buf, first).end as usize;
        if buf.get(end..end + RECORD_HEADER_LEN).is_some_and(|h| h.iter().all(|&b| b == 0)) {
            return Ok(buf);
        }
        want *= 2;
    }
}

fn read_segment(storage: &dyn Storage, dir: &Path, first: u64) -> Result<Option<Vec<u8>>> {
    let name = wal_segment_name(first);
    for sub in [WAL_DIR, ARCHIVE_DIR] {
        let path = dir.join(sub).join(&name);
        match read_records(storage, &path, first) {
            Ok(b) => return Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    Ok(None)
}

fn replay_wal(storage: &dyn Storage, dir: &Path, m: &Manifest) -> Result<Tail> {
    let mut tail = Tail {
        last_seq: m.checkpoint_seq,
        last_time_ms: m.checkpoint_time_ms,
        wal_records: 0,
        colls: m
            .collections
            .iter()
            .enumerate()
            .map(|(i, mc)| (mc.name.clone(), TailColl { dim: mc.dim, metric: mc.metric, checkpointed: Some(i), touched: HashMap::new() }))
            .collect(),
    };
    'segments: for first in segments_after(storage, dir, m.checkpoint_seq)? {
        if first > tail.last_seq + 1 {
            break; // a gap: what follows is not a prefix
        }
        let Some(buf) = read_segment(storage, dir, first)? else { break };
        // A header that does not verify is a segment being created: nothing in it yet.
        if decode_segment_header(&buf).ok() != Some(first) {
            break;
        }
        for item in scan_segment(&buf, first).items {
            let ScanItem::Record { header, payload_start, .. } = item else { break 'segments };
            if header.seq <= tail.last_seq {
                continue;
            }
            if header.seq != tail.last_seq + 1 {
                break 'segments;
            }
            let payload = &buf[payload_start..payload_start + header.payload_len];
            let path = dir.join(WAL_DIR).join(wal_segment_name(first));
            let ops = batch::decode(payload).map_err(|e| Error::corruption(&path, 0, format!("seq {}: {e}", header.seq)))?;
            apply(&mut tail.colls, ops);
            tail.last_seq = header.seq;
            tail.last_time_ms = header.time_ms;
            tail.wal_records += 1;
        }
    }
    Ok(tail)
}

/// The engine validated every batch before logging it, so each op applies.
fn apply(colls: &mut BTreeMap<String, TailColl>, ops: Vec<Op>) {
    for op in ops {
        match op {
            Op::CreateCollection(s) => {
                colls.insert(s.name, TailColl { dim: s.dim, metric: s.metric, checkpointed: None, touched: HashMap::new() });
            }
            Op::DropCollection { name } => {
                colls.remove(&name);
            }
            Op::Upsert { collection, id, .. } => {
                if let Some(c) = colls.get_mut(&collection) {
                    c.touched.insert(id, true);
                }
            }
            Op::Delete { collection, id } => {
                if let Some(c) = colls.get_mut(&collection) {
                    c.touched.insert(id, false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::CollectionSpec;
    use crate::engine::{Engine, Options, SyncMode};
    use crate::fault::FaultStorage;
    use std::sync::Arc;

    fn upsert(c: &str, id: &str) -> Op {
        Op::Upsert { collection: c.into(), id: id.into(), vector: vec![0.5, 0.25].into(), metadata: "{}".into() }
    }

    #[test]
    fn live_view_counts_the_wal_after_the_checkpoint_and_stops_at_a_torn_tail() {
        let fs = Arc::new(FaultStorage::new());
        let dir = Path::new("/live");
        let opts = Options { sync: SyncMode::Always, storage: fs.clone(), ..Options::default() };
        let engine = Engine::open(dir, opts).expect("open");
        let spec = CollectionSpec { name: "a".into(), dim: 2, metric: Metric::L2, m: 16, ef_construction: 100 };
        engine.commit(&[Op::CreateCollection(spec.clone())]).expect("create");
        engine.commit(&(0..10).map(|i| upsert("a", &format!("r{i}"))).collect::<Vec<_>>()).expect("upsert");
        engine.checkpoint().expect("checkpoint");
        engine.commit(&[upsert("a", "r0"), upsert("a", "new"), Op::Delete { collection: "a".into(), id: "r1".into() }]).expect("w1");
        engine.commit(&[Op::CreateCollection(CollectionSpec { name: "b".into(), ..spec })]).expect("create b");
        engine.commit(&[upsert("b", "x")]).expect("w2");
        let v = live_view(fs.as_ref(), dir).expect("view").expect("some");
        assert_eq!(v.wal_records, 3);
        assert_eq!(v.last_seq, engine.last_seq());
        let counts: Vec<(String, u64)> = v.collections.iter().map(|c| (c.name.clone(), c.count)).collect();
        assert_eq!(counts, vec![("a".to_string(), 10), ("b".to_string(), 1)]);
        // Tear the last record: the view ends one record earlier and nothing changes on disk.
        let seg =
            fs.list(&dir.join(WAL_DIR)).expect("list").into_iter().filter_map(|n| parse_wal_segment_name(&n)).max().expect("a segment");
        let path = dir.join(WAL_DIR).join(wal_segment_name(seg));
        let before = fs.read(&path).expect("read");
        let scan = scan_segment(&before, seg);
        let Some(ScanItem::Record { offset, .. }) = scan.items.last() else { panic!("no record") };
        let at = *offset as usize + 30;
        fs.mutate(&path, |b| b[at] ^= 0xff).expect("tear");
        let torn = live_view(fs.as_ref(), dir).expect("view").expect("some");
        assert_eq!(torn.last_seq, v.last_seq - 1);
        assert_eq!(torn.collections.iter().find(|c| c.name == "b").map(|c| c.count), Some(0));
        let mut after = before.clone();
        after[at] ^= 0xff;
        assert_eq!(fs.read(&path).expect("read"), after, "the reader wrote to the segment");
        // Checkpointed again: a delta file now holds the delete of r1; the counts come from the
        // data files alone.
        engine.checkpoint().expect("checkpoint");
        let m = manifest::load(fs.as_ref(), dir).expect("manifest").expect("some");
        assert!(m.collections.iter().any(|c| c.data_files.len() > 1), "a delta file");
        let again = live_view(fs.as_ref(), dir).expect("view").expect("some");
        assert_eq!(again.wal_records, 0);
        let counts: Vec<(String, u64)> = again.collections.iter().map(|c| (c.name.clone(), c.count)).collect();
        assert_eq!(counts, vec![("a".to_string(), 10), ("b".to_string(), 1)]);
    }

    #[test]
    fn live_view_counts_match_a_model_across_deltas_bases_and_a_manifest_without_rows() {
        let fs = Arc::new(FaultStorage::new());
        let dir = Path::new("/live-model");
        let opts = Options { sync: SyncMode::None, storage: fs.clone(), ..Options::default() };
        let engine = Engine::open(dir, opts).expect("open");
        let spec = CollectionSpec { name: "a".into(), dim: 2, metric: Metric::L2, m: 16, ef_construction: 100 };
        engine.commit(&[Op::CreateCollection(spec)]).expect("create");
        let mut model: HashSet<String> = HashSet::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for round in 0..40 {
            let mut ops = Vec::new();
            for _ in 0..(1 + next(60)) {
                let id = format!("r{:04}", next(3_000));
                if next(3) == 0 {
                    model.remove(&id);
                    ops.push(Op::Delete { collection: "a".into(), id });
                } else {
                    model.insert(id.clone());
                    ops.push(upsert("a", &id));
                }
            }
            engine.commit(&ops).expect("commit");
            // Checkpoints now and then: deltas pile up, and a large change writes a new base.
            if round % 3 == 2 {
                engine.checkpoint().expect("checkpoint");
            }
            let v = live_view(fs.as_ref(), dir).expect("view").expect("some");
            assert_eq!(v.collections[0].count, model.len() as u64, "round {round}");
        }
        let m = manifest::load(fs.as_ref(), dir).expect("manifest").expect("some");
        assert!(m.collections[0].data_files.len() > 1, "deltas on a base");
        assert_eq!(m.collections[0].rows, Some(engine.manifest().collections[0].rows.expect("rows")));
        // A manifest written before `rows` existed: the files' ids are read instead, same count.
        let mut old = m.clone();
        old.collections[0].rows = None;
        manifest::store(fs.as_ref(), dir, &old).expect("store");
        let v = live_view(fs.as_ref(), dir).expect("view").expect("some");
        assert_eq!(v.collections[0].count, model.len() as u64);
    }
}
