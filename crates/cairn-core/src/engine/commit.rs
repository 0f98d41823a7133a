//! The commit thread: the only writer of the WAL, and the only thread that applies records to
//! the in-memory state once the store is open. Requests are taken from the queue in arrival
//! order; commits are grouped so that one fdatasync covers every record of a group
//! (sync=group), and each caller is completed only after its record is durable per the sync
//! mode and applied. A checkpoint's capture runs between groups.
//!
//! On a replica the requests are chunks of the primary's framed records instead of batches:
//! they are grouped the same way, written byte for byte with the primary's sequence numbers
//! and times, and each chunk is acknowledged with its last sequence number.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::transaction::{find_conflict, ConflictCheck, GroupWrites};
use super::{checkpoint, notify_seq, poison, select, CommitCallback, Request, Shared, SyncMode};
use crate::batch::{self, Op};
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::metrics::observe_since;
use crate::sync::{lock, read, wait, wait_timeout, write};
use crate::wal::record::{decode_record, encode_record_parts, record_len, Decoded, RECORD_TYPE_BATCH};
use crate::wal::writer::WalWriter;

/// Start the commit thread over the WAL writer that open created.
pub(super) fn spawn(shared: Arc<Shared>, writer: WalWriter, schema: HashMap<String, u32>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("cairn-commit".into()).spawn(move || CommitThread { shared, writer, schema, buf: Vec::new() }.run())
}

/// The commit thread owns the WAL writer and a schema view (collection name -> dim) that is
/// ahead of the applied state by the records written but not yet applied.
struct CommitThread {
    shared: Arc<Shared>,
    writer: WalWriter,
    schema: HashMap<String, u32>,
    /// The framed records of a group, kept between groups: a fresh multi-megabyte buffer per
    /// group costs a page fault per 4 KiB, more than the copy into it.
    buf: Vec<u8>,
}

/// Largest record buffer kept between groups.
const MAX_KEPT_BUF: usize = 16 << 20;
/// A larger one is freed after the queue has been empty this long.
const IDLE_KEPT_BUF: usize = 1 << 20;
const IDLE_RELEASE: Duration = Duration::from_millis(200);

/// A record written in this group, to apply once the group is durable. `ops: None` writes
/// nothing (an empty replicated chunk); `done: None` is a replicated record acknowledged with
/// the last one of its chunk.
struct Accepted {
    seq: u64,
    time_ms: u64,
    ops: Option<Vec<Op>>,
    done: Option<CommitCallback>,
}

/// A local commit request: an encoded batch and, for a transaction, its conflict check.
struct Submitted {
    /// The encoded batch: one part, or a staged batch's count field and chunks.
    payload: Vec<Vec<u8>>,
    done: CommitCallback,
    check: Option<Box<ConflictCheck>>,
    /// The payload's operations, when a staged batch's chunks were decoded already.
    decoded: Option<Vec<Op>>,
}

/// Where a replicated chunk's records are in a corruption error: the chunk is not a file.
const CHUNK_NAME: &str = "<replicated chunk>";

