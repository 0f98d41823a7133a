//! Cutting a WAL back to a fork point (`engine::truncate::truncate_wal`), with faults: for every
//! N the Nth write fails, then the Nth fsync (a fault fails that operation and every later one
//! of its kind); after each, in the state a process restart sees and in the state a power cut
//! leaves (`DropUnsynced`):
//! - the store opens, and holds exactly a prefix of the committed history, at least up to the fork;
//! - whenever anything at or past the fork is gone from the store, a rollback segment in
//!   `rollback/` holds every cut record byte for byte (they are never lost);
//! - running the cut again (no faults) finishes it: the store holds the history up to the fork.
//!
//! Also: a store checkpointed past the fork is refused and left unchanged; a cut across several
//! segments, from a store closed cleanly, reopens and takes new commits after the fork.

mod common;

use std::collections::BTreeMap;

use cairn_core::engine::truncate::truncate_wal;
use cairn_core::fault::{CrashKind, FaultOp, FaultStorage};
use cairn_core::layout::{parse_rollback_file_name, NOTE_SUFFIX, ROLLBACK_DIR};
use cairn_core::storage::Storage;
use cairn_core::wal::reader::{scan_segment, ScanItem};
use cairn_core::wal::record::{decode_segment_header, SEGMENT_HEADER_LEN};
use cairn_core::wal::writer::Prealloc;
use cairn_core::{Engine, RecoveryMode, SyncMode};
use common::*;

const MAX_STEPS: u64 = 500;

/// A closed store (every byte durable) of `commits` commits in small WAL segments; the
/// committed history and, per seq, the record's bytes as the WAL holds them.
fn base_store(commits: usize, clean_close: bool) -> (FaultStorage, History, BTreeMap<u64, Vec<u8>>) {
    let steps = workload(7, WorkloadShape { commits, checkpoint_pct: 0, reopen_pct: 0, big_pct: 10 });
    let fs = FaultStorage::new();
    let e = Engine::open(dir(), options(&fs, SyncMode::Always, RecoveryMode::TolerateTornTail, 4096, Prealloc::Off)).expect("open");
    let mut history = History::default();
    for s in &steps {
        if let Step::Commit(ops) = s {
            history.acknowledge(e.commit(ops).expect("commit"), ops.clone());
        }
    }
    if clean_close {
        e.close().expect("close");
    }
    drop(e);
    let base = fs.crash(CrashKind::DropUnsynced);
    let records = wal_records(&base);
    assert_eq!(records.len() as u64, history.len(), "every commit is in wal/");
    (base, history, records)
}

/// Every valid record in `wal/`, by seq, with its bytes.
fn wal_records(fs: &FaultStorage) -> BTreeMap<u64, Vec<u8>> {
    let mut out = BTreeMap::new();
    for path in wal_segments(fs) {
        let buf = fs.read(&path).expect("read segment");
        let first = decode_segment_header(&buf[..SEGMENT_HEADER_LEN]).expect("header");
        for item in scan_segment(&buf, first).items {
            if let ScanItem::Record { offset, header, len, .. } = item {
                out.insert(header.seq, buf[offset as usize..offset as usize + len].to_vec());
            }
        }
    }
    out
}

/// Every record kept in `rollback/`, by seq (from all rollback segments), checking each note.
fn rolled_back(fs: &FaultStorage) -> BTreeMap<u64, Vec<u8>> {
    let mut out = BTreeMap::new();
    for name in list(fs, ROLLBACK_DIR) {
        let Some((first, last)) = parse_rollback_file_name(&name) else { continue };
        let path = dir().join(ROLLBACK_DIR).join(&name);
        let buf = fs.read(&path).expect("rollback segment");
        assert_eq!(decode_segment_header(&buf[..SEGMENT_HEADER_LEN]).expect("rollback header"), first);
        let scan = scan_segment(&buf, first);
        assert!(scan.invalid_tail.is_none(), "rollback segment {name} is damaged");
        assert_eq!(scan.last_seq, Some(last), "rollback segment {name} ends at its name's last seq");
        // A segment whose note is missing was interrupted before anything was cut: it does not
        // count as keeping its records.
        let Ok(note) = fs.read(&dir().join(ROLLBACK_DIR).join(format!("{name}{NOTE_SUFFIX}"))) else { continue };
        let note: serde_json::Value = serde_json::from_slice(&note).expect("note is JSON");
        assert_eq!(note["first_seq"], first);
        assert_eq!(note["last_seq"], last);
        assert_eq!(note["reason"], "fork at test");
        for item in scan.items {
            if let ScanItem::Record { offset, header, len, .. } = item {
                out.insert(header.seq, buf[offset as usize..offset as usize + len].to_vec());
            }
        }
    }
    out
}

