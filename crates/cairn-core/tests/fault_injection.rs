//! Crash and fault-injection tests through `FaultStorage`: power cuts that drop unsynced bytes
//! or tear the last write, a failing Nth write or fsync for every N, and group commit. Each
//! checks the engine against the reference model in `common`: after a crash the store equals
//! the model over a prefix of the committed history that holds every acknowledged commit.

mod common;

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::Mutex;

use cairn_core::batch::{self, Op};
use cairn_core::fault::{CrashKind, FaultOp, FaultStorage};
use cairn_core::storage::Storage;
use cairn_core::wal::reader::{scan_segment, ScanItem};
use cairn_core::wal::writer::Prealloc;
use cairn_core::{Engine, Metric, Options, RecoveryMode, SyncMode};
use common::*;

fn strict(sync: SyncMode) -> bool {
    sync != SyncMode::None
}

/// Open a copy of `crashed`, require the acknowledged prefix, and return the recovered seq.
/// DropUnsynced never leaves invalid bytes behind, so even absolute-consistency must accept it.
fn check_drop_unsynced(crashed: &FaultStorage, history: &History, sync: SyncMode, recheck: bool, ctx: &str) -> u64 {
    let e =
        open_with(crashed, RecoveryMode::AbsoluteConsistency).unwrap_or_else(|err| panic!("{ctx}: reopen after power cut failed: {err}"));
    let l = e.last_seq();
    if strict(sync) {
        assert_eq!(l, history.len(), "{ctx}: {sync:?} mode lost an acknowledged commit");
    } else {
        assert!(l <= history.len(), "{ctx}: recovered seq {l} was never committed");
    }
    assert!(e.recovery_report().torn_tail.is_none(), "{ctx}: DropUnsynced cannot tear a record");
    assert_state(&e, &history.model_at(l), &format!("{ctx}: state after power cut (seq {l})"));
    if recheck {
        // What recovery did must itself survive a second power cut right after the open.
        let again = crashed.crash(CrashKind::DropUnsynced);
        drop(e);
        let e2 = open_with(&again, RecoveryMode::AbsoluteConsistency).unwrap_or_else(|err| panic!("{ctx}: second reopen failed: {err}"));
        assert_eq!(e2.last_seq(), l, "{ctx}: second power cut changed the recovered prefix");
        assert_state(&e2, &history.model_at(l), &format!("{ctx}: state after second power cut"));
        let next = e2.commit(&[Op::Delete { collection: "zz-missing".into(), id: "x".into() }]);
        assert_eq!(code(&next), "CAIRN_NOT_FOUND", "{ctx}: an invalid batch must be refused");
        if history.len() >= 1 {
            let seq = e2
                .commit(&[Op::CreateCollection(spec("after-crash", 2, Metric::L2))])
                .unwrap_or_else(|err| panic!("{ctx}: commit after recovery: {err}"));
            assert_eq!(seq, l + 1, "{ctx}: sequence numbers continue after recovery");
        }
    }
    l
}

#[test]
fn drop_unsynced_bytes_keeps_acknowledged_prefix() {
    let configs = [
        (SyncMode::Always, Prealloc::Inline, 11u64),
        (SyncMode::Group, Prealloc::Off, 12),
        (SyncMode::None, Prealloc::Inline, 13),
        (SyncMode::None, Prealloc::Off, 14),
    ];
    for (sync, prealloc, seed) in configs {
        let shape = WorkloadShape { commits: 300, checkpoint_pct: 4, reopen_pct: 1, big_pct: 6 };
        let steps = workload(seed, shape);
        let fs = FaultStorage::new();
        let opts = options(&fs, sync, RecoveryMode::TolerateTornTail, 16 << 10, prealloc);
        let mut engine = Engine::open(dir(), opts.clone()).expect("open a fresh store");
        let mut history = History::default();
        let mut shorter_prefixes = 0;
        for (i, step) in steps.iter().enumerate() {
            let ctx = format!("{sync:?}/{prealloc:?} step {i} ({})", step_name(step));
            match step {
                Step::Commit(ops) => {
                    let seq = engine.commit(ops).unwrap_or_else(|e| panic!("{ctx}: commit failed: {e}"));
                    history.acknowledge(seq, ops.clone());
                }
                Step::Checkpoint => {
                    let seq = checkpoint(&engine).unwrap_or_else(|e| panic!("{ctx}: checkpoint failed: {e}"));
                    assert_eq!(seq, history.len());
                }
                Step::Reopen => {
                    engine.close().unwrap_or_else(|e| panic!("{ctx}: close failed: {e}"));
                    drop(engine);
                    engine = Engine::open(dir(), opts.clone()).unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
                    assert_eq!(engine.last_seq(), history.len(), "{ctx}: a clean close keeps everything");
                }
            }
            let l = check_drop_unsynced(&fs.crash(CrashKind::DropUnsynced), &history, sync, i % 7 == 0, &ctx);
            if l < history.len() {
                shorter_prefixes += 1;
            }
        }
        assert_state(&engine, &history.model_at(history.len()), "live engine at the end");
        if sync == SyncMode::None {
            // Otherwise the None-mode runs would not test prefixes at all.
            assert!(shorter_prefixes > 0, "{sync:?}: no power cut lost an unsynced commit");
        }
    }
}

