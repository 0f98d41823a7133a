//! Checkpoints: the commit thread captures the state at an exact sequence number between
//! groups; data and graph files are then written under temporary names, fsynced and renamed,
//! the data directory is fsynced, and only then does the manifest name them. Covered WAL
//! segments move to the archive after the manifest is replaced. One checkpoint runs at a time
//! (`checkpoint_lock`), and a failed one poisons the store: the capture cleared the dirty sets.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{poison, retention, Engine, Request, Shared};
use crate::batch::CollectionSpec;
use crate::datafile::{file_len, DataFileHeader, DataFileWriter, DATAFILE_VERSION, KIND_BASE, KIND_DELTA};
use crate::durable::{temp_path, StagedFile};
use crate::error::{Error, Result};
use crate::index::{label_of, CollectionIndex};
use crate::layout::{data_file_name, graph_file_name, payload_file_name, DATA_DIR};
use crate::manifest::{self, Manifest, ManifestCollection};
use crate::metrics::observe_since;
use crate::payload::PayloadIndexDef;
use crate::progress::ByteProgress;
use crate::state::{FileRef, Row, RowId, UnreadableRecord};
use crate::storage::Storage;
use crate::sync::{lock, read, write};
use crate::wal::writer::WalWriter;

/// What a checkpoint must write, taken by the commit thread at an exact sequence number.
pub(super) struct Capture {
    seq: u64,
    time_ms: u64,
    collections: Vec<CapturedCollection>,
}

/// Rows a checkpoint writes, by id; `None` records a delete (delta files only).
type CapturedRows = Vec<(RowId, Option<Row>)>;

struct CapturedCollection {
    id: u64,
    spec: CollectionSpec,
    existing: Vec<FileRef>,
    /// `Some` when this checkpoint writes a file: base (every row) or delta (changed ids).
    write: Option<(u8, CapturedRows)>,
    index: Arc<CollectionIndex>,
    index_file: Option<FileRef>,
    unreadable: Vec<UnreadableRecord>,
    payload_defs: Vec<PayloadIndexDef>,
    /// The payload index file's bytes when the indexes changed since the file the manifest names.
    payload_bytes: Option<Vec<u8>>,
    payload_file: Option<FileRef>,
    /// Rows at `seq`, the unreadable ones included (the manifest's `rows`).
    rows: u64,
}

/// Bytes a caller counts after the checkpoint, from the store directory and the seq.
type ExtraBytes<'a> = Box<dyn FnOnce(&Path, u64) -> Result<u64> + 'a>;

/// A caller following a checkpoint's progress (`checkpoint_tracked_then`).
struct Tracking<'a> {
    progress: &'a ByteProgress,
    extra: ExtraBytes<'a>,
}

/// Deltas are merged into a new base once there are this many files.
const MAX_DATA_FILES_PER_COLLECTION: usize = 8;

/// Runs between groups, so the state holds exactly the records up to `last_seq`.
pub(super) fn capture(shared: &Shared, writer: &mut WalWriter) -> Result<Capture> {
    if let Some(p) = lock(&shared.poisoned).clone() {
        return Err(Error::Poisoned(p));
    }
    let seq = shared.last_seq.load(Ordering::Acquire);
    if writer.first_seq() <= seq {
        // Seal the active segment so every segment at or below `seq` can be archived.
        if let Err(e) = writer.roll(seq + 1) {
            poison(shared, &e.to_string());
            return Err(e);
        }
    }
    let mut st = write(&shared.state);
    let time_ms = st.last_time_ms;
    let mut collections = Vec::new();
    for c in st.collections.values_mut() {
        let dirty = c.take_dirty();
        let full = c.data_files.is_empty() || c.data_files.len() >= MAX_DATA_FILES_PER_COLLECTION || dirty.len() * 2 >= c.rows.len().max(1);
        let write = if full {
            let mut rows: CapturedRows = c.rows.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect();
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            Some((KIND_BASE, rows))
        } else if !dirty.is_empty() {
            // Already in id order.
            let rows: CapturedRows = dirty
                .into_iter()
                .map(|id| {
                    let row = c.rows.get(&*id).cloned();
                    (id, row)
                })
                .collect();
            Some((KIND_DELTA, rows))
        } else {
            None
        };
        let payload_bytes = (!c.payload.is_empty() && (c.payload.changed || c.payload_file.is_none()))
            .then(|| crate::payload::encode_payload_file(&c.payload, seq));
        c.payload.changed = false;
        let rows = c.count() as u64;
        collections.push(CapturedCollection {
            rows,
            payload_defs: c.payload.defs(),
            payload_bytes,
            payload_file: if c.payload.is_empty() { None } else { c.payload_file.clone() },
            id: c.id,
            spec: c.spec.clone(),
            existing: c.data_files.clone(),
            write,
            index: c.index.clone(),
            index_file: c.index_file.clone(),
            unreadable: {
                let mut u: Vec<_> = c.unreadable.values().cloned().collect();
                u.sort_by(|a, b| a.id.cmp(&b.id));
                u
            },
        });
    }
    Ok(Capture { seq, time_ms, collections })
}

