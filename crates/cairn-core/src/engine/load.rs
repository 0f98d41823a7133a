//! Loading the checkpoint the manifest names into the in-memory state, before the WAL tail is
//! applied. Each collection's data files are read oldest first and verified record by record;
//! the persisted graph is read and checked on a second thread meanwhile and matched against
//! the rows. A damaged record of known identity is rebuilt from the WAL write that produced it
//! or marked unreadable; it never silently serves an older version of its row.

use crate::shared_vector::SharedVector;
use hashbrown::hash_map::Entry;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{self, CollectionSpec, Op};
use crate::checksum::xxh3;
use crate::datafile::{
    read_header, stream_data_file, stream_data_file_parallel, visit_data_file, RecordRef, KIND_DELTA, REC_DELETE, R_FIXED,
};
use crate::error::{Error, Result};
use crate::hnsw::{Hnsw, HnswParams, LoadedGraph};
use crate::index::{seq_of_label, CollectionIndex, LABEL_OP_BITS};
use crate::layout::{parse_wal_segment_name, ARCHIVE_DIR, DATA_DIR, WAL_DIR};
use crate::manifest::{Manifest, ManifestCollection};
use crate::state::{Collection, Row, RowId, State, UnreadableRecord};
use crate::storage::{Storage, StorageFile};
use crate::sync::read;
use crate::wal::reader::{scan_segment, ScanItem};
use crate::wal::recovery::{IndexRebuild, RecordRepair, RecoveryMode, RecoveryReport, SkippedRange, UnreadableRecordReport};

/// From this dimension on, a checkpoint file's records are verified and built into rows on
/// rayon's threads, a window at a time (`stream_data_file_parallel`); below it the extra framing
/// pass costs more than it spreads (measured in bench/README.md).
const PARALLEL_MIN_DIM: usize = 256;
/// Rows handed from the reading thread to the applying one at a time, and batches in flight:
/// enough to keep both busy, little enough to stay in cache.
const STREAM_BATCH_ROWS: usize = 256;
const STREAM_QUEUE_BATCHES: usize = 16;

/// Load the checkpoint the manifest names; also returns the checkpoint files found damaged.
pub(super) fn load_checkpoint(
    storage: &dyn Storage,
    dir: &Path,
    m: &Manifest,
    mode: RecoveryMode,
    report: &mut RecoveryReport,
) -> Result<(State, Vec<String>)> {
    let mut state = State { last_seq: m.checkpoint_seq, last_time_ms: m.checkpoint_time_ms, ..State::default() };
    let mut all_damaged = Vec::new();
    for mc in &m.collections {
        let spec = CollectionSpec { name: mc.name.clone(), dim: mc.dim, metric: mc.metric, m: mc.m, ef_construction: mc.ef_construction };
        let params = Collection::hnsw_params(&spec);
        // The graph file and the row files are independent until they are matched, and reading
        // them is most of an open: read and check the graph on a second thread meanwhile. Every
        // structure derived from the rows alone is built before the join too; the collection
        // gets its real index after it.
        let (graph, c) = std::thread::scope(|scope| {
            let graph = std::thread::Builder::new()
                .name("cairn-load-index".into())
                .spawn_scoped(scope, || read_index_file(storage, dir, mc, &params));
            let rows = load_rows(storage, dir, mc, Collection::with_index(mc.id, spec.clone(), Hnsw::new(params, 0)?), mode, report)
                .map(|(c, damaged)| (derive_from_rows(storage, dir, mc, c), damaged));
            let graph = match graph {
                Ok(handle) => handle.join().unwrap_or_else(|_| Err("reading the index file panicked".to_string())),
                // No thread to be had: read it here.
                Err(_) => read_index_file(storage, dir, mc, &params),
            };
            rows.map(|c| (graph, c))
        })?;
        let (mut c, damaged) = c;
        // Match the graph against the rows: a row in it lends its node its vector (the file's
        // copy was checked but never kept), one missing from it becomes pending; `finish` reads
        // back the vectors of nodes no row lent one.
        let mut in_graph = 0usize;
        let mut pending = Vec::new();
        let graph = graph.and_then(|(mut loaded, file, path)| {
            for row in c.rows.values() {
                if loaded.adopt_row_vector(row.label, &row.vector) {
                    in_graph += 1;
                } else {
                    pending.push((row.label, row.vector.clone()));
                }
            }
            loaded.finish(file.as_ref(), &path).map_err(|e| e.to_string())
        });
        let hnsw = match graph {
            Ok(h) => {
                c.index_file = mc.index.clone();
                h
            }
            // A missing or damaged file means a rebuild from the vectors (every row pending),
            // which is reported; queries stay exact meanwhile because they scan pending rows.
            Err(reason) => {
                if !c.rows.is_empty() {
                    report.index_rebuilds.push(IndexRebuild { collection: spec.name.clone(), reason });
                }
                in_graph = 0;
                pending = c.rows.values().map(|row| (row.label, row.vector.clone())).collect();
                Hnsw::new(params, c.rows.len().max(1024))?
            }
        };
        c.index = CollectionIndex::new(hnsw);
        for (label, vector) in pending {
            c.index.add_pending(label, vector);
        }
        // A file with damaged records must not stay named: with no files listed, the checkpoint
        // that follows such an open writes a full base of what is served.
        c.data_files = if damaged.is_empty() { mc.data_files.clone() } else { Vec::new() };
        all_damaged.extend(damaged);
        // Nodes without a live row become tombstones.
        {
            let h = read(&c.index.hnsw);
            if in_graph < h.len() {
                for stale in h.labels() {
                    if !c.live.contains(stale) {
                        h.mark_deleted(stale);
                    }
                }
            }
        }
        state.collections.insert(mc.name.clone(), c);
    }
    Ok((state, all_damaged))
}