/// sync=none never fsyncs the active segment, so a power cut may keep any subset of its pages:
/// zeros (or older bytes) followed by valid records. That is the torn tail of an unsynced
/// segment, not corruption: every recovery mode but absolute-consistency opens, at a prefix of
/// the history that holds everything made durable (sealed segments, checkpoints, clean closes).
#[test]
fn sync_none_power_cut_with_pages_written_back_out_of_order_recovers_a_prefix() {
    let mut holes = 0;
    for seed in 0..24u64 {
        let shape = WorkloadShape { commits: 120, checkpoint_pct: 2, reopen_pct: 1, big_pct: 6 };
        let steps = workload(700 + seed, shape);
        let fs = FaultStorage::new();
        let opts = options(&fs, SyncMode::None, RecoveryMode::TolerateTornTail, 64 << 10, Prealloc::Inline);
        let mut engine = Engine::open(dir(), opts.clone()).expect("open a fresh store");
        let mut history = History::default();
        // Everything up to here was fsynced: at a checkpoint, a roll or a clean close.
        let mut durable = 0;
        for step in &steps {
            match step {
                Step::Commit(ops) => history.acknowledge(engine.commit(ops).expect("commit"), ops.clone()),
                Step::Checkpoint => durable = checkpoint(&engine).expect("checkpoint"),
                Step::Reopen => {
                    engine.close().expect("close");
                    drop(engine);
                    durable = history.len();
                    engine = Engine::open(dir(), opts.clone()).expect("reopen");
                }
            }
        }
        let ctx = format!("seed {seed}");
        let crashed = fs.crash(CrashKind::PartialWriteback(seed * 7919 + 1));
        drop(engine);
        let e = open_with(&crashed, RecoveryMode::TolerateTornTail).unwrap_or_else(|err| panic!("{ctx}: open after power cut: {err}"));
        let l = e.last_seq();
        assert!(l >= durable && l <= history.len(), "{ctx}: recovered seq {l}, durable {durable}, committed {}", history.len());
        assert_state(&e, &history.model_at(l), &ctx);
        if let Some(lost) = e.recovery_report().torn_tail.as_ref().and_then(|t| t.unsynced_lost.clone()) {
            holes += 1;
            assert!(lost.from_seq > l && lost.to_seq <= history.len(), "{ctx}: {lost:?} after seq {l}");
        }
        // What recovery truncated and synced survives another power cut.
        let again = crashed.crash(CrashKind::DropUnsynced);
        drop(e);
        let e2 = open_with(&again, RecoveryMode::AbsoluteConsistency).unwrap_or_else(|err| panic!("{ctx}: second open: {err}"));
        assert_eq!(e2.last_seq(), l, "{ctx}");
    }
    assert!(holes > 0, "no power cut left a hole before valid records: the test does not test it");
}

/// A process crash under sync=none leaves acknowledged records only in the page cache. The next
/// open replays them and acknowledges new writes on top; a power cut after that must not lose
/// the replayed records below the durable ones (the open fsyncs what it replayed).
#[test]
fn records_replayed_after_a_sync_none_process_crash_are_durable_before_new_writes() {
    let fs = FaultStorage::new();
    let none = options(&fs, SyncMode::None, RecoveryMode::TolerateTornTail, 1 << 20, Prealloc::Inline);
    let crashed_process = Engine::open(dir(), none).expect("open");
    let mut history = History::default();
    let mut commit = |e: &Engine, ops: Vec<Op>| history.acknowledge(e.commit(&ops).expect("commit"), ops);
    commit(&crashed_process, vec![Op::CreateCollection(spec("a", 2, Metric::L2))]);
    for i in 0..30 {
        commit(
            &crashed_process,
            vec![Op::Upsert { collection: "a".into(), id: format!("r{i}"), vector: vec![i as f32, 1.0].into(), metadata: "null".into() }],
        );
    }
    // The process dies: nothing more of it runs (no close, no fsync); FaultStorage takes no lock.
    std::mem::forget(crashed_process);
    let always = options(&fs, SyncMode::Always, RecoveryMode::TolerateTornTail, 1 << 20, Prealloc::Inline);
    let e = Engine::open(dir(), always).expect("reopen after the process crash");
    assert_eq!(e.last_seq(), 31, "the page cache still held every record");
    commit(&e, vec![Op::Upsert { collection: "a".into(), id: "durable".into(), vector: vec![0.5, 0.5].into(), metadata: "null".into() }]);
    let power_cut = fs.crash(CrashKind::DropUnsynced);
    std::mem::forget(e);
    let after = open_with(&power_cut, RecoveryMode::AbsoluteConsistency).expect("open after the power cut");
    assert_eq!(after.last_seq(), 32);
    assert_state(&after, &history.model_at(32), "state after the power cut");
}

