//! Optimistic transactions (RocksDB's OptimisticTransactionDB): a transaction reads through a
//! read view (its snapshot), buffers its writes, and submits them as one ordinary batch with the
//! ids it read. The commit thread, the only writer, checks them just before it frames the
//! record: if any id the transaction read or writes was changed after the snapshot, by a record
//! applied or by one earlier in the same group, the commit fails with `Error::Conflict` and
//! nothing is written. Otherwise the batch is one WAL record like any other (one seq, the sync
//! mode, all or nothing after a crash), so the WAL format does not change.
//!
//! No locks: the check and the append happen on the one commit thread, in queue order. The
//! snapshot's pin keeps every change after it visible to the check (`versions.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use super::read_view::ReadView;
use super::{not_primary, CommitCallback, Engine, Request};
use crate::batch::Op;
use crate::error::{Error, Result};
use crate::state::State;

/// What a transaction's commit must verify: nothing it read or writes changed after `view`.
pub struct ConflictCheck {
    /// The snapshot; held (pinned) until the check has run.
    pub view: Arc<ReadView>,
    /// (collection, id) read with `get`/`getMany`.
    pub reads: Vec<(String, String)>,
}

impl Engine {
    /// Submit a transaction's writes (an encoded batch) with its conflict check. `done` gets
    /// the record's seq, or `Error::Conflict` naming the first id that changed after the
    /// snapshot, or the error that refused the batch.
    pub fn submit_transaction(&self, payload: Vec<u8>, check: ConflictCheck, done: CommitCallback) {
        if self.shared.opts.replica {
            return done(Err(not_primary()));
        }
        if check.view.is_released() {
            return done(Err(Error::ViewReleased(check.view.seq())));
        }
        self.enqueue(Request::Commit { payload, done, check: Some(Box::new(check)) });
    }

    /// Blocking form of `submit_transaction`.
    pub fn commit_transaction(&self, ops: &[Op], check: ConflictCheck) -> Result<u64> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.submit_transaction(
            crate::batch::encode(ops),
            check,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(Error::Closed))
    }
}

/// Ids and collections written by records accepted earlier in the current group: framed, not
/// yet applied, and all after any snapshot.
#[derive(Default)]
pub(super) struct GroupWrites {
    ids: HashMap<(String, String), u64>,
    collections: HashMap<String, u64>,
}

impl GroupWrites {
    pub(super) fn add(&mut self, seq: u64, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Upsert { collection, id, .. } | Op::Delete { collection, id } => {
                    self.ids.insert((collection.clone(), id.clone()), seq);
                }
                Op::CreateCollection(spec) => {
                    self.collections.insert(spec.name.clone(), seq);
                }
                Op::DropCollection { name } => {
                    self.collections.insert(name.clone(), seq);
                }
            }
        }
    }
}