impl CommitThread {
    fn run(mut self) {
        loop {
            let requests: Vec<Request> = {
                let mut q = lock(&self.shared.queue);
                while q.requests.is_empty() && !q.shutdown {
                    q.idle = true;
                    if self.buf.capacity() > IDLE_KEPT_BUF {
                        // A burst's buffer is kept while writes keep coming (refilling a fresh
                        // one costs a page fault per 4 KiB) and returned once they stop.
                        q = wait_timeout(&self.shared.queue_cv, q, IDLE_RELEASE);
                        if q.requests.is_empty() {
                            self.buf = Vec::new();
                        }
                    } else {
                        q = wait(&self.shared.queue_cv, q);
                    }
                    q.idle = false;
                }
                if q.requests.is_empty() {
                    break;
                }
                q.requests.drain(..).collect()
            };
            // Local commits and replicated chunks never share a group (a store takes only one
            // kind), but arrival order is kept if both come.
            let mut group = Vec::new();
            let mut chunks = Vec::new();
            for req in requests {
                match req {
                    Request::Commit { payload, done, check } => {
                        self.replicate_group(std::mem::take(&mut chunks));
                        group.push(Submitted { payload: vec![payload], done, check, decoded: None });
                    }
                    Request::Stage { batch, chunk } => {
                        // Commits queued before the chunk go first: decoding it would delay
                        // their acknowledgement (another batch's chunks when two are in flight).
                        self.commit_group(std::mem::take(&mut group));
                        self.replicate_group(std::mem::take(&mut chunks));
                        batch.add_chunk(chunk);
                    }
                    Request::CommitStaged { batch, done } => {
                        self.replicate_group(std::mem::take(&mut chunks));
                        match batch.take() {
                            Ok(taken) => group.push(Submitted { payload: taken.parts, done, check: None, decoded: Some(taken.ops) }),
                            Err(e) => done(Err(e)),
                        }
                    }
                    Request::Replicated { bytes, done } => {
                        self.commit_group(std::mem::take(&mut group));
                        chunks.push((bytes, done));
                    }
                    Request::DeleteWhere { collection, filter, done } => {
                        // The matching set is taken from the state as of the record just before
                        // this one: everything ahead of it in the queue is written and applied
                        // first, so a row written concurrently is either ahead (and judged) or
                        // after (and untouched), never half seen.
                        self.commit_group(std::mem::take(&mut group));
                        self.replicate_group(std::mem::take(&mut chunks));
                        let resolved = {
                            let st = read(&self.shared.state);
                            select::delete_payload(&st, &collection, &filter)
                        };
                        match resolved {
                            Err(e) => done(Err(e)),
                            Ok((_, 0)) => done(Ok((self.shared.last_seq.load(Ordering::Acquire), 0))),
                            Ok((payload, n)) => group.push(Submitted {
                                payload: vec![payload],
                                done: Box::new(move |r: Result<u64>| done(r.map(|seq| (seq, n)))),
                                check: None,
                                decoded: None,
                            }),
                        }
                    }
                    Request::Capture { done } => {
                        self.commit_group(std::mem::take(&mut group));
                        self.replicate_group(std::mem::take(&mut chunks));
                        let _ = done.send(checkpoint::capture(&self.shared, &mut self.writer));
                    }
                }
                if self.shared.opts.sync == SyncMode::Always {
                    self.commit_group(std::mem::take(&mut group));
                    self.replicate_group(std::mem::take(&mut chunks));
                }
            }
            self.commit_group(group);
            self.replicate_group(chunks);
        }
        // Make everything written durable even in `none` mode: a clean close loses nothing.
        if lock(&self.shared.poisoned).is_none() {
            if let Err(e) = self.writer.sync().and_then(|_| self.writer.trim()) {
                poison(&self.shared, &e.to_string());
            }
        }
        self.writer.finish();
    }

    fn commit_group(&mut self, group: Vec<Submitted>) {
        if group.is_empty() {
            return;
        }
        self.shared.indexer.writes_started();
        // Only a group holding a transaction tracks what its records write.
        let mut group_writes = group.iter().any(|s| s.check.is_some()).then(GroupWrites::default);
        let mut accepted: Vec<Accepted> = Vec::with_capacity(group.len());
        // Sized up front: growing by doubling would copy a large batch several times.
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.reserve(group.iter().map(|s| record_len(payload_len(&s.payload))).sum());
        let mut next_seq = self.shared.last_seq.load(Ordering::Acquire) + 1;
        let mut time_ms = read(&self.shared.state).last_time_ms;
        let mut failure: Option<Error> = None;
        if self.writer.prealloc_ready() {
            failure = self.writer.roll(next_seq).err();
        }
        for Submitted { payload, done, check, decoded } in group {
            if let Some(p) = lock(&self.shared.poisoned).clone() {
                done(Err(Error::Poisoned(p)));
                continue;
            }
            let checked = |ops: Vec<Op>| match (&check, &group_writes) {
                (Some(check), Some(writes)) => match find_conflict(&read(&self.shared.state), writes, check, &ops) {
                    Some(conflict) => Err(conflict),
                    None => Ok(ops),
                },
                _ => Ok(ops),
            };
            let ops = match decoded
                .map_or_else(|| batch::decode(payload.first().map_or(&[][..], |p| p)), Ok)
                .and_then(checked)
                .and_then(|ops| self.validate(&ops).map(|_| ops))
            {
                Ok(ops) => ops,
                Err(e) => {
                    done(Err(e));
                    continue;
                }
            };
            let seq = next_seq;
            next_seq += 1;
            // Commit times never go backwards, so time targets for recovery are monotonic.
            time_ms = time_ms.max(now_ms());
            if failure.is_none() && self.writer.needs_roll(buf.len() + record_len(payload_len(&payload))) {
                let flushed = if buf.is_empty() { Ok(()) } else { self.writer.append(&buf) };
                buf.clear();
                if let Err(e) = flushed.and_then(|_| self.writer.roll(seq)) {
                    failure = Some(e);
                }
            }
            encode_record_parts(&mut buf, RECORD_TYPE_BATCH, seq, time_ms, &payload);
            if let Some(writes) = group_writes.as_mut() {
                writes.add(seq, &ops);
            }
            accepted.push(Accepted { seq, time_ms, ops: Some(ops), done: Some(done) });
        }
        self.finish_group(buf, failure, accepted);
        self.shared.indexer.writes_finished();
    }