fn step_name(s: &Step) -> &'static str {
    match s {
        Step::Commit(_) => "commit",
        Step::Checkpoint => "checkpoint",
        Step::Reopen => "reopen",
    }
}

/// Syncs each commit step performs, from a fault-free run (rolls add syncs).
fn syncs_per_commit(steps: &[Step], opts_for: impl Fn(&FaultStorage) -> Options) -> Vec<u64> {
    let fs = FaultStorage::new();
    let engine = Engine::open(dir(), opts_for(&fs)).expect("open");
    let mut out = Vec::new();
    for step in steps {
        match step {
            Step::Commit(ops) => {
                let before = fs.counts().1;
                engine.commit(ops).expect("dry-run commit");
                out.push(fs.counts().1 - before);
            }
            Step::Checkpoint => {
                checkpoint(&engine).expect("dry-run checkpoint");
            }
            Step::Reopen => unreachable!("torn-tail workloads do not reopen"),
        }
    }
    out
}

#[test]
fn torn_tail_512_and_4k() {
    let shape = WorkloadShape { commits: 70, checkpoint_pct: 5, reopen_pct: 0, big_pct: 25 };
    let mut torn_seen = 0;
    let mut whole_seen = 0;
    for (sync, prealloc, seed) in [(SyncMode::Always, Prealloc::Off, 21u64), (SyncMode::Group, Prealloc::Inline, 22)] {
        let steps = workload(seed, shape);
        let opts_for = |fs: &FaultStorage| options(fs, sync, RecoveryMode::TolerateTornTail, 16 << 10, prealloc);
        let syncs = syncs_per_commit(&steps, opts_for);
        for tear in [512usize, 4096] {
            let mut commit_no = 0;
            for (k, step) in steps.iter().enumerate() {
                let Step::Commit(victim) = step else { continue };
                let ctx = format!("{sync:?}/{prealloc:?} tear {tear} at step {k}");
                // Run up to the victim, then crash during its fsync: the record was written
                // but is not durable, and the power cut keeps only its first `tear` bytes.
                let fs = FaultStorage::new();
                let engine = Engine::open(dir(), opts_for(&fs)).expect("open");
                let mut history = History::default();
                for s in &steps[..k] {
                    assert!(!run_step(&engine, s, &mut history), "torn-tail workloads do not reopen");
                }
                fs.fail_at(FaultOp::Sync, syncs[commit_no]);
                commit_no += 1;
                let r = engine.commit(victim);
                assert!(r.is_err(), "{ctx}: a commit whose fsync failed was acknowledged");
                assert_eq!(code(&engine.commit(victim)), "CAIRN_POISONED", "{ctx}: later commits");
                assert_state(&engine, &history.model_at(history.len()), &format!("{ctx}: reads after poisoning"));
                drop(engine);

                let acked = history.len();
                let mut full = history.clone();
                full.commits.push(victim.clone());
                let really_torn = wal_record_len(victim) > tear;
                let crashed = || fs.crash(CrashKind::TearLastWrite(tear));

                for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::SkipCorrupt] {
                    let copy = crashed();
                    let e = open_with(&copy, mode).unwrap_or_else(|err| panic!("{ctx}: {mode:?} open failed: {err}"));
                    let report = e.recovery_report().clone();
                    if really_torn {
                        assert_eq!(e.last_seq(), acked, "{ctx}: {mode:?}");
                        let tail = report.torn_tail.as_ref().unwrap_or_else(|| panic!("{ctx}: {mode:?} did not report the torn tail"));
                        assert!(tail.bytes > 0 && tail.file.contains("/wal/"), "{ctx}: torn tail {tail:?}");
                    } else {
                        // The whole record reached the disk: it may (and here must) be recovered.
                        assert_eq!(e.last_seq(), acked + 1, "{ctx}: {mode:?} lost a complete record");
                        assert!(report.torn_tail.is_none(), "{ctx}: {mode:?} reported a torn tail for a whole record");
                    }
                    assert!(report.skipped.is_empty(), "{ctx}: a torn tail is not corruption: {:?}", report.skipped);
                    let l = e.last_seq();
                    assert_state(&e, &full.model_at(l), &format!("{ctx}: {mode:?} state"));
                    // The truncation was fsynced: a power cut now leaves a clean log.
                    let after = copy.crash(CrashKind::DropUnsynced);
                    drop(e);
                    let e2 = open_with(&after, RecoveryMode::AbsoluteConsistency)
                        .unwrap_or_else(|err| panic!("{ctx}: {mode:?} truncation was not durable: {err}"));
                    assert_eq!(e2.last_seq(), l, "{ctx}");
                }

                let abs = open_with(&crashed(), RecoveryMode::AbsoluteConsistency);
                if really_torn {
                    torn_seen += 1;
                    let err = abs.err().unwrap_or_else(|| panic!("{ctx}: absolute-consistency accepted a torn tail"));
                    assert_eq!(err.code(), "CAIRN_CORRUPTION", "{ctx}");
                    let (file, _) = corruption_location(&err);
                    assert!(file.starts_with("/store/wal/"), "{ctx}: error names {file:?}");
                } else {
                    whole_seen += 1;
                    let e = abs.unwrap_or_else(|err| panic!("{ctx}: absolute-consistency refused a whole record: {err}"));
                    assert_eq!(e.last_seq(), acked + 1, "{ctx}");
                }
            }
        }
    }
    assert!(torn_seen > 20 && whole_seen > 20, "torn {torn_seen}, whole {whole_seen}: the workload must exercise both");
}