/// Build what derives from the loaded rows alone: `live` (label -> id and metadata), `order`
/// and the payload indexes (from their file when it verifies and matches the rows, else from
/// the rows).
fn derive_from_rows(storage: &dyn Storage, dir: &Path, mc: &ManifestCollection, mut c: Collection) -> Collection {
    // `load_rows` builds `live`, and `order` from a single file, as it goes; otherwise they are
    // built here (one entry per row when complete), `order` on a second core meanwhile.
    let rows = &c.rows;
    if c.live.len() == rows.len() && c.order.len() != rows.len() {
        c.order = rows.keys().cloned().collect();
    } else if c.live.len() != rows.len() {
        c.live.clear();
        c.order = std::thread::scope(|scope| {
            let order = std::thread::Builder::new().name("cairn-load-order".into()).spawn_scoped(scope, || rows.keys().cloned().collect());
            c.live.reserve(rows.len());
            for (id, row) in rows {
                c.live.insert(row.label, id.clone(), &row.metadata);
            }
            match order.map(|handle| handle.join()) {
                Ok(Ok(order)) => order,
                // No thread to be had (or it died): build it here.
                _ => rows.keys().cloned().collect(),
            }
        });
    }
    c.payload.fields = mc
        .payload_indexes
        .iter()
        .filter_map(|d| {
            let path = crate::payload::validate_field(&d.field).ok()?;
            Some((d.field.clone(), crate::payload::FieldIndex::new(d.field.clone(), path, d.kind)))
        })
        .collect();
    let loaded = read_payload_file(storage, dir, mc, &c);
    if loaded.is_some() {
        c.payload_file = mc.payload_file.clone();
    }
    c.rebuild_derived(loaded);
    c
}