    /// Replica: verify each chunk, write its records as they are, then as `commit_group`. A chunk
    /// is taken whole or refused whole; one refused leaves the log where it was, so the chunks
    /// after it in the group meet a sequence gap.
    fn replicate_group(&mut self, chunks: Vec<(Vec<u8>, CommitCallback)>) {
        if chunks.is_empty() {
            return;
        }
        self.shared.indexer.writes_started();
        let mut accepted: Vec<Accepted> = Vec::new();
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.reserve(chunks.iter().map(|(bytes, _)| bytes.len()).sum());
        let mut next_seq = self.shared.last_seq.load(Ordering::Acquire) + 1;
        let mut failure: Option<Error> = None;
        if self.writer.prealloc_ready() {
            failure = self.writer.roll(next_seq).err();
        }
        for (bytes, done) in chunks {
            if let Some(p) = lock(&self.shared.poisoned).clone() {
                done(Err(Error::Poisoned(p)));
                continue;
            }
            let schema_before = self.schema.clone();
            let records = match self.check_chunk(&bytes, next_seq) {
                Ok(records) => records,
                Err(e) => {
                    self.schema = schema_before;
                    done(Err(e));
                    continue;
                }
            };
            let Some(last) = records.len().checked_sub(1) else {
                accepted.push(Accepted { seq: next_seq - 1, time_ms: 0, ops: None, done: Some(done) });
                continue;
            };
            let mut done = Some(done);
            for (i, r) in records.into_iter().enumerate() {
                let record = &bytes[r.start..r.end];
                if failure.is_none() && self.writer.needs_roll(buf.len() + record.len()) {
                    let flushed = if buf.is_empty() { Ok(()) } else { self.writer.append(&buf) };
                    buf.clear();
                    if let Err(e) = flushed.and_then(|_| self.writer.roll(r.seq)) {
                        failure = Some(e);
                    }
                }
                buf.extend_from_slice(record);
                let done = if i == last { done.take() } else { None };
                accepted.push(Accepted { seq: r.seq, time_ms: r.time_ms, ops: Some(r.ops), done });
                next_seq = r.seq + 1;
            }
        }
        self.finish_group(buf, failure, accepted);
        self.shared.indexer.writes_finished();
    }