// ---------------------------------------------------------------------------------------------
// Fail the Nth write or fsync
// ---------------------------------------------------------------------------------------------

struct FaultRun {
    fs: FaultStorage,
    history: History,
    /// The commit that failed, if a commit was where the fault fired: it may or may not survive.
    in_flight: Option<Vec<Op>>,
    fired: bool,
    /// Which kind of step the fault fired in.
    fired_in: &'static str,
}

/// Run `steps` (then a final close) against a fresh store with an optional fault armed from the
/// start, checking the poisoning contract step by step.
fn run_with_fault(steps: &[Step], opts_for: &dyn Fn(&FaultStorage) -> Options, fault: Option<(FaultOp, u64)>, ctx: &str) -> FaultRun {
    let fs = FaultStorage::new();
    if let Some((op, n)) = fault {
        fs.fail_at(op, n);
    }
    let mut run = FaultRun { fs: fs.clone(), history: History::default(), in_flight: None, fired: false, fired_in: "" };
    let mut engine = match Engine::open(dir(), opts_for(&fs)) {
        Ok(e) => e,
        Err(err) => {
            assert!(fs.fault_fired(), "{ctx}: open failed without a fault: {err}");
            run.fired = true;
            run.fired_in = "open";
            return run;
        }
    };
    assert!(!fs.fault_fired(), "{ctx}: a fault fired during open but open succeeded");
    let mut checked_reads = false;
    for (i, step) in steps.iter().chain(std::iter::once(&Step::Reopen)).enumerate() {
        let last = i == steps.len();
        let ctx = format!("{ctx} step {i} ({})", if last { "final close" } else { step_name(step) });
        let before = fs.fault_fired();
        if before && !checked_reads {
            // Reads go on working after poisoning and serve exactly the acknowledged state.
            assert!(engine.poisoned().is_some(), "{ctx}: the engine is not poisoned after a failure");
            assert_state(&engine, &run.history.model_at(run.history.len()), &format!("{ctx}: reads after poisoning"));
            checked_reads = true;
        }
        match step {
            Step::Commit(ops) => {
                let r = engine.commit(ops);
                let after = fs.fault_fired();
                match r {
                    Ok(seq) => {
                        assert!(!after, "{ctx}: commit acknowledged although a fault fired");
                        run.history.acknowledge(seq, ops.clone());
                    }
                    Err(err) if before => assert_eq!(err.code(), "CAIRN_POISONED", "{ctx}: commit after poisoning: {err}"),
                    Err(err) => {
                        assert!(after, "{ctx}: commit failed without a fault: {err}");
                        run.in_flight = Some(ops.clone());
                        run.fired_in = "commit";
                    }
                }
            }
            Step::Checkpoint => {
                let r = checkpoint(&engine);
                let after = fs.fault_fired();
                match r {
                    Ok(seq) => {
                        assert!(!after, "{ctx}: checkpoint succeeded although a fault fired");
                        assert_eq!(seq, run.history.len());
                    }
                    Err(err) if before => assert_eq!(err.code(), "CAIRN_POISONED", "{ctx}: checkpoint after poisoning: {err}"),
                    Err(err) => {
                        assert!(after, "{ctx}: checkpoint failed without a fault: {err}");
                        run.fired_in = "checkpoint";
                    }
                }
            }
            Step::Reopen => {
                let r = engine.close();
                if !before {
                    if fs.fault_fired() {
                        assert!(r.is_err(), "{ctx}: close hit a failed write or fsync but reported success");
                        run.fired_in = "close";
                    } else {
                        r.unwrap_or_else(|err| panic!("{ctx}: close failed without a fault: {err}"));
                    }
                }
                drop(engine);
                if fs.fault_fired() || last {
                    break;
                }
                engine = match Engine::open(dir(), opts_for(&fs)) {
                    Ok(e) => {
                        assert!(!fs.fault_fired(), "{ctx}: a fault fired during reopen but it succeeded");
                        assert_eq!(e.last_seq(), run.history.len(), "{ctx}: reopen after a clean close");
                        e
                    }
                    Err(err) => {
                        assert!(fs.fault_fired(), "{ctx}: reopen failed without a fault: {err}");
                        run.fired_in = "reopen";
                        break;
                    }
                };
            }
        }
    }
    run.fired = fs.fault_fired();
    run
}