impl Engine {
    /// Write the state to immutable checkpoint files, replace the manifest, and move WAL
    /// segments the checkpoint covers to the archive. Returns the checkpoint's sequence number.
    pub fn checkpoint(&self) -> Result<u64> {
        self.checkpoint_then(|_, _| Ok(())).map(|(seq, ())| seq)
    }

    /// Checkpoint, then run `f` with the new manifest and the store directory while no other
    /// checkpoint can run, so the files the manifest names stay in place (snapshots link them).
    pub fn checkpoint_then<T>(&self, f: impl FnOnce(&Manifest, &Path) -> Result<T>) -> Result<(u64, T)> {
        self.check_open()?;
        let _one_at_a_time = lock(&self.shared.checkpoint_lock);
        let seq = self.checkpoint_locked(None)?;
        let manifest = lock(&self.shared.manifest).clone();
        Ok((seq, f(&manifest, &self.shared.dir)?))
    }

    /// `checkpoint_then`, counting into `progress` the bytes of the files the checkpoint writes
    /// plus the `extra(dir, seq)` bytes that `f` will count itself. The total is set before the
    /// first byte is written: the checkpoint encodes all its files first (so it holds them in
    /// memory together), then writes them.
    pub fn checkpoint_tracked_then<T>(
        &self,
        progress: &ByteProgress,
        extra: impl FnOnce(&Path, u64) -> Result<u64>,
        f: impl FnOnce(&Manifest, &Path) -> Result<T>,
    ) -> Result<(u64, T)> {
        self.check_open()?;
        let _one_at_a_time = lock(&self.shared.checkpoint_lock);
        let seq = self.checkpoint_locked(Some(Tracking { progress, extra: Box::new(extra) }))?;
        let manifest = lock(&self.shared.manifest).clone();
        Ok((seq, f(&manifest, &self.shared.dir)?))
    }

    /// The manifest as the engine holds it: the live checkpoint files, with their sizes and
    /// checksums. Equal to `MANIFEST` on disk unless that file was damaged since it was written.
    pub fn manifest(&self) -> Manifest {
        lock(&self.shared.manifest).clone()
    }

    /// Run `f` with the manifest while no checkpoint can run, so no checkpoint file, archived
    /// WAL segment or manifest is written, moved or removed meanwhile (scrub installs repairs so).
    pub fn with_checkpoint_lock<T>(&self, f: impl FnOnce(&Manifest, &Path) -> Result<T>) -> Result<T> {
        self.check_open()?;
        let _one_at_a_time = lock(&self.shared.checkpoint_lock);
        let manifest = lock(&self.shared.manifest).clone();
        f(&manifest, &self.shared.dir)
    }

    /// Rewrite the checkpoint files of the collection with this id from the in-memory state
    /// (verified when it was loaded, and applied from the WAL since): a checkpoint that writes
    /// a full base file and a fresh graph file for it, then replaces the manifest, with the
    /// usual temp file, fsync, rename and directory fsync. `before` runs first under the
    /// checkpoint lock; scrub keeps the damaged files there, because the checkpoint removes
    /// files the new manifest no longer names. Returns the checkpoint's sequence number.
    pub fn rewrite_collection_files(&self, collection_id: u64, before: impl FnOnce(&Manifest, &Path) -> Result<()>) -> Result<u64> {
        self.check_open()?;
        let _one_at_a_time = lock(&self.shared.checkpoint_lock);
        let manifest = lock(&self.shared.manifest).clone();
        before(&manifest, &self.shared.dir)?;
        {
            let mut st = write(&self.shared.state);
            let c = st
                .collections
                .values_mut()
                .find(|c| c.id == collection_id)
                .ok_or_else(|| Error::NotFound(format!("no collection has id {collection_id}")))?;
            // With no files listed, the capture writes a full base, and a base rewrites the graph;
            // the payload indexes are written again too.
            c.data_files.clear();
            c.payload_file = None;
        }
        self.checkpoint_locked(None)
    }

    /// Rewrite `MANIFEST` from the manifest the engine holds. `before` runs first under the
    /// checkpoint lock (scrub quarantines the damaged file there).
    pub fn rewrite_manifest(&self, before: impl FnOnce(&Manifest, &Path) -> Result<()>) -> Result<()> {
        self.check_open()?;
        let _one_at_a_time = lock(&self.shared.checkpoint_lock);
        let m = lock(&self.shared.manifest);
        before(&m, &self.shared.dir)?;
        manifest::store(self.shared.opts.storage.as_ref(), &self.shared.dir, &m)
    }