/// Apply a collection's checkpoint files, oldest first, to `c.rows`, then the manifest's
/// unreadable records. Returns the damaged files (relative to `dir`).
///
/// A damaged record whose identity checksum holds (data file version 2) is rebuilt from the
/// write that produced it when the WAL still holds it, and otherwise becomes unreadable: reads
/// of it fail. Either way no older version of the row is served. A damaged record of unknown
/// identity cannot be accounted for: it is an error, except that skip-corrupt drops it and
/// reports it. absolute-consistency refuses any damage.
fn load_rows(
    storage: &dyn Storage,
    dir: &Path,
    mc: &ManifestCollection,
    mut c: Collection,
    mode: RecoveryMode,
    report: &mut RecoveryReport,
) -> Result<(Collection, Vec<String>)> {
    let mut damaged_files = Vec::new();
    let mut wal_cache = None;
    // `live` is kept in step with `rows` as records are applied, and with a single file (written
    // in id order) `order` is its ids as they come; any repair below drops both and
    // `derive_from_rows` builds them from the rows instead.
    let mut derived_exact = true;
    let mut sorted_ids: Option<Vec<RowId>> = (mc.data_files.len() == 1).then(Vec::new);
    let streamed = stream_rows(storage, dir, mc, &mut c, &mut sorted_ids);
    if !streamed {
        // Something is not intact: start again from the files read whole, which names it.
        c.rows.clear();
        c.live.clear();
        c.unreadable.clear();
        sorted_ids = (mc.data_files.len() == 1).then(Vec::new);
    }
    for sref in mc.data_files.iter().filter(|_| !streamed) {
        let rel = format!("{DATA_DIR}/{}", sref.file);
        let path = dir.join(&rel);
        let buf = read_checkpoint_file(storage, &path, sref.bytes)?;
        let header = read_header(&buf, &path)?;
        if header.collection_id != mc.id || header.dim != mc.dim {
            return Err(Error::corruption(&path, 0, "data file header does not match its collection in the manifest"));
        }
        reserve_rows(&mut c, sref.records, sref.bytes);
        // Only damage brings a file here (streaming declined it): read it record by record,
        // which locates and names the damage.
        let tolerate = mode != RecoveryMode::AbsoluteConsistency;
        let bad = visit_data_file(&buf, &path, tolerate, |rec| apply(&mut c, &mut sorted_ids, prepare(rec)))?.1;
        if !bad.is_empty() {
            damaged_files.push(rel.clone());
            derived_exact = false;
        }
        for bad in bad {
            let Some(who) = bad.identity else {
                if mode != RecoveryMode::SkipCorrupt {
                    return Err(Error::corruption(
                        &path,
                        bad.offset,
                        format!("{} (the record's identity is damaged too, so it cannot be repaired or named)", bad.reason),
                    ));
                }
                // A delta overrides the files before it: dropping one of its records could
                // serve an older version of that row, which is a wrong value, not a lost one.
                if header.kind == KIND_DELTA {
                    let reason = format!("{} in a delta checkpoint file; skipping it could serve an older version of its row", bad.reason);
                    return Err(Error::corruption(&path, bad.offset, reason));
                }
                report.bad_segment_records.push(SkippedRange {
                    file: path.display().to_string(),
                    offset: bad.offset,
                    from_seq: 0,
                    to_seq: None,
                    reason: bad.reason,
                });
                continue;
            };
            c.rows.remove(who.id.as_str());
            c.unreadable.remove(&who.id);
            if who.kind == REC_DELETE {
                // A delete is nothing but its identity, which verified: the damage is in padding
                // or the record checksum, and the record means what it says.
                report.repaired_records.push(RecordRepair {
                    collection: mc.name.clone(),
                    id: who.id,
                    file: rel.clone(),
                    offset: bad.offset,
                    from: "the record's identity checksum".into(),
                });
                continue;
            }
            match find_logged_upsert(storage, dir, &mut wal_cache, &mc.name, &who.id, who.label) {
                Some((from, vector, metadata)) => {
                    c.rows.insert(who.id.as_str().into(), Row::new(&who.id, vector, metadata, who.label));
                    report.repaired_records.push(RecordRepair {
                        collection: mc.name.clone(),
                        id: who.id,
                        file: rel.clone(),
                        offset: bad.offset,
                        from,
                    });
                }
                None => {
                    let reason = format!("{}; the write that produced it is no longer in the WAL", bad.reason);
                    report.unreadable_records.push(UnreadableRecordReport {
                        collection: mc.name.clone(),
                        id: who.id.clone(),
                        file: rel.clone(),
                        offset: bad.offset,
                        reason: reason.clone(),
                    });
                    c.unreadable.insert(
                        who.id.clone(),
                        UnreadableRecord { id: who.id, label: who.label, file: rel.clone(), offset: bad.offset, reason },
                    );
                }
            }
        }
    }
    // Markers from earlier opens are newer than every file listed (see `UnreadableRecord`).
    derived_exact &= mc.unreadable.is_empty();
    for u in &mc.unreadable {
        c.rows.remove(u.id.as_str());
        report.unreadable_records.push(UnreadableRecordReport {
            collection: mc.name.clone(),
            id: u.id.clone(),
            file: u.file.clone(),
            offset: u.offset,
            reason: u.reason.clone(),
        });
        c.unreadable.insert(u.id.clone(), u.clone());
    }
    if derived_exact {
        c.order = sorted_ids.map(BTreeSet::from_iter).unwrap_or_default();
    } else {
        c.live.clear();
    }
    Ok((c, damaged_files))
}

