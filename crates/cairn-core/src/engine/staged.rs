//! A batch handed to the commit thread in parts, as its writer encodes it: the thread decodes and
//! checks each chunk between groups while the writer encodes the next, so committing the batch
//! only validates it against the schema, frames, writes and syncs it. The record written is the
//! one `submit` writes for the whole payload: one batch, applied all or nothing.
//!
//! Invariants:
//! - Chunks and the commit are queued in the order the writer made them, so every chunk is
//!   decoded before its batch is committed.
//! - A staged batch is taken once: by its commit, or dropped by `abort`. A chunk that arrives
//!   after either is ignored, and a batch whose chunk failed to decode is refused whole with
//!   that chunk's error.

use std::sync::{Arc, Mutex};

use super::{not_primary, CommitCallback, Engine, Request};
use crate::batch::{self, Op};
use crate::error::{Error, Result};
use crate::sync::lock;

/// A batch being staged (`Engine::begin_staged`).
#[derive(Clone, Default)]
pub struct StagedBatch(Arc<Mutex<Staging>>);

#[derive(Default)]
pub(super) struct Staging {
    /// The chunks so far, in order: the payload is its count field, then these.
    chunks: Vec<Vec<u8>>,
    ops: Vec<Op>,
    /// The first chunk's error; no later chunk is decoded.
    error: Option<Error>,
    /// Taken by its commit or dropped by `abort`.
    finished: bool,
}

/// A staged batch as the commit thread commits it: its payload in parts (the count field,
/// then the chunks) and its operations.
pub(super) struct Taken {
    pub(super) parts: Vec<Vec<u8>>,
    pub(super) ops: Vec<Op>,
}

impl StagedBatch {
    /// Drop what was staged (the writer gave up on the batch); a later commit is refused.
    pub fn abort(&self) {
        let mut s = lock(&self.0);
        s.finished = true;
        s.ops = Vec::new();
        s.chunks = Vec::new();
    }

    /// Commit thread: decode `chunk` (operations back to back, no count) and add it.
    pub(super) fn add_chunk(&self, chunk: Vec<u8>) {
        let first = {
            let s = lock(&self.0);
            if s.finished || s.error.is_some() {
                return;
            }
            s.ops.len()
        };
        // Decoded outside the lock: only the commit thread adds chunks, and `abort` meanwhile
        // just means this chunk is dropped below.
        let decoded = batch::decode_ops(&chunk, first);
        let mut s = lock(&self.0);
        if s.finished {
            return;
        }
        match decoded {
            Ok(ops) => {
                s.chunks.push(chunk);
                s.ops.extend(ops);
            }
            Err(e) => s.error = Some(e),
        }
    }

    /// Commit thread: the whole batch, or the error that refuses it.
    pub(super) fn take(&self) -> Result<Taken> {
        let mut s = lock(&self.0);
        if s.finished {
            return Err(Error::InvalidArgument("this staged batch was already committed or aborted".into()));
        }
        s.finished = true;
        if let Some(e) = s.error.take() {
            return Err(e);
        }
        if s.ops.is_empty() {
            return Err(Error::InvalidArgument("a staged batch must hold at least one operation".into()));
        }
        let mut parts = vec![(s.ops.len() as u32).to_le_bytes().to_vec()];
        parts.append(&mut s.chunks);
        Ok(Taken { parts, ops: std::mem::take(&mut s.ops) })
    }
}

impl Engine {
    /// Start a batch to be handed over in chunks (`stage`) and committed with `submit_staged`.
    pub fn begin_staged(&self) -> StagedBatch {
        StagedBatch::default()
    }

    /// Queue one chunk of `batch`'s payload: encoded operations back to back, without the
    /// payload's count field. It is decoded on the commit thread; an error in it is reported
    /// when the batch is committed.
    pub fn stage(&self, batch: &StagedBatch, chunk: Vec<u8>) {
        if self.shared.opts.replica {
            return; // The commit refuses it.
        }
        self.enqueue(Request::Stage { batch: batch.clone(), chunk });
    }