/// After a failed run: both a power cut and a plain process restart must recover a prefix that
/// holds every acknowledged commit (a power cut in `None` mode may lose acknowledged ones).
fn check_after_fault(run: &FaultRun, sync: SyncMode, ctx: &str) {
    let acked = run.history.len();
    let mut full = run.history.clone();
    if let Some(ops) = &run.in_flight {
        full.commits.push(ops.clone());
    }
    let max = full.len();
    for (what, storage) in [("power cut", run.fs.crash(CrashKind::DropUnsynced)), ("process restart", run.fs.clone())] {
        storage.clear_faults();
        let e = open_with(&storage, RecoveryMode::TolerateTornTail).unwrap_or_else(|err| panic!("{ctx}: open after {what} failed: {err}"));
        let l = e.last_seq();
        let min = if what == "power cut" && !strict(sync) { 0 } else { acked };
        assert!((min..=max).contains(&l), "{ctx}: after {what} recovered seq {l}, expected {min}..={max}");
        assert_state(&e, &full.model_at(l), &format!("{ctx}: state after {what}"));
    }
}

fn sweep_workload(seed: u64) -> Vec<Step> {
    let shape = WorkloadShape { commits: 32, checkpoint_pct: 0, reopen_pct: 0, big_pct: 12 };
    let mut steps = workload(seed, shape);
    // Fixed places for the steps whose failures matter most: checkpoints (the second one a
    // delta), a clean close and reopen, and commits after each.
    steps.insert(24, Step::Checkpoint);
    steps.insert(20, Step::Reopen);
    steps.insert(12, Step::Checkpoint);
    steps.insert(6, Step::Checkpoint);
    steps
}

#[test]
fn fail_nth_write_or_fsync_for_every_n() {
    let configs = [(SyncMode::Always, Prealloc::Inline, 31u64), (SyncMode::Group, Prealloc::Off, 32), (SyncMode::None, Prealloc::Off, 33)];
    for (sync, prealloc, seed) in configs {
        let steps = sweep_workload(seed);
        let opts_for = move |fs: &FaultStorage| options(fs, sync, RecoveryMode::TolerateTornTail, 4096, prealloc);
        let dry = run_with_fault(&steps, &opts_for, None, "dry run");
        assert!(!dry.fired);
        assert_eq!(dry.history.len() as usize, commit_count(&steps));
        let (writes, syncs) = dry.fs.counts();
        for (op, total) in [(FaultOp::Write, writes), (FaultOp::Sync, syncs)] {
            let mut places = std::collections::BTreeSet::new();
            for n in 1..=total {
                let ctx = format!("{sync:?}/{prealloc:?} fail {op:?} #{n} of {total}");
                let run = run_with_fault(&steps, &opts_for, Some((op, n)), &ctx);
                assert!(run.fired, "{ctx}: the fault never fired; the workload is not deterministic");
                assert!(!run.fired_in.is_empty(), "{ctx}: the fault fired but no step failed");
                places.insert(run.fired_in);
                check_after_fault(&run, sync, &ctx);
            }
            let want: std::collections::BTreeSet<_> = ["open", "commit", "checkpoint", "close", "reopen"].into();
            assert_eq!(places, want, "{sync:?} {op:?}: the sweep must hit every kind of step");
        }
    }
}