/// Apply every checkpoint file of the collection read through a small buffer
/// (`stream_data_file`), as `load_rows` would; false at the first file that is not exactly as
/// the manifest describes it or does not verify whole, with some of it possibly applied.
///
/// Two stages: a second thread reads, verifies and builds rows (vector slot, metadata, row
/// checksum) in file order and hands them over in batches; this thread applies them to the
/// maps as they come. Order is kept, so the result is that of one thread doing both.
fn stream_rows(
    storage: &dyn Storage,
    dir: &Path,
    mc: &ManifestCollection,
    c: &mut Collection,
    sorted_ids: &mut Option<Vec<RowId>>,
) -> bool {
    for sref in &mc.data_files {
        reserve_rows(c, sref.records, sref.bytes);
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Prepared>>(STREAM_QUEUE_BATCHES);
    std::thread::scope(|scope| {
        let reader = std::thread::Builder::new().name("cairn-load-rows".into()).spawn_scoped(scope, move || {
            let mut batch = Vec::with_capacity(STREAM_BATCH_ROWS);
            let intact = stream_prepared(storage, dir, mc, |rec| {
                batch.push(rec);
                if batch.len() == STREAM_BATCH_ROWS {
                    // A closed receiver only happens if this thread's caller is unwinding.
                    let _ = tx.send(std::mem::replace(&mut batch, Vec::with_capacity(STREAM_BATCH_ROWS)));
                }
            });
            if !batch.is_empty() {
                let _ = tx.send(batch);
            }
            intact
        });
        match reader {
            Ok(reader) => {
                for batch in rx {
                    for rec in batch {
                        apply(c, sorted_ids, rec);
                    }
                }
                reader.join().unwrap_or(false)
            }
            // No thread to be had: both stages here.
            Err(_) => stream_prepared(storage, dir, mc, |rec| apply(c, sorted_ids, rec)),
        }
    })
}

/// Rows built from each checkpoint file's records in order, each as soon as it verified; false
/// at the first file that is not exactly as the manifest describes it or does not verify whole.
fn stream_prepared(storage: &dyn Storage, dir: &Path, mc: &ManifestCollection, mut each: impl FnMut(Prepared)) -> bool {
    for sref in &mc.data_files {
        let Ok(file) = storage.open_read(&dir.join(DATA_DIR).join(&sref.file)) else { return false };
        if file.len().ok() != Some(sref.bytes) {
            return false;
        }
        let header = if mc.dim as usize >= PARALLEL_MIN_DIM {
            stream_data_file_parallel(file.as_ref(), sref.bytes, prepare, &mut each)
        } else {
            stream_data_file(file.as_ref(), sref.bytes, |rec| each(prepare(rec)))
        };
        match header {
            Some(header) if header.collection_id == mc.id && header.dim == mc.dim => {}
            _ => return false,
        }
    }
    true
}

/// Size `rows` and `live` once for a file the manifest says holds `records` records in `bytes`
/// bytes; bounded by what that many bytes could hold, so a damaged manifest sizes nothing large.
fn reserve_rows(c: &mut Collection, records: u64, bytes: u64) {
    let most = usize::try_from(bytes).unwrap_or(usize::MAX) / (R_FIXED + 8);
    let n = usize::try_from(records).unwrap_or(usize::MAX).min(most);
    c.rows.reserve(n);
    c.live.reserve(n);
}

/// A verified record made ready to apply (on any thread): an upsert's row is built, with its
/// vector copied once from the verified bytes into its shared slot.
enum Prepared {
    Put(RowId, Row),
    Delete(RowId),
}

fn prepare(rec: RecordRef<'_>) -> Prepared {
    match rec {
        RecordRef::Upsert { id, label, vector, metadata } => {
            let vector = SharedVector::from_le_bytes(vector);
            Prepared::Put(RowId::from(id), Row::new(id, vector, batch::metadata_text(metadata), label))
        }
        RecordRef::Delete { id, .. } => Prepared::Delete(RowId::from(id)),
    }
}

/// Apply one record, in file order: `rows` and `live` in step, and `sorted_ids` (the file's ids
/// while they come in increasing order, with no delete) extended or dropped.
fn apply(c: &mut Collection, sorted_ids: &mut Option<Vec<RowId>>, rec: Prepared) {
    let id = match rec {
        Prepared::Put(id, row) => {
            let label = row.label;
            if !c.unreadable.is_empty() {
                c.unreadable.remove(&*id);
            }
            // An id a later file writes again keeps the allocation `rows` has for it.
            match c.rows.entry(id) {
                Entry::Occupied(mut held) => {
                    let old = held.insert(row);
                    c.live.remove(old.label);
                    let id = held.key().clone();
                    c.live.insert(label, id.clone(), &held.get().metadata);
                    id
                }
                Entry::Vacant(new) => {
                    let id = new.key().clone();
                    let row = new.insert(row);
                    c.live.insert(label, id.clone(), &row.metadata);
                    id
                }
            }
        }
        Prepared::Delete(id) => {
            if !c.unreadable.is_empty() {
                c.unreadable.remove(&*id);
            }
            if let Some(old) = c.rows.remove(&*id) {
                c.live.remove(old.label);
            }
            *sorted_ids = None;
            return;
        }
    };
    if let Some(ids) = sorted_ids {
        if ids.last().is_some_and(|last| *last >= id) {
            *sorted_ids = None;
        } else {
            ids.push(id);
        }
    }
}

/// A checkpoint file read whole into one buffer; its size must be the one the manifest records.
fn read_checkpoint_file(storage: &dyn Storage, path: &Path, bytes: u64) -> Result<Vec<u8>> {
    let file = storage.open_read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::corruption(path, 0, "checkpoint file named by the manifest is missing"),
        _ => Error::io(path, e),
    })?;
    let len = file.len().map_err(|e| Error::io(path, e))?;
    let short = |len: u64| Error::corruption(path, len.min(bytes), format!("file is {len} bytes, manifest says {bytes}"));
    if len != bytes {
        return Err(short(len));
    }
    let len = usize::try_from(len).map_err(|_| short(len))?;
    let mut buf = Vec::with_capacity(len);
    // Fewer bytes than the length said: the file shrank meanwhile.
    let got = file.read_append(0, len, &mut buf).map_err(|e| Error::io(path, e))?;
    if got != len {
        return Err(short(got as u64));
    }
    Ok(buf)
}