    /// Decode and verify a replicated chunk: every record's checksum, sequence numbers exactly
    /// continuing from `expected`, and every payload against the schema (which this updates, and
    /// the caller restores if the chunk is refused).
    fn check_chunk(&mut self, bytes: &[u8], mut expected: u64) -> Result<Vec<ChunkRecord>> {
        let mut records = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let (header, payload, len) = match decode_record(&bytes[pos..]) {
                Decoded::Record { header, payload, len } => (header, payload, len),
                Decoded::End => return Err(Error::corruption(CHUNK_NAME, pos as u64, "zero bytes where a record was expected")),
                Decoded::Invalid(reason) => return Err(Error::corruption(CHUNK_NAME, pos as u64, reason)),
            };
            if header.seq != expected {
                return Err(Error::SequenceGap { expected, got: header.seq });
            }
            let ops = batch::decode(payload).and_then(|ops| self.validate(&ops).map(|_| ops)).map_err(|e| in_record(e, header.seq))?;
            records.push(ChunkRecord { seq: header.seq, time_ms: header.time_ms, ops, start: pos, end: pos + len });
            pos += len;
            expected += 1;
        }
        Ok(records)
    }

    /// Write the group's framed records, sync per the sync mode, apply and acknowledge them; or
    /// poison the store and fail them all when a write, roll or fsync failed.
    fn finish_group(&mut self, buf: Vec<u8>, mut failure: Option<Error>, accepted: Vec<Accepted>) {
        if accepted.is_empty() {
            if buf.capacity() <= MAX_KEPT_BUF {
                self.buf = buf;
            }
            return;
        }
        let written = buf.len() as u64;
        if failure.is_none() && !buf.is_empty() {
            let mut r = self.writer.append(&buf);
            if r.is_ok() && self.shared.opts.sync != SyncMode::None {
                let started = self.shared.metrics.start();
                r = self.writer.sync();
                observe_since(&self.shared.metrics.fsync, started);
            }
            failure = r.err();
        }
        if buf.capacity() <= MAX_KEPT_BUF {
            self.buf = buf;
        }
        if let Some(e) = failure {
            // Never retry a failed write or fsync: the page cache may have dropped the data.
            poison(&self.shared, &e.to_string());
            let reason = lock(&self.shared.poisoned).clone().unwrap_or_default();
            for done in accepted.into_iter().filter_map(|a| a.done) {
                done(Err(Error::Poisoned(reason.clone())));
            }
            return;
        }
        let m = &self.shared.metrics;
        if m.enabled {
            let commits = accepted.iter().filter(|a| a.ops.is_some()).count() as u64;
            m.commits.add(commits);
            m.records.add(accepted.iter().filter_map(|a| a.ops.as_ref()).map(|ops| ops.len() as u64).sum());
            m.wal_bytes.add(written);
            m.group_size.observe_count(commits);
        }
        // The group is durable: acknowledge it, then apply it. The state's write lock is taken
        // first and held until the group is applied, so no read that follows an acknowledgement
        // can see the state before it; meanwhile a writer encodes its next batch (the apply
        // overlaps the caller's work instead of adding to it).
        let touched = {
            let mut st = write(&self.shared.state);
            let mut applying = Vec::with_capacity(accepted.len());
            for a in accepted {
                if a.ops.is_some() {
                    self.shared.last_seq.store(a.seq, Ordering::Release);
                }
                if let Some(done) = a.done {
                    done(Ok(a.seq));
                }
                applying.extend(a.ops.map(|ops| (a.seq, a.time_ms, ops)));
            }
            for (seq, time_ms, ops) in applying {
                if let Err(e) = st.apply(seq, time_ms, ops) {
                    poison(&self.shared, &format!("state diverged from the log at seq {seq}: {e}"));
                }
            }
            std::mem::take(&mut st.touched)
        };
        notify_seq(&self.shared);
        // After the acknowledgements: waking the indexer first would have it compete with the
        // thread that receives them. Pending rows are searched exactly until it catches up.
        for index in &touched {
            self.shared.indexer.notify(index);
        }
    }

    /// Check the operations against the schema as of every record already written, and update
    /// the schema view only if the whole batch is valid.
    fn validate(&mut self, ops: &[Op]) -> Result<()> {
        // A collection's id (and so its checkpoint file names) is the sequence number of its
        // create, so two creates in one batch would share files and overwrite each other's.
        if let Some((i, _)) = ops.iter().enumerate().filter(|(_, op)| matches!(op, Op::CreateCollection(_))).nth(1) {
            return Err(Error::InvalidArgument(format!("ops[{i}]: a batch can create at most one collection")));
        }
        let mut overlay: HashMap<&str, Option<u32>> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            let dim_of = |overlay: &HashMap<&str, Option<u32>>, name: &str| match overlay.get(name) {
                Some(d) => *d,
                None => self.schema.get(name).copied(),
            };
            match op {
                Op::CreateCollection(spec) => {
                    if dim_of(&overlay, &spec.name).is_some() {
                        return Err(Error::AlreadyExists(format!("collection '{}' already exists", spec.name)));
                    }
                    overlay.insert(&spec.name, Some(spec.dim));
                }
                Op::DropCollection { name } => {
                    if dim_of(&overlay, name).is_none() {
                        return Err(Error::NotFound(format!("collection '{name}' does not exist")));
                    }
                    overlay.insert(name, None);
                }
                Op::Upsert { collection, id, vector, .. } => match dim_of(&overlay, collection) {
                    None => return Err(Error::NotFound(format!("collection '{collection}' does not exist"))),
                    Some(d) if d as usize != vector.len() => {
                        return Err(Error::InvalidArgument(format!(
                            "records[{i}].vector of id '{id}' has dimension {} but collection '{collection}' has dim {d}",
                            vector.len()
                        )))
                    }
                    Some(_) => {}
                },
                Op::Delete { collection, .. } => {
                    if dim_of(&overlay, collection).is_none() {
                        return Err(Error::NotFound(format!("collection '{collection}' does not exist")));
                    }
                }
            }
        }
        for (name, dim) in overlay {
            match dim {
                Some(d) => self.schema.insert(name.to_string(), d),
                None => self.schema.remove(name),
            };
        }
        Ok(())
    }
}

fn payload_len(parts: &[Vec<u8>]) -> usize {
    parts.iter().map(Vec::len).sum()
}

/// A verified record of a replicated chunk, at `start..end` of the chunk's bytes.
struct ChunkRecord {
    seq: u64,
    time_ms: u64,
    ops: Vec<Op>,
    start: usize,
    end: usize,
}

/// Name the replicated record in a refusal, keeping the error's kind (and so its code).
fn in_record(e: Error, seq: u64) -> Error {
    let at = |m: String| format!("replicated record seq {seq}: {m}");
    match e {
        Error::InvalidArgument(m) => Error::InvalidArgument(at(m)),
        Error::NotFound(m) => Error::NotFound(at(m)),
        Error::AlreadyExists(m) => Error::AlreadyExists(at(m)),
        other => other,
    }
}