    fn checkpoint_locked(&self, tracking: Option<Tracking<'_>>) -> Result<u64> {
        let started = self.shared.metrics.start();
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let mut q = lock(&self.shared.queue);
            if q.shutdown {
                return Err(Error::Closed);
            }
            q.requests.push_back(Request::Capture { done: tx });
        }
        self.shared.queue_cv.notify_one();
        let capture = rx.recv().unwrap_or(Err(Error::Closed))?;
        let seq = capture.seq;
        let result = self.write_checkpoint(capture, tracking);
        if result.is_ok() {
            observe_since(&self.shared.metrics.checkpoint, started);
        }
        if let Err(e) = &result {
            // The capture cleared the dirty sets, so a later checkpoint could miss rows.
            poison(&self.shared, &format!("checkpoint failed: {e}"));
        }
        result.map(|_| seq)
    }

    fn write_checkpoint(&self, capture: Capture, tracking: Option<Tracking<'_>>) -> Result<()> {
        let sh = &self.shared;
        let storage = sh.opts.storage.as_ref();
        let data_dir = sh.dir.join(DATA_DIR);
        // 1. Graph files first, streamed to disk as they are encoded: their length is known only
        //    once written, and the progress total must be whole before the first byte counts.
        let mut planned = Vec::new();
        let mut graph_bytes = 0u64;
        for c in capture.collections {
            let changed = c.write.is_some() || c.index_file.is_none();
            let graph = self.write_index(storage, &data_dir, c.id, capture.seq, &c.index, changed)?;
            graph_bytes += graph.as_ref().map_or(0, |g| g.bytes);
            planned.push((c, graph));
        }
        let data_header = |id: u64, spec: &CollectionSpec, kind: u8| DataFileHeader {
            version: DATAFILE_VERSION,
            dim: spec.dim,
            collection_id: id,
            covered_seq: capture.seq,
            metric: spec.metric,
            kind,
        };
        let own: u64 = graph_bytes
            + planned
                .iter()
                .map(|(c, _)| {
                    let data = c.write.as_ref().map_or(0, |(kind, rows)| data_file_len(&data_header(c.id, &c.spec, *kind), rows) as u64);
                    data + c.payload_bytes.as_ref().map_or(0, |b| b.len() as u64)
                })
                .sum::<u64>();
        let progress = match tracking {
            Some(t) => {
                let extra = (t.extra)(&sh.dir, capture.seq)?;
                t.progress.set_total(own + extra);
                t.progress.add(graph_bytes);
                Some(t.progress)
            }
            None => None,
        };
        // 2. Data files, streamed the same way, and payload index files.
        let mut collections = Vec::new();
        for (c, graph) in planned {
            let mut data_files = c.existing;
            if let Some((kind, rows)) = &c.write {
                let name = data_file_name(c.id, capture.seq);
                let (bytes, digest, records) =
                    write_data_file(storage, &data_dir.join(&name), &data_header(c.id, &c.spec, *kind), rows, progress)?;
                let r = FileRef { file: name, bytes, xxh3: format!("{digest:016x}"), records, covered_seq: capture.seq };
                if *kind == KIND_BASE {
                    data_files.clear();
                }
                data_files.push(r);
            }
            let index = match graph {
                Some(r) => Some(r),
                // Unchanged since the file the manifest names, or nothing indexed yet.
                None if c.write.is_some() || c.index_file.is_none() => None,
                None => c.index_file,
            };
            let payload_file = match &c.payload_bytes {
                Some(bytes) => {
                    let name = payload_file_name(c.id, capture.seq);
                    let path = data_dir.join(&name);
                    let mut out = StagedFile::create(storage, &path).map_err(|e| Error::io(temp_path(&path), e))?;
                    append_counted(&mut out, bytes, progress)?;
                    let (bytes, digest) = out.commit(storage, &path).map_err(|e| Error::io(&path, e))?;
                    let records = c.payload_defs.len() as u64;
                    Some(FileRef { file: name, bytes, xxh3: format!("{digest:016x}"), records, covered_seq: capture.seq })
                }
                None => c.payload_file,
            };
            collections.push(ManifestCollection {
                id: c.id,
                name: c.spec.name.clone(),
                dim: c.spec.dim,
                metric: c.spec.metric,
                m: c.spec.m,
                ef_construction: c.spec.ef_construction,
                data_files,
                index,
                unreadable: c.unreadable,
                payload_indexes: c.payload_defs,
                payload_file,
                rows: Some(c.rows),
            });
        }
        // durability: new data and graph files must be durable before the manifest names them.
        storage.sync_dir(&data_dir).map_err(|e| Error::io(&data_dir, e))?;
        let new_manifest =
            Manifest { checkpoint_seq: capture.seq, checkpoint_time_ms: capture.time_ms, clean_shutdown_seq: None, collections };
        {
            let mut m = lock(&sh.manifest);
            manifest::store(storage, &sh.dir, &new_manifest)?;
            *m = new_manifest.clone();
        }
        {
            let mut st = write(&sh.state);
            for mc in &new_manifest.collections {
                if let Some(c) = st.collections.get_mut(&mc.name) {
                    if c.id == mc.id {
                        c.data_files = mc.data_files.clone();
                        c.index_file = mc.index.clone();
                        c.payload_file = mc.payload_file.clone();
                    }
                }
            }
        }
        retention::archive_segments(storage, &sh.dir, capture.seq)?;
        retention::prune_archive(storage, &sh.dir, &sh.opts)?;
        retention::remove_orphan_data(storage, &sh.dir, &new_manifest)
    }

    /// Write the graph file when the collection changed since the file the manifest names (or
    /// there is none), once every row up to `seq` is in it; `None` when the named file stays, or
    /// when nothing is indexed. It may also hold later rows: labels make any graph file
    /// reusable, because open matches it against the rows. Streamed to its temporary name while
    /// inserts wait (`Hnsw::write_to`), then fsynced and renamed.
    fn write_index(
        &self,
        storage: &dyn Storage,
        data_dir: &Path,
        id: u64,
        seq: u64,
        index: &CollectionIndex,
        changed: bool,
    ) -> Result<Option<FileRef>> {
        if !changed {
            return Ok(None);
        }
        index.wait_indexed_through(label_of(seq + 1, 0) - 1, &self.shared.indexer.stopped);
        let stats = index.stats();
        if stats.indexed == 0 {
            return Ok(None);
        }
        let name = graph_file_name(id, seq);
        let path = data_dir.join(&name);
        let mut out = StagedFile::create(storage, &path).map_err(|e| Error::io(temp_path(&path), e))?;
        read(&index.hnsw).write_to(&mut out, seq).map_err(|e| Error::io(out.tmp_path(), e))?;
        let (bytes, digest) = out.commit(storage, &path).map_err(|e| Error::io(&path, e))?;
        Ok(Some(FileRef { file: name, bytes, xxh3: format!("{digest:016x}"), records: stats.indexed as u64, covered_seq: seq }))
    }
}