/// The vector and metadata that the upsert with `label` wrote to `id` of `collection`, from the
/// WAL archive or the live WAL (whichever still holds that sequence number), with the segment
/// it came from. The WAL record is verified by its own checksum, and the label names exactly
/// one write, so what it holds is exactly the row the damaged record stored. `cache` keeps the
/// last segment read (relative name and bytes): damage to neighbouring records, which were
/// usually written close together, reads it once.
fn find_logged_upsert(
    storage: &dyn Storage,
    dir: &Path,
    cache: &mut Option<(String, Vec<u8>)>,
    collection: &str,
    id: &str,
    label: u64,
) -> Option<(String, SharedVector, Arc<str>)> {
    let seq = seq_of_label(label);
    let op_index = (label & ((1u64 << LABEL_OP_BITS) - 1)) as usize;
    for sub in [ARCHIVE_DIR, WAL_DIR] {
        let Ok(names) = storage.list(&dir.join(sub)) else { continue };
        let holder = names
            .iter()
            .filter_map(|n| parse_wal_segment_name(n).map(|first| (first, n)))
            .filter(|(first, _)| *first <= seq)
            .max_by_key(|(first, _)| *first);
        let Some((first, name)) = holder else { continue };
        let rel = format!("{sub}/{name}");
        if cache.as_ref().is_none_or(|(cached, _)| *cached != rel) {
            let Ok(bytes) = storage.read(&dir.join(&rel)) else { continue };
            *cache = Some((rel.clone(), bytes));
        }
        let Some((_, buf)) = cache.as_ref() else { continue };
        for item in scan_segment(buf, first).items {
            let ScanItem::Record { header, payload_start, .. } = item else { continue };
            if header.seq != seq {
                continue;
            }
            let payload = &buf[payload_start..payload_start + header.payload_len];
            let Ok(ops) = batch::decode(payload) else { return None };
            return match ops.into_iter().nth(op_index) {
                Some(Op::Upsert { collection: c, id: i, vector, metadata }) if c == collection && i == id => Some((rel, vector, metadata)),
                _ => None,
            };
        }
    }
    None
}