/// The first id of the transaction (its reads, then its writes) changed after its snapshot.
pub(super) fn find_conflict(st: &State, group: &GroupWrites, check: &ConflictCheck, ops: &[Op]) -> Option<Error> {
    let snapshot = check.view.seq();
    let writes = ops.iter().filter_map(|op| match op {
        Op::Upsert { collection, id, .. } | Op::Delete { collection, id } => Some((collection.as_str(), id.as_str())),
        _ => None,
    });
    let keys = check.reads.iter().map(|(c, id)| (c.as_str(), id.as_str())).chain(writes);
    for (collection, id) in keys {
        let conflict = |seq: u64| Error::Conflict { collection: collection.to_string(), id: id.to_string(), seq, snapshot };
        if let Some(seq) = group.collections.get(collection).or_else(|| group.ids.get(&(collection.to_string(), id.to_string()))) {
            return Some(conflict(*seq));
        }
        match st.collections.get(collection) {
            // Dropped since (or never there: the batch would be refused anyway).
            None => return Some(conflict(st.last_seq)),
            Some(c) if c.id > snapshot => return Some(conflict(c.id)),
            Some(c) => {
                let changed = c.last_change(id);
                if changed > snapshot {
                    return Some(conflict(changed));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::{mpsc, Arc};

    use super::*;
    use crate::batch::CollectionSpec;
    use crate::distance::Metric;
    use crate::engine::Options;
    use crate::wal::writer::Prealloc;

    fn engine() -> Engine {
        let opts = Options { storage: Arc::new(crate::fault::FaultStorage::new()), prealloc: Prealloc::Off, ..Options::default() };
        let e = Engine::open(Path::new("/store"), opts).expect("open");
        let spec = CollectionSpec { name: "c".into(), dim: 1, metric: Metric::L2, m: 16, ef_construction: 64 };
        e.commit(&[Op::CreateCollection(spec)]).expect("create");
        e
    }

    fn up(id: &str, x: f32) -> Op {
        Op::Upsert { collection: "c".into(), id: id.into(), vector: vec![x].into(), metadata: format!("{{\"n\":{x}}}").into() }
    }

    fn reads(ids: &[&str]) -> Vec<(String, String)> {
        ids.iter().map(|id| ("c".to_string(), id.to_string())).collect()
    }

    #[test]
    fn a_write_after_the_snapshot_to_a_read_id_conflicts_and_writes_nothing() {
        let e = engine();
        e.commit(&[up("a", 1.0), up("b", 1.0)]).expect("seed");
        let view = Arc::new(e.read_view().expect("view"));
        let theirs = e.commit(&[up("a", 2.0)]).expect("their write");
        let err = e.commit_transaction(&[up("b", 5.0)], ConflictCheck { view: view.clone(), reads: reads(&["a"]) }).expect_err("conflict");
        match &err {
            Error::Conflict { collection, id, seq, snapshot } => {
                assert_eq!((collection.as_str(), id.as_str(), *seq, *snapshot), ("c", "a", theirs, view.seq()));
            }
            other => panic!("expected a conflict, got {other}"),
        }
        assert_eq!(err.code(), "CAIRN_CONFLICT");
        assert_eq!(e.last_seq(), theirs, "the refused transaction wrote no record");
        assert_eq!(e.get("c", "b").expect("get").map(|r| r.0), Some(vec![1.0]));
        e.close().expect("close");
    }

    #[test]
    fn a_delete_after_the_snapshot_to_a_written_id_conflicts() {
        let e = engine();
        e.commit(&[up("a", 1.0)]).expect("seed");
        let view = Arc::new(e.read_view().expect("view"));
        e.commit(&[Op::Delete { collection: "c".into(), id: "a".into() }]).expect("delete");
        let err = e.commit_transaction(&[up("a", 3.0)], ConflictCheck { view, reads: vec![] }).expect_err("conflict");
        assert_eq!(err.code(), "CAIRN_CONFLICT");
        assert_eq!(e.get("c", "a").expect("get"), None);
        e.close().expect("close");
    }

    #[test]
    fn writes_to_other_ids_after_the_snapshot_do_not_conflict() {
        let e = engine();
        e.commit(&[up("a", 1.0), up("b", 1.0)]).expect("seed");
        let view = Arc::new(e.read_view().expect("view"));
        e.commit(&[up("b", 2.0), up("z", 2.0)]).expect("other ids");
        let seq = e.commit_transaction(&[up("a", 9.0)], ConflictCheck { view, reads: reads(&["a", "never"]) }).expect("commit");
        assert_eq!(e.last_seq(), seq);
        assert_eq!(e.get("c", "a").expect("get").map(|r| r.0), Some(vec![9.0]));
        e.close().expect("close");
    }

    /// Two transactions from one snapshot writing one id: whatever the grouping, the second
    /// to reach the commit thread conflicts (in one group, through the group's own writes).
    #[test]
    fn concurrent_transactions_on_one_id_commit_exactly_once() {
        let e = engine();
        e.commit(&[up("a", 1.0)]).expect("seed");
        let view = Arc::new(e.read_view().expect("view"));
        let (tx, rx) = mpsc::channel();
        for i in 0..8 {
            let tx = tx.clone();
            let check = ConflictCheck { view: view.clone(), reads: reads(&["a"]) };
            e.submit_transaction(crate::batch::encode(&[up("a", 10.0 + i as f32)]), check, Box::new(move |r| tx.send(r).expect("send")));
        }
        drop(tx);
        let results: Vec<Result<u64>> = rx.iter().collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
        assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|e| e.code() == "CAIRN_CONFLICT"));
        e.close().expect("close");
    }

    #[test]
    fn a_released_snapshot_cannot_commit() {
        let e = engine();
        let view = Arc::new(e.read_view().expect("view"));
        view.release();
        let err = e.commit_transaction(&[up("a", 1.0)], ConflictCheck { view, reads: vec![] }).expect_err("released");
        assert_eq!(err.code(), "CAIRN_VIEW_RELEASED");
        e.close().expect("close");
    }
}