/// Bytes between flushes of a data file being written.
const DATA_CHUNK: usize = 1 << 20;

/// The length `write_data_file` will give `rows` under `header`.
fn data_file_len(header: &DataFileHeader, rows: &CapturedRows) -> usize {
    let fmt = header.record_format();
    file_len(
        rows.iter()
            .map(|(id, row)| match row {
                Some(r) => fmt.record_len(true, id.len(), r.metadata.len()),
                None => fmt.record_len(false, id.len(), 0),
            })
            .sum(),
    )
}

/// Write `rows` as a data file at `path`, through its temporary name, about `DATA_CHUNK` at a
/// time; returns its length, xxh3 and record count.
fn write_data_file(
    storage: &dyn Storage,
    path: &Path,
    header: &DataFileHeader,
    rows: &CapturedRows,
    progress: Option<&ByteProgress>,
) -> Result<(u64, u64, u64)> {
    let mut out = StagedFile::create(storage, path).map_err(|e| Error::io(temp_path(path), e))?;
    let mut w = DataFileWriter::new(header);
    for (id, row) in rows {
        match row {
            Some(r) => w.upsert(id, r.label, &r.vector, &r.metadata),
            None => w.delete(id, 0),
        }
        if w.buffered() >= DATA_CHUNK {
            w.flush_into(|bytes| append_counted(&mut out, bytes, progress))?;
        }
    }
    let (tail, records) = w.finish();
    append_counted(&mut out, &tail, progress)?;
    let (bytes, digest) = out.commit(storage, path).map_err(|e| Error::io(path, e))?;
    Ok((bytes, digest, records))
}

/// Append `bytes` to a file the checkpoint writes, counting them in `progress`. The files are
/// renamed into place one by one and `data/` is fsynced once for all of them, before the
/// manifest names any.
fn append_counted(out: &mut StagedFile, bytes: &[u8], progress: Option<&ByteProgress>) -> Result<()> {
    out.append(bytes).map_err(|e| Error::io(out.tmp_path(), e))?;
    if let Some(p) = progress {
        p.add(bytes.len() as u64);
    }
    Ok(())
}
