//! The commit thread: the only writer of the WAL, and the only thread that applies records to
//! the in-memory state once the store is open. Requests are taken from the queue in arrival
//! order; commits are grouped so that one fdatasync covers every record of a group
//! (sync=group), and each caller is completed only after its record is durable per the sync
//! mode and applied. A checkpoint's capture runs between groups.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{checkpoint, poison, CommitCallback, Request, Shared, SyncMode};
use crate::batch::{self, Op};
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::sync::{lock, read, wait, write};
use crate::wal::record::{encode_record, record_len, RECORD_TYPE_BATCH};
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

struct Accepted {
    seq: u64,
    time_ms: u64,
    ops: Vec<Op>,
    done: CommitCallback,
}

impl CommitThread {
    fn run(mut self) {
        loop {
            let requests: Vec<Request> = {
                let mut q = lock(&self.shared.queue);
                while q.requests.is_empty() && !q.shutdown {
                    q.idle = true;
                    q = wait(&self.shared.queue_cv, q);
                    q.idle = false;
                }
                if q.requests.is_empty() {
                    break;
                }
                q.requests.drain(..).collect()
            };
            let mut group = Vec::new();
            for req in requests {
                match req {
                    Request::Commit { payload, done } => group.push((payload, done)),
                    Request::Capture { done } => {
                        self.commit_group(std::mem::take(&mut group));
                        let _ = done.send(checkpoint::capture(&self.shared, &mut self.writer));
                    }
                }
                if self.shared.opts.sync == SyncMode::Always {
                    self.commit_group(std::mem::take(&mut group));
                }
            }
            self.commit_group(group);
        }
        // Make everything written durable even in `none` mode: a clean close loses nothing.
        if lock(&self.shared.poisoned).is_none() {
            if let Err(e) = self.writer.sync().and_then(|_| self.writer.trim()) {
                poison(&self.shared, &e.to_string());
            }
        }
        self.writer.finish();
    }

    fn commit_group(&mut self, group: Vec<(Vec<u8>, CommitCallback)>) {
        if group.is_empty() {
            return;
        }
        let mut accepted: Vec<Accepted> = Vec::with_capacity(group.len());
        // Sized up front: growing by doubling would copy a large batch several times.
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.reserve(group.iter().map(|(payload, _)| record_len(payload.len())).sum());
        let mut next_seq = self.shared.last_seq.load(Ordering::Acquire) + 1;
        let mut time_ms = read(&self.shared.state).last_time_ms;
        let mut failure: Option<Error> = None;
        if self.writer.prealloc_ready() {
            failure = self.writer.roll(next_seq).err();
        }
        for (payload, done) in group {
            if let Some(p) = lock(&self.shared.poisoned).clone() {
                done(Err(Error::Poisoned(p)));
                continue;
            }
            let ops = match batch::decode(&payload).and_then(|ops| self.validate(&ops).map(|_| ops)) {
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
            if failure.is_none() && self.writer.needs_roll(buf.len() + record_len(payload.len())) {
                let flushed = if buf.is_empty() { Ok(()) } else { self.writer.append(&buf) };
                buf.clear();
                if let Err(e) = flushed.and_then(|_| self.writer.roll(seq)) {
                    failure = Some(e);
                }
            }
            encode_record(&mut buf, RECORD_TYPE_BATCH, seq, time_ms, &payload);
            accepted.push(Accepted { seq, time_ms, ops, done });
        }
        if accepted.is_empty() {
            return;
        }
        if failure.is_none() {
            let mut r = self.writer.append(&buf);
            if r.is_ok() && self.shared.opts.sync != SyncMode::None {
                r = self.writer.sync();
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
            for a in accepted {
                (a.done)(Err(Error::Poisoned(reason.clone())));
            }
            return;
        }
        let mut dones = Vec::with_capacity(accepted.len());
        let touched = {
            let mut st = write(&self.shared.state);
            for a in accepted {
                if let Err(e) = st.apply(a.seq, a.time_ms, a.ops) {
                    poison(&self.shared, &format!("state diverged from the log at seq {}: {e}", a.seq));
                }
                self.shared.last_seq.store(a.seq, Ordering::Release);
                dones.push((a.seq, a.done));
            }
            std::mem::take(&mut st.touched)
        };
        for (seq, done) in dones {
            done(Ok(seq));
        }
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