/// Read and check the persisted graph named by the manifest; `Err` says why it is unusable. The
/// file is read section by section into the graph's arrays; the one checksum pass that checks
/// its own trailer also gives the whole-file digest compared with the manifest's.
fn read_index_file(
    storage: &dyn Storage,
    dir: &Path,
    mc: &ManifestCollection,
    params: &HnswParams,
) -> std::result::Result<(LoadedGraph, Box<dyn StorageFile>, PathBuf), String> {
    let Some(r) = &mc.index else {
        return Err("no persisted index".to_string());
    };
    let path = dir.join(DATA_DIR).join(&r.file);
    let file = storage.open_read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file.len().map_err(|e| format!("{}: {e}", path.display()))?;
    if len != r.bytes {
        return Err(format!("{}: size or checksum differs from the manifest", path.display()));
    }
    match Hnsw::read_file(file.as_ref(), len, &path) {
        Ok((_, _, sum)) if format!("{sum:016x}") != r.xxh3 => {
            Err(format!("{}: size or checksum differs from the manifest", path.display()))
        }
        Ok((g, _covered, _)) if g.params() == params => Ok((g, file, path)),
        Ok(_) => Err(format!("{}: parameters differ from the collection's", path.display())),
        Err(e) => Err(e.to_string()),
    }
}