/// Open itself writes: it truncates a torn tail, starts a segment, clears the clean-shutdown
/// mark and, in skip-corrupt mode, checkpoints. A failure anywhere there must fail the open
/// without harming the store, so that the next open recovers the same state.
#[test]
fn failure_during_recovery_open_is_retryable() {
    let shape = WorkloadShape { commits: 40, checkpoint_pct: 0, reopen_pct: 0, big_pct: 20 };
    let mut steps = workload(41, shape);
    steps.insert(15, Step::Checkpoint);
    let fs = FaultStorage::new();
    // Segments large enough that the torn batch below needs no roll, so its fsync is the first.
    let engine =
        Engine::open(dir(), options(&fs, SyncMode::Always, RecoveryMode::TolerateTornTail, 1 << 20, Prealloc::Inline)).expect("open");
    let mut history = History::default();
    for s in &steps {
        assert!(!run_step(&engine, s, &mut history), "torn-tail workloads do not reopen");
    }
    // Tear a big batch at the tail: it is written, its fsync fails, the power cut keeps 512 bytes.
    let big: Vec<Op> = (0..30)
        .map(|i| Op::Upsert {
            collection: "b".into(),
            id: format!("big{i}"),
            vector: vec![0.5; DIM_B as usize].into(),
            metadata: "null".into(),
        })
        .collect();
    fs.fail_at(FaultOp::Sync, 1);
    assert!(engine.commit(&big).is_err());
    drop(engine);
    let torn = fs.crash(CrashKind::TearLastWrite(512));

    // The same, plus a damaged record in the middle of the last segment: skip-corrupt then
    // also checkpoints during open.
    let damaged = torn.crash(CrashKind::DropUnsynced);
    let last = wal_segments(&damaged).pop().expect("a segment");
    let buf = damaged.read(&last).expect("read");
    let first_seq = last.file_name().and_then(|n| n.to_str()).and_then(cairn_core::layout::parse_wal_segment_name).expect("name");
    let third = scan_segment(&buf, first_seq)
        .items
        .iter()
        .filter_map(|i| match i {
            ScanItem::Record { offset, .. } => Some(*offset as usize),
            ScanItem::Corrupt { .. } => None,
        })
        .nth(2)
        .expect("three records after the checkpoint");
    damaged.mutate(&last, |b| b[third + 40] ^= 0x20).expect("flip");

    let cases = [
        (RecoveryMode::TolerateTornTail, &torn, "torn tail"),
        (RecoveryMode::SkipCorrupt, &torn, "torn tail"),
        (RecoveryMode::SkipCorrupt, &damaged, "torn tail and a damaged record"),
    ];
    for (mode, store, what_store) in cases {
        let probe = store.crash(CrashKind::DropUnsynced);
        let base = probe.counts();
        let e = open_with(&probe, mode).expect("fault-free recovery");
        assert!(e.recovery_report().torn_tail.is_some());
        let (writes, syncs) = (probe.counts().0 - base.0, probe.counts().1 - base.1);
        let (want_seq, want) = (e.last_seq(), read_state(&e));
        if std::ptr::eq(store, &torn) {
            assert_eq!(want_seq, history.len());
            assert_model_eq(&want, &history.model_at(history.len()), "fault-free recovery");
        } else {
            assert!(!e.recovery_report().skipped.is_empty());
        }
        drop(e);
        assert!(writes > 0 && syncs > 0);
        for (op, total) in [(FaultOp::Write, writes), (FaultOp::Sync, syncs)] {
            let mut fired = 0;
            // The background indexer decides whether a checkpoint rewrites a graph, so the
            // count may vary by one file; a fault that does not fire must leave a clean open.
            for n in 1..=total {
                let ctx = format!("{mode:?} open of {what_store}, fail {op:?} #{n} of {total}");
                let copy = store.crash(CrashKind::DropUnsynced);
                copy.fail_at(op, n);
                let r = open_with(&copy, mode);
                if !copy.fault_fired() {
                    let e = r.unwrap_or_else(|err| panic!("{ctx}: open failed without a fault: {err}"));
                    assert_model_eq(&read_state(&e), &want, &ctx);
                    continue;
                }
                fired += 1;
                assert!(r.is_err(), "{ctx}: open succeeded although a write or fsync failed");
                drop(r);
                for (what, s) in [("power cut", copy.crash(CrashKind::DropUnsynced)), ("process restart", copy.clone())] {
                    s.clear_faults();
                    let e = open_with(&s, mode).unwrap_or_else(|err| panic!("{ctx}: retry after {what} failed: {err}"));
                    assert_eq!(e.last_seq(), want_seq, "{ctx}: after {what}");
                    assert_model_eq(&read_state(&e), &want, &format!("{ctx}: after {what}"));
                }
            }
            assert!(fired * 2 > total as usize, "{mode:?} {what_store}: only {fired} of {total} faults fired");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Group commit
// ---------------------------------------------------------------------------------------------

#[test]
fn group_commit_shares_fsyncs_and_acknowledges_only_durable_writes() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 60;
    let fs = FaultStorage::new();
    let engine = Engine::open(dir(), options(&fs, SyncMode::Group, RecoveryMode::TolerateTornTail, 64 << 10, Prealloc::Off)).expect("open");
    let base = engine.commit(&[Op::CreateCollection(spec("g", 4, Metric::L2))]).expect("create");
    let (_, syncs_before) = fs.counts();

    type Done = (usize, usize, cairn_core::Result<u64>, Option<FaultStorage>);
    let (tx, rx) = mpsc::channel::<Done>();
    let tx = Mutex::new(tx);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (engine, tx, fs) = (&engine, &tx, &fs);
            s.spawn(move || {
                let tx = tx.lock().map(|g| g.clone()).expect("sender");
                for j in 0..PER_THREAD {
                    let ops = [Op::Upsert {
                        collection: "g".into(),
                        id: format!("t{t}-{j}"),
                        vector: vec![t as f32, j as f32, 0.0, 1.0].into(),
                        metadata: format!("{{\"t\":{t},\"j\":{j}}}").into(),
                    }];
                    let (tx, fs) = (tx.clone(), fs.clone());
                    engine.submit(
                        batch::encode(&ops),
                        Box::new(move |r| {
                            // A power cut at the moment of acknowledgement: the write must be in it.
                            let snapshot = (j % 20 == 7 && r.is_ok()).then(|| fs.crash(CrashKind::DropUnsynced));
                            let _ = tx.send((t, j, r, snapshot));
                        }),
                    );
                }
            });
        }
    });
    drop(tx);
    let results: Vec<Done> = rx.iter().collect();
    assert_eq!(results.len(), THREADS * PER_THREAD, "every submit completes exactly once");

    let mut seqs = Vec::new();
    let mut per_thread: BTreeMap<usize, Vec<(usize, u64)>> = BTreeMap::new();
    let mut snapshots = Vec::new();
    for (t, j, r, snap) in results {
        let seq = r.unwrap_or_else(|e| panic!("thread {t} commit {j} failed: {e}"));
        seqs.push(seq);
        per_thread.entry(t).or_default().push((j, seq));
        if let Some(s) = snap {
            snapshots.push((t, j, seq, s));
        }
    }
    seqs.sort_unstable();
    let want: Vec<u64> = (base + 1..=base + (THREADS * PER_THREAD) as u64).collect();
    assert_eq!(seqs, want, "sequence numbers must be unique and contiguous");
    for (t, mut v) in per_thread {
        v.sort_unstable();
        assert!(v.windows(2).all(|w| w[0].1 < w[1].1), "thread {t}: one submitter's commits keep their order");
    }
    let syncs = fs.counts().1 - syncs_before;
    let commits = (THREADS * PER_THREAD) as u64;
    assert!(syncs < commits, "group commit must share fsyncs: {syncs} fsyncs for {commits} commits");

    for (t, j, seq, snap) in snapshots {
        let e = open_with(&snap, RecoveryMode::AbsoluteConsistency).expect("open snapshot");
        assert!(e.last_seq() >= seq, "t{t}-{j} (seq {seq}) was acknowledged before its fsync");
        assert!(e.get("g", &format!("t{t}-{j}")).expect("get").is_some(), "t{t}-{j} missing after a power cut at its acknowledgement");
    }

    let crashed = fs.crash(CrashKind::DropUnsynced);
    let e = open_with(&crashed, RecoveryMode::AbsoluteConsistency).expect("reopen");
    assert_eq!(e.last_seq(), base + commits);
    assert_eq!(e.count("g").expect("count"), THREADS * PER_THREAD);
    for t in 0..THREADS {
        for j in 0..PER_THREAD {
            let (v, meta) = e.get("g", &format!("t{t}-{j}")).expect("get").expect("present after power cut");
            assert_eq!(v, vec![t as f32, j as f32, 0.0, 1.0]);
            assert_eq!(meta, format!("{{\"t\":{t},\"j\":{j}}}"));
        }
    }
}