    /// Commit `batch` as one record, exactly as `submit` commits the same payload whole.
    pub fn submit_staged(&self, batch: &StagedBatch, done: CommitCallback) {
        if self.shared.opts.replica {
            batch.abort();
            return done(Err(not_primary()));
        }
        self.enqueue(Request::CommitStaged { batch: batch.clone(), done });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::CollectionSpec;
    use crate::distance::Metric;
    use crate::engine::Options;
    use crate::storage::{OsStorage, Storage};

    fn upsert(id: &str, x: f32, metadata: &str) -> Op {
        Op::Upsert { collection: "c".into(), id: id.into(), vector: vec![x, 1.0].into(), metadata: metadata.into() }
    }

    /// `ops` encoded without the count field, cut into chunks at the given op boundaries.
    fn chunks(ops: &[Op], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain(std::iter::once(&ops.len())) {
            out.push(batch::encode(&ops[from..to])[4..].to_vec());
            from = to;
        }
        out
    }

    fn commit_staged(e: &Engine, parts: Vec<Vec<u8>>) -> Result<u64> {
        let b = e.begin_staged();
        for p in parts {
            e.stage(&b, p);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        e.submit_staged(
            &b,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(Error::Closed))
    }

    /// Remove a test's store directory, through the `Storage` trait like all file I/O here.
    fn remove(dir: &std::path::Path) {
        let _ = OsStorage.remove_dir_all(dir);
    }

    fn engine(name: &str) -> (Engine, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("cairn-staged-{name}-{}", std::process::id()));
        remove(&dir);
        let e = Engine::open(&dir, Options::default()).expect("open");
        e.commit(&[Op::CreateCollection(CollectionSpec { name: "c".into(), dim: 2, metric: Metric::L2, m: 16, ef_construction: 64 })])
            .expect("create");
        (e, dir)
    }

    #[test]
    fn a_staged_batch_writes_the_record_a_whole_payload_would() {
        let (e, dir) = engine("same");
        let ops: Vec<Op> = (0..50).map(|i| upsert(&format!("r{i}"), i as f32, if i % 2 == 0 { "{}" } else { "{\"odd\":true}" })).collect();
        let seq = commit_staged(&e, chunks(&ops, &[1, 20, 21, 49])).expect("commit");
        let whole = e.read_wal(seq, 1 << 20).expect("read").bytes;
        assert_eq!(e.get("c", "r49").expect("get"), Some((vec![49.0, 1.0], "{\"odd\":true}".to_string())));
        assert_eq!(e.count("c").expect("count"), 50);
        drop(e);
        // The same ops submitted whole, in a fresh store at the same seq, frame the same payload.
        let (e2, dir2) = engine("same-whole");
        let seq2 = e2.commit(&ops).expect("commit");
        assert_eq!(seq, seq2);
        let framed = e2.read_wal(seq2, 1 << 20).expect("read").bytes;
        // Records differ only in their commit time (header bytes 16..24) and checksum.
        let payload = |b: &[u8]| b[24..b.len() - 8].to_vec();
        assert_eq!(payload(&whole), payload(&framed));
        drop(e2);
        remove(&dir);
        remove(&dir2);
    }

    #[test]
    fn a_bad_chunk_refuses_the_whole_batch_naming_its_record() {
        let (e, dir) = engine("bad");
        let before = e.last_seq();
        let mut ops: Vec<Op> = (0..30).map(|i| upsert(&format!("r{i}"), i as f32, "{}")).collect();
        ops[25] = upsert("r25", 25.0, "[1]");
        let err = commit_staged(&e, chunks(&ops, &[10, 20])).expect_err("refused");
        assert!(err.to_string().contains("records[25].metadata of id 'r25' must be a JSON object"), "{err}");
        assert_eq!(e.last_seq(), before, "nothing was written");
        assert_eq!(e.count("c").expect("count"), 0, "nothing was applied");
        // A truncated chunk is refused too.
        let mut parts = chunks(&ops[..10], &[5]);
        parts[1].pop();
        assert!(commit_staged(&e, parts).is_err());
        assert_eq!(e.last_seq(), before);
        drop(e);
        remove(&dir);
    }

    #[test]
    fn an_aborted_or_committed_batch_is_never_committed_again() {
        let (e, dir) = engine("once");
        let ops: Vec<Op> = (0..4).map(|i| upsert(&format!("r{i}"), i as f32, "{}")).collect();
        let b = e.begin_staged();
        e.stage(&b, chunks(&ops, &[])[0].clone());
        b.abort();
        let (tx, rx) = std::sync::mpsc::channel();
        e.submit_staged(&b, Box::new(move |r| tx.send(r).expect("send")));
        assert!(rx.recv().expect("done").is_err(), "an aborted batch is refused");
        assert_eq!(e.count("c").expect("count"), 0);
        let b = e.begin_staged();
        e.stage(&b, chunks(&ops, &[])[0].clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let again = tx.clone();
        e.submit_staged(&b, Box::new(move |r| tx.send(r).expect("send")));
        e.submit_staged(&b, Box::new(move |r| again.send(r).expect("send")));
        let results = [rx.recv().expect("done"), rx.recv().expect("done")];
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
        assert_eq!(e.count("c").expect("count"), 4);
        // An empty batch is refused.
        assert!(commit_staged(&e, Vec::new()).is_err());
        drop(e);
        remove(&dir);
    }
}