/// The persisted payload indexes, if the manifest names a file that verifies, lists the
/// manifest's indexes and refers only to live rows; otherwise None, and they are rebuilt from
/// the rows (a damaged file is found and reported by scrub, and replaced at the next checkpoint).
fn read_payload_file(storage: &dyn Storage, dir: &Path, mc: &ManifestCollection, c: &Collection) -> Option<crate::payload::PayloadIndexes> {
    let f = mc.payload_file.as_ref()?;
    let path = dir.join(DATA_DIR).join(&f.file);
    let bytes = storage.read(&path).ok()?;
    if bytes.len() as u64 != f.bytes || format!("{:016x}", xxh3(&bytes)) != f.xxh3 {
        return None;
    }
    let (p, _) = crate::payload::decode_payload_file(&bytes, &path).ok()?;
    let live = |l: &u64| c.live.contains(*l);
    let consistent = p.defs() == mc.payload_indexes && p.fields.values().all(|f| f.keys_of.keys().all(live));
    consistent.then_some(p)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use crate::batch::{CollectionSpec, Op};
    use crate::distance::Metric;
    use crate::engine::{Engine, Options};
    use crate::state::{Collection, RowId};
    use crate::sync::read;
    use crate::wal::writer::Prealloc;

    /// What `live`, `order` and the metadata must be for the rows a collection holds.
    fn assert_derived_match_rows(c: &Collection, what: &str) {
        assert_eq!(c.live.len(), c.rows.len(), "{what}: live");
        for (id, row) in &c.rows {
            assert_eq!(c.live.id(row.label), Some(id), "{what}: live label of {id}");
            assert_eq!(c.live.metadata(row.label), Some(&*row.metadata), "{what}: metadata of {id}");
            // One allocation per id, whichever way the maps were built.
            assert!(c.live.id(row.label).is_some_and(|held| Arc::ptr_eq(held, id)), "{what}: live shares the id {id}");
            assert!(c.order.get(&**id).is_some_and(|held| Arc::ptr_eq(held, id)), "{what}: order shares the id {id}");
        }
        let mut ids: Vec<&RowId> = c.rows.keys().collect();
        ids.sort();
        assert_eq!(c.order.iter().collect::<Vec<_>>(), ids, "{what}: order");
    }

    /// `load_rows` builds `live` as records are applied and `order` from a single file as its ids
    /// come: after a base alone, and after a base plus deltas that overwrite and delete (where
    /// `order` is rebuilt from the rows), both equal what the rows say, as does the graph match.
    #[test]
    fn maps_built_while_loading_equal_those_derived_from_the_rows() {
        // Short vectors take the sequential path, long ones the parallel one.
        maps_match_rows(3);
        maps_match_rows(super::PARALLEL_MIN_DIM);
    }

    /// Long vectors are read by the parallel stream; a flipped bit in one of their checkpoint
    /// records sends the open to the record-by-record path, which repairs that record from the
    /// WAL archive and reports it: every row reads back as written.
    #[test]
    fn damage_in_a_long_vector_checkpoint_is_found_and_repaired() {
        let dim = super::PARALLEL_MIN_DIM;
        let (fs, opts, dir, e) = store_with_collection(dim);
        let vector = |i: usize| -> Vec<f32> { (0..dim).map(|d| (i * 31 + d) as f32).collect() };
        // Several windows' worth of records, so the damage is not in the first.
        let rows = 12_000;
        e.commit(
            &(0..rows)
                .map(|i| Op::Upsert { collection: "c".into(), id: format!("id{i}"), vector: vector(i).into(), metadata: "null".into() })
                .collect::<Vec<_>>(),
        )
        .expect("upsert");
        e.checkpoint().expect("checkpoint");
        let seg = read(&e.shared.state).collections["c"].data_files[0].file.clone();
        e.close().expect("close");
        let path = dir.join(crate::layout::DATA_DIR).join(&seg);
        // A bit in the vector of a record near the end of the file.
        fs.mutate(&path, |bytes| {
            let at = bytes.len() - 2 * (dim * 4);
            bytes[at] ^= 0x08;
        })
        .expect("flip");
        let e = Engine::open(dir, opts).expect("reopen repairs");
        let repaired = &e.recovery_report().repaired_records;
        assert_eq!(repaired.len(), 1, "{repaired:?}");
        for i in 0..rows {
            let (got, _) = e.get("c", &format!("id{i}")).expect("get").expect("row");
            assert_eq!(got, vector(i), "row id{i}");
        }
    }

    /// An engine on fault-injection storage at `/store`, holding one empty collection "c".
    fn store_with_collection(dim: usize) -> (Arc<crate::fault::FaultStorage>, Options, &'static Path, Engine) {
        let fs = Arc::new(crate::fault::FaultStorage::new());
        let opts = Options { storage: fs.clone(), prealloc: Prealloc::Off, ..Options::default() };
        let dir = Path::new("/store");
        let e = Engine::open(dir, opts.clone()).expect("open");
        e.commit(&[Op::CreateCollection(CollectionSpec {
            name: "c".into(),
            dim: dim as u32,
            metric: Metric::L2,
            m: 8,
            ef_construction: 32,
        })])
        .expect("create");
        (fs, opts, dir, e)
    }

    fn maps_match_rows(dim: usize) {
        let (_, opts, dir, e) = store_with_collection(dim);
        // Ids in an order unlike their sorted one, so `order` cannot come out right by accident.
        let up = |i: usize, round: usize| Op::Upsert {
            collection: "c".into(),
            id: format!("id{}", (i * 7919) % 3001),
            vector: (0..dim).map(|d| (i * d + round) as f32).collect(),
            metadata: format!("{{\"i\":{i},\"round\":{round}}}").into(),
        };
        e.commit(&(0..3000).map(|i| up(i, 0)).collect::<Vec<_>>()).expect("upsert");
        e.checkpoint().expect("base");
        e.close().expect("close");
        let e = Engine::open(dir, opts.clone()).expect("reopen");
        {
            let st = read(&e.shared.state);
            let c = &st.collections["c"];
            assert_eq!(c.data_files.len(), 1);
            assert_eq!(c.rows.len(), 3000);
            assert_derived_match_rows(c, "one base file");
            assert_eq!(c.index.pending_len(), 0, "every row is in the persisted graph");
        }
        // Deltas: overwrite some rows, delete others.
        for round in 1..3 {
            e.commit(&(0..3000).step_by(5 + round).map(|i| up(i, round)).collect::<Vec<_>>()).expect("overwrite");
            let deletes: Vec<Op> =
                (round..3000).step_by(11).map(|i| Op::Delete { collection: "c".into(), id: format!("id{}", (i * 7919) % 3001) }).collect();
            e.commit(&deletes).expect("delete");
            // Some come back before the checkpoint: `dirty` already holds their ids.
            e.commit(&(round..3000).step_by(33).map(|i| up(i, round)).collect::<Vec<_>>()).expect("upsert again");
            assert_derived_match_rows(&read(&e.shared.state).collections["c"], "after overwrites, deletes and upserts");
            e.checkpoint().expect("delta");
        }
        let expected: Vec<(String, String)> = {
            let st = read(&e.shared.state);
            let mut rows: Vec<(String, String)> =
                st.collections["c"].rows.iter().map(|(id, r)| (id.to_string(), r.metadata.to_string())).collect();
            rows.sort();
            rows
        };
        e.close().expect("close");
        let e = Engine::open(dir, opts).expect("reopen");
        let st = read(&e.shared.state);
        let c = &st.collections["c"];
        assert!(c.data_files.len() > 1, "a base and deltas");
        let mut loaded: Vec<(String, String)> = c.rows.iter().map(|(id, r)| (id.to_string(), r.metadata.to_string())).collect();
        loaded.sort();
        assert_eq!(loaded, expected, "the rows as written");
        assert_derived_match_rows(c, "base and deltas");
    }
}