/// A failed group fsync fails every commit of the group and all later ones; what survives a
/// crash is a prefix holding every acknowledged commit, never a gap or half a group.
#[test]
fn group_commit_failure_fails_the_group_and_keeps_a_prefix() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 30;
    for n in [1u64, 2, 3, 5, 8, 13] {
        let fs = FaultStorage::new();
        let engine =
            Engine::open(dir(), options(&fs, SyncMode::Group, RecoveryMode::TolerateTornTail, 64 << 10, Prealloc::Off)).expect("open");
        let base = engine.commit(&[Op::CreateCollection(spec("g", 2, Metric::L2))]).expect("create");
        fs.fail_at(FaultOp::Sync, n);
        let (tx, rx) = mpsc::channel::<(String, cairn_core::Result<u64>)>();
        let tx = Mutex::new(tx);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (engine, tx) = (&engine, &tx);
                s.spawn(move || {
                    let tx = tx.lock().map(|g| g.clone()).expect("sender");
                    for j in 0..PER_THREAD {
                        let id = format!("t{t}-{j}");
                        let ops = [Op::Upsert {
                            collection: "g".into(),
                            id: id.clone(),
                            vector: vec![t as f32, j as f32].into(),
                            metadata: "null".into(),
                        }];
                        // Blocking commits keep a few in flight at a time: many small groups.
                        let _ = tx.send((id, engine.commit(&ops)));
                    }
                });
            }
        });
        drop(tx);
        let results: Vec<_> = rx.iter().collect();
        assert_eq!(results.len(), THREADS * PER_THREAD);
        let mut acked: Vec<(u64, String)> = Vec::new();
        for (id, r) in &results {
            match r {
                Ok(seq) => acked.push((*seq, id.clone())),
                Err(e) => assert_eq!(e.code(), "CAIRN_POISONED", "fail sync #{n}: {id}: {e}"),
            }
        }
        assert!(fs.fault_fired() && acked.len() < results.len(), "fail sync #{n}: the fault never hit a commit");
        acked.sort();
        let seqs: Vec<u64> = acked.iter().map(|a| a.0).collect();
        assert_eq!(
            seqs,
            (base + 1..=base + acked.len() as u64).collect::<Vec<_>>(),
            "fail sync #{n}: acknowledged commits precede the failure"
        );
        assert_eq!(engine.count("g").expect("reads work after poisoning"), acked.len());
        drop(engine);
        for (what, storage) in [("power cut", fs.crash(CrashKind::DropUnsynced)), ("process restart", fs.clone())] {
            storage.clear_faults();
            let e = open_with(&storage, RecoveryMode::TolerateTornTail).unwrap_or_else(|err| panic!("fail sync #{n}: {what}: {err}"));
            let l = e.last_seq();
            assert!(l >= base + acked.len() as u64, "fail sync #{n}: {what} lost an acknowledged commit");
            assert_eq!(e.count("g").expect("count") as u64, l - base, "fail sync #{n}: {what}: one row per recovered commit");
            for (_, id) in &acked {
                assert!(e.get("g", id).expect("get").is_some(), "fail sync #{n}: {what}: {id} lost");
            }
            for (id, _) in &results {
                if let Some((v, _)) = e.get("g", id).expect("get") {
                    let (t, j) = id[1..].split_once('-').expect("id");
                    assert_eq!(v, vec![t.parse::<f32>().expect("t"), j.parse::<f32>().expect("j")], "{what}: {id}");
                }
            }
        }
    }
}

/// `always` is the contrast: one fsync per commit, never shared.
#[test]
fn always_mode_syncs_every_commit() {
    let fs = FaultStorage::new();
    let engine = Engine::open(dir(), options(&fs, SyncMode::Always, RecoveryMode::TolerateTornTail, 1 << 20, Prealloc::Off)).expect("open");
    engine.commit(&[Op::CreateCollection(spec("g", 2, Metric::L2))]).expect("create");
    let before = fs.counts().1;
    std::thread::scope(|s| {
        for t in 0..4 {
            let engine = &engine;
            s.spawn(move || {
                for j in 0..25 {
                    let ops = [Op::Upsert {
                        collection: "g".into(),
                        id: format!("{t}-{j}"),
                        vector: vec![1.0, 2.0].into(),
                        metadata: "null".into(),
                    }];
                    engine.commit(&ops).expect("commit");
                }
            });
        }
    });
    assert!(fs.counts().1 - before >= 100, "always mode must fsync each of the 100 commits");
}