/// The store opens with the history up to `fork - 1` or all of it; whatever it lost from the
/// fork on is in `rollback/`, byte for byte. Returns the store's last seq.
fn check_view(view: &FaultStorage, history: &History, records: &BTreeMap<u64, Vec<u8>>, fork: u64, ctx: &str) -> u64 {
    let kept = rolled_back(view);
    let e = open_with(view, RecoveryMode::TolerateTornTail).unwrap_or_else(|err| panic!("{ctx}: the store does not open: {err}"));
    let last = e.last_seq();
    // Between the two only when the crash fell after whole segments went and before the cut
    // one shrank: still a prefix of the history, and the rest is in rollback/.
    assert!(last >= fork - 1 && last <= history.len(), "{ctx}: the store ends at seq {last}, before the fork ({})", fork - 1);
    assert_state(&e, &history.model_at(last), ctx);
    e.close().expect("close");
    for seq in last + 1..=history.len() {
        assert_eq!(kept.get(&seq), records.get(&seq), "{ctx}: record {seq} was cut but is not in rollback/");
    }
    last
}

#[test]
fn a_cut_across_segments_keeps_the_records_and_the_store_takes_new_commits() {
    let (base, history, records) = base_store(40, true);
    let fork = 17;
    let segments_before = wal_segments(&base).len();
    assert!(segments_before >= 3, "the workload spans several segments ({segments_before})");
    let r = truncate_wal(&base, dir(), fork, "fork at test").expect("cut").expect("records cut");
    assert_eq!((r.first_seq, r.last_seq, r.records), (fork, history.len(), history.len() - fork + 1));
    let kept = rolled_back(&base);
    for seq in fork..=history.len() {
        assert_eq!(kept.get(&seq), records.get(&seq), "record {seq} in rollback/");
    }
    // A power cut right after the call keeps all of it.
    let after = base.crash(CrashKind::DropUnsynced);
    assert_eq!(check_view(&after, &history, &records, fork, "after a cut"), fork - 1);
    // The store continues from the fork with new records.
    let e = open_with(&after, RecoveryMode::AbsoluteConsistency).expect("open after the cut");
    // The batches that were cut, committed again (a node that follows the new primary gets
    // new records there): they take the same seqs and the state is the whole history again.
    let mut h = history.clone();
    h.truncate(fork - 1);
    for ops in &history.commits[fork as usize - 1..] {
        h.acknowledge(e.commit(ops).expect("commit after the cut"), ops.clone());
    }
    e.close().expect("close");
    let e = open_with(&after, RecoveryMode::AbsoluteConsistency).expect("reopen");
    assert_eq!(e.last_seq(), h.len());
    assert_state(&e, &h.model_at(h.len()), "after new commits past the fork");
    // Nothing more to cut at the old fork's seqs beyond the new end.
    e.close().expect("close");
    assert_eq!(truncate_wal(&after, dir(), h.len() + 1, "fork at test").expect("nothing"), None);
}

#[test]
fn a_store_checkpointed_past_the_fork_is_refused_unchanged() {
    let (base, history, _) = base_store(12, false);
    let e = open_with(&base, RecoveryMode::TolerateTornTail).expect("open");
    checkpoint(&e).expect("checkpoint");
    e.close().expect("close");
    drop(e);
    let before = files(&base);
    let err = truncate_wal(&base, dir(), history.len() - 2, "fork at test").expect_err("refused");
    assert_eq!(err.code(), "CAIRN_INVALID_ARGUMENT", "{err}");
    assert_eq!(files(&base), before, "a refused cut changes nothing");
    assert!(list(&base, ROLLBACK_DIR).is_empty());
}

#[test]
fn every_write_and_fsync_failure_leaves_a_store_that_opens_and_loses_no_cut_record() {
    for clean_close in [true, false] {
        let (base, history, records) = base_store(30, clean_close);
        let fork = 11;
        let dry = base.crash(CrashKind::DropUnsynced);
        let (w0, s0) = dry.counts();
        truncate_wal(&dry, dir(), fork, "fork at test").expect("dry run").expect("records cut");
        let (w1, s1) = dry.counts();
        let (writes, syncs) = (w1 - w0, s1 - s0);
        assert!(writes > 0 && syncs > 0 && writes < MAX_STEPS && syncs < MAX_STEPS, "{writes} writes, {syncs} syncs");
        for (op, total) in [(FaultOp::Write, writes), (FaultOp::Sync, syncs)] {
            let mut fired = 0;
            for n in 1..=total + 1 {
                let ctx = format!("clean close {clean_close}: fail {op:?} #{n} of {total}");
                let fs = base.crash(CrashKind::DropUnsynced);
                fs.fail_at(op, n);
                let result = truncate_wal(&fs, dir(), fork, "fork at test");
                if fs.fault_fired() {
                    fired += 1;
                    assert!(result.is_err(), "{ctx}: a fault fired but the cut reported success");
                } else {
                    assert!(matches!(result, Ok(Some(_))), "{ctx}: {result:?}");
                }
                let restart = fs.clone();
                restart.clear_faults();
                for (what, view) in [("process restart", restart), ("power cut", fs.crash(CrashKind::DropUnsynced))] {
                    let ctx = format!("{ctx}, {what}");
                    check_view(&view, &history, &records, fork, &ctx);
                    // Retried without faults, the cut completes and still loses nothing.
                    truncate_wal(&view, dir(), fork, "fork at test").unwrap_or_else(|e| panic!("{ctx}: retry: {e}"));
                    assert_eq!(check_view(&view, &history, &records, fork, &format!("{ctx}, retried")), fork - 1);
                }
            }
            assert!(fired as u64 >= total, "{op:?}: only {fired} of {total} faults fired");
        }
    }
}
