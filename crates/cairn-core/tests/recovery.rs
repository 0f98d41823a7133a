//! Recovery tests: bit flips in every kind of file, a lost tail after a clean close, checkpoint
//! round trips, delta checkpoints and their merge, and the WAL archive as a complete history.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_core::batch::{self, Op};
use cairn_core::datafile::{read_header, DATAFILE_HEADER_LEN, KIND_BASE, KIND_DELTA};
use cairn_core::fault::{CrashKind, FaultStorage};
use cairn_core::layout::{ARCHIVE_DIR, DATA_DIR, WAL_DIR};
use cairn_core::layout::{MANIFEST_COPY_FILE, MANIFEST_FILE};
use cairn_core::manifest;
use cairn_core::storage::{OsStorage, Storage};
use cairn_core::wal::reader::{scan_segment, ScanItem};
use cairn_core::wal::record::SEGMENT_HEADER_LEN;
use cairn_core::wal::recovery::RecoveryReport;
use cairn_core::wal::writer::Prealloc;
use cairn_core::{Engine, Metric, Options, RecoveryMode, SyncMode};
use common::*;

/// Run `steps` in `always` mode and return the storage a power cut leaves (everything
/// acknowledged is in it) together with the history.
fn build(steps: &[Step], segment_bytes: u64) -> (FaultStorage, History) {
    let fs = FaultStorage::new();
    let opts = options(&fs, SyncMode::Always, RecoveryMode::TolerateTornTail, segment_bytes, Prealloc::Off);
    let mut engine = Engine::open(dir(), opts.clone()).expect("open");
    let mut history = History::default();
    for s in steps {
        match s {
            Step::Commit(ops) => history.acknowledge(engine.commit(ops).expect("commit"), ops.clone()),
            Step::Checkpoint => assert_eq!(checkpoint(&engine).expect("checkpoint"), history.len()),
            Step::Reopen => {
                engine.close().expect("close");
                drop(engine);
                engine = Engine::open(dir(), opts.clone()).expect("reopen");
            }
        }
    }
    let crashed = fs.crash(CrashKind::DropUnsynced);
    drop(engine);
    (crashed, history)
}

fn flip(fs: &FaultStorage, path: &Path, pos: usize, bit: u8) {
    fs.mutate(path, |b| b[pos] ^= 1 << bit).expect("file exists");
}

fn copy(fs: &FaultStorage) -> FaultStorage {
    fs.crash(CrashKind::DropUnsynced)
}

/// Open must fail with a corruption error naming `file` at an offset within `window` bytes at
/// or before `pos`, and a refused open must change nothing on disk.
fn expect_corruption(fs: &FaultStorage, mode: RecoveryMode, file: &Path, pos: usize, window: usize, ctx: &str) {
    let before = files(fs);
    let err = match open_with(fs, mode) {
        Ok(e) => panic!("{ctx}: {mode:?} opened a corrupt store (last seq {})", e.last_seq()),
        Err(err) => err,
    };
    assert_eq!(err.code(), "CAIRN_CORRUPTION", "{ctx}: {mode:?}: {err}");
    let (named, offset) = corruption_location(&err);
    assert_eq!(named, file, "{ctx}: {mode:?} names the wrong file: {err}");
    assert!(
        offset as usize <= pos && pos - (offset as usize) < window,
        "{ctx}: {mode:?} offset {offset} is implausible for a flip at {pos}"
    );
    assert!(files(fs) == before, "{ctx}: a refused open modified the store");
}

/// Sequence numbers the report says were lost (ranges without an end run to `last`).
fn skipped_seqs(report: &RecoveryReport, last: u64) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for r in &report.skipped {
        let to = r.to_seq.unwrap_or(last);
        out.extend(r.from_seq..=to);
    }
    out
}

/// Skip-corrupt must open, report what it skipped, and serve exactly the history without the
/// skipped batches (each batch all or nothing). Returns the engine.
fn expect_skipped(fs: &FaultStorage, history: &History, lost: &[u64], ctx: &str) -> Engine {
    let e = open_with(fs, RecoveryMode::SkipCorrupt).unwrap_or_else(|err| panic!("{ctx}: skip-corrupt open failed: {err}"));
    let report = e.recovery_report().clone();
    assert!(!report.skipped.is_empty(), "{ctx}: skip-corrupt skipped something silently");
    let skipped = skipped_seqs(&report, history.len());
    for s in lost {
        assert!(skipped.contains(s), "{ctx}: seq {s} was lost but is not in the report {:?}", report.skipped);
    }
    assert_eq!(e.last_seq(), history.len(), "{ctx}: records after the damage are still applied");
    let (want, unapplied) = history.model_skipping(history.len(), |s| skipped.contains(&s));
    assert!(unapplied.is_empty(), "{ctx}: batches {unapplied:?} could not apply but were not reported");
    assert_state(&e, &want, &format!("{ctx}: skip-corrupt state"));
    e
}

// ---------------------------------------------------------------------------------------------
// Corruption
// ---------------------------------------------------------------------------------------------

#[test]
fn bit_flip_in_sealed_wal_segment_is_corruption() {
    let shape = WorkloadShape { commits: 60, checkpoint_pct: 0, reopen_pct: 0, big_pct: 5 };
    let (fs, history) = build(&workload(51, shape), 4096);
    let segs = wal_segments(&fs);
    assert!(segs.len() >= 4, "the workload must roll several segments");
    let mut rng = Rng::new(52);
    for trial in 0..12 {
        let path = &segs[1 + rng.below(segs.len() as u64 - 2) as usize];
        let len = fs.read(path).expect("read").len();
        // Anywhere but the segment header (a damaged header loses the whole segment; see below).
        let pos = rng.range(SEGMENT_HEADER_LEN as u64, len as u64 - 1) as usize;
        let ctx = format!("trial {trial}: flip in sealed {} at {pos}", path.display());
        let damaged = copy(&fs);
        flip(&damaged, path, pos, rng.below(8) as u8);
        expect_corruption(&damaged, RecoveryMode::TolerateTornTail, path, pos, 16 << 10, &ctx);
        expect_corruption(&damaged, RecoveryMode::AbsoluteConsistency, path, pos, 16 << 10, &ctx);
        let lost = record_seq_at(&fs, path, pos);
        let e = expect_skipped(&damaged, &history, &[lost], &ctx);
        let skipped = skipped_seqs(e.recovery_report(), history.len());
        let corrupt_only: Vec<_> = e.recovery_report().skipped.iter().filter(|r| !r.reason.starts_with("record does not apply")).collect();
        assert_eq!(corrupt_only.len(), 1, "{ctx}: one flipped bit is one damaged record: {corrupt_only:?}");
        assert!(corrupt_only[0].file.ends_with(path.file_name().and_then(|n| n.to_str()).unwrap_or("?")), "{ctx}");
        // Skip-corrupt checkpoints what it serves, so the damage is not met again.
        let served = read_state(&e);
        let after = damaged.crash(CrashKind::DropUnsynced);
        drop(e);
        let e2 = open_with(&after, RecoveryMode::TolerateTornTail).unwrap_or_else(|err| panic!("{ctx}: open after skip-corrupt: {err}"));
        assert_model_eq(&read_state(&e2), &served, &format!("{ctx}: after skip-corrupt and reopen"));
        assert!(!skipped.is_empty());
    }

    // A damaged segment header: tolerate refuses; skip-corrupt skips the whole segment, reports it.
    let path = &segs[1];
    let damaged = copy(&fs);
    flip(&damaged, path, 17, 3);
    expect_corruption(&damaged, RecoveryMode::TolerateTornTail, path, 17, 32, "header flip");
    let first = record_seqs(&fs, path);
    expect_skipped(&damaged, &history, &first, "header flip");
}

/// Sequence numbers of the records in a (healthy) segment.
fn record_seqs(fs: &FaultStorage, path: &Path) -> Vec<u64> {
    let buf = fs.read(path).expect("read");
    let first = segment_first_seq(path);
    scan_segment(&buf, first)
        .items
        .iter()
        .filter_map(|i| match i {
            ScanItem::Record { header, .. } => Some(header.seq),
            ScanItem::Corrupt { .. } => None,
        })
        .collect()
}

/// The sequence number of the record holding byte `pos` of a healthy segment.
fn record_seq_at(fs: &FaultStorage, path: &Path, pos: usize) -> u64 {
    let buf = fs.read(path).expect("read");
    for item in scan_segment(&buf, segment_first_seq(path)).items {
        if let ScanItem::Record { offset, header, len, .. } = item {
            if (offset as usize..offset as usize + len).contains(&pos) {
                return header.seq;
            }
        }
    }
    panic!("no record holds byte {pos} of {}", path.display());
}

fn segment_first_seq(path: &Path) -> u64 {
    path.file_name().and_then(|n| n.to_str()).and_then(cairn_core::layout::parse_wal_segment_name).expect("segment name")
}

#[test]
fn bit_flip_mid_last_segment_is_corruption_not_a_torn_tail() {
    let shape = WorkloadShape { commits: 40, checkpoint_pct: 0, reopen_pct: 0, big_pct: 5 };
    let (fs, history) = build(&workload(61, shape), 1 << 20);
    let segs = wal_segments(&fs);
    assert_eq!(segs.len(), 1, "one large segment holds the whole log");
    let path = &segs[0];
    // Record start offsets follow from the batches: the format is a spec.
    let mut offsets = vec![SEGMENT_HEADER_LEN];
    for ops in &history.commits {
        offsets.push(offsets.last().copied().unwrap_or(0) + wal_record_len(ops));
    }
    assert_eq!(fs.read(path).expect("read").len(), *offsets.last().unwrap_or(&0));
    let mut rng = Rng::new(62);
    for seq in [3u64, 10, 20, 33, 38] {
        let (start, end) = (offsets[seq as usize - 1], offsets[seq as usize]);
        let pos = rng.range(start as u64, end as u64 - 1) as usize;
        let ctx = format!("flip in record {seq} at {pos}");
        let damaged = copy(&fs);
        flip(&damaged, path, pos, rng.below(8) as u8);
        // Valid records follow the damage, so it is not a torn write in any mode.
        expect_corruption(&damaged, RecoveryMode::TolerateTornTail, path, pos, end - start, &ctx);
        expect_corruption(&damaged, RecoveryMode::AbsoluteConsistency, path, pos, end - start, &ctx);
        let e = expect_skipped(&damaged, &history, &[seq], &ctx);
        let first = &e.recovery_report().skipped[0];
        assert_eq!((first.from_seq, first.to_seq, first.offset), (seq, Some(seq), start as u64), "{ctx}: {first:?}");
        assert!(e.recovery_report().torn_tail.is_none(), "{ctx}: damage before valid records is not a torn tail");
    }
}

/// When a skipped batch created a collection, a later batch writing to it and to another
/// collection no longer applies; it must be skipped whole and reported, never half applied.
#[test]
fn skip_corrupt_never_applies_half_a_batch() {
    let up = |c: &str, id: &str, x: f32, dim: u32| Op::Upsert {
        collection: c.into(),
        id: id.into(),
        vector: vec![x; dim as usize].into(),
        metadata: "null".into(),
    };
    let steps = vec![
        Step::Commit(vec![Op::CreateCollection(spec("a", DIM_A, Metric::L2))]),
        Step::Commit(vec![up("a", "a1", 1.0, DIM_A)]),
        Step::Commit(vec![Op::CreateCollection(spec("c", DIM_C, Metric::Cosine))]),
        Step::Commit(vec![up("a", "a2", 2.0, DIM_A), up("c", "c1", 3.0, DIM_C)]),
        Step::Commit(vec![up("a", "a3", 4.0, DIM_A)]),
    ];
    let (fs, history) = build(&steps, 1 << 20);
    let path = &wal_segments(&fs)[0];
    let third = SEGMENT_HEADER_LEN + wal_record_len(&history.commits[0]) + wal_record_len(&history.commits[1]);
    let damaged = copy(&fs);
    flip(&damaged, path, third + 30, 2);
    let e = expect_skipped(&damaged, &history, &[3, 4], "create of 'c' skipped");
    assert_eq!(e.get("a", "a2").expect("get"), None, "half of batch 4 was applied");
    assert!(e.get("a", "a3").expect("get").is_some());
}

#[test]
fn bit_flip_in_checkpoint_segment_file() {
    let shape = WorkloadShape { commits: 50, checkpoint_pct: 0, reopen_pct: 0, big_pct: 10 };
    let mut steps = workload(71, shape);
    // A checkpoint, then one small change: the next checkpoint of "a" would be a delta and "b"
    // would get no new file, so nothing rewrites the damaged base unless recovery does.
    steps.push(Step::Checkpoint);
    steps.push(Step::Commit(vec![Op::Upsert {
        collection: "a".into(),
        id: "late".into(),
        vector: vec![0.25; DIM_A as usize].into(),
        metadata: "null".into(),
    }]));
    let (fs, history) = build(&steps, 1 << 20);
    let want = history.model_at(history.len());
    let data: Vec<PathBuf> =
        list(&fs, DATA_DIR).into_iter().filter(|n| n.ends_with(".seg")).map(|n| dir().join(DATA_DIR).join(n)).collect();
    assert!(data.len() >= 2, "a base file per collection: {data:?}");
    let mut rng = Rng::new(72);
    let (mut repaired, mut refused) = (0, 0);
    for (i, path) in data.iter().enumerate() {
        let len = fs.read(path).expect("read").len();
        for trial in 0..8 {
            // Inside the records: between the 64-byte header and the 32-byte footer.
            let pos = rng.range(DATAFILE_HEADER_LEN as u64, len as u64 - 33) as usize;
            let ctx = format!("file {i} trial {trial}: flip in {} at {pos}", path.display());
            let damaged = copy(&fs);
            flip(&damaged, path, pos, rng.below(8) as u8);
            expect_corruption(&damaged, RecoveryMode::AbsoluteConsistency, path, pos, 4096, &ctx);
            let name = path.file_name().and_then(|n| n.to_str()).expect("file name");
            match open_with(&copy(&damaged), RecoveryMode::TolerateTornTail) {
                // The record's identity held: it is rebuilt from the write in the WAL archive.
                Ok(e) => {
                    repaired += 1;
                    let r = e.recovery_report().clone();
                    assert!(!r.repaired_records.is_empty(), "{ctx}: opened without repairing or reporting");
                    assert!(
                        r.repaired_records.iter().all(|x| x.file.ends_with(name) && x.offset as usize <= pos),
                        "{ctx}: {:?}",
                        r.repaired_records
                    );
                    assert!(r.unreadable_records.is_empty() && r.bad_segment_records.is_empty(), "{ctx}: {r:?}");
                    assert_state(&e, &want, &ctx);
                    drop(e);
                }
                // The identity is damaged too: nothing can say which row it was, so open refuses.
                Err(_) => {
                    refused += 1;
                    expect_corruption(&damaged, RecoveryMode::TolerateTornTail, path, pos, 4096, &ctx);
                }
            }

            let e = open_with(&damaged, RecoveryMode::SkipCorrupt).unwrap_or_else(|err| panic!("{ctx}: skip-corrupt open: {err}"));
            let r = e.recovery_report().clone();
            let dropped = r.bad_segment_records.clone();
            assert!(!dropped.is_empty() || !r.repaired_records.is_empty(), "{ctx}: a damaged checkpoint record was skipped silently");
            assert!(dropped.iter().all(|b| Path::new(&b.file) == path && (b.offset as usize) <= pos), "{ctx}: {dropped:?}");
            // Every value served is the model's; only rows of a dropped record may be missing.
            let got = read_state(&e);
            let mut missing = 0;
            for (name, w) in &want {
                let g = got.get(name).unwrap_or_else(|| panic!("{ctx}: collection {name} lost"));
                for (id, row) in &g.rows {
                    assert_eq!(Some(row), w.rows.get(id), "{ctx}: '{name}/{id}' served a wrong value");
                }
                missing += w.rows.len() - g.rows.len();
            }
            assert!(missing <= dropped.len(), "{ctx}: {missing} rows missing for {} dropped records", dropped.len());
            assert_eq!(got.len(), want.len(), "{ctx}");
            // The open rewrote what it serves as a new base: the damage is not met again, even
            // by the strictest mode.
            let after = damaged.crash(CrashKind::DropUnsynced);
            drop(e);
            let e2 =
                open_with(&after, RecoveryMode::AbsoluteConsistency).unwrap_or_else(|err| panic!("{ctx}: open after skip-corrupt: {err}"));
            assert_model_eq(&read_state(&e2), &got, &format!("{ctx}: reopen after skip-corrupt"));
        }
    }
    // Vectors are most of a record's bytes, so most flips leave the identity intact.
    assert!(repaired > refused, "repaired {repaired}, refused {refused}");
}

/// Damage to a record's vector when the WAL no longer holds the write: the record is known by
/// its identity checksum, so it is reported and unreadable (never served, never silently
/// absent) until it is written or deleted again, across reopens and checkpoints.
#[test]
fn unrepairable_checkpoint_record_is_unreadable_until_rewritten() {
    let fs = FaultStorage::new();
    let e = open_with(&fs, RecoveryMode::TolerateTornTail).expect("open");
    let mut history = History::default();
    let mut rng = Rng::new(91);
    let commit = |e: &Engine, ops: Vec<Op>, h: &mut History| h.acknowledge(e.commit(&ops).expect("commit"), ops);
    commit(&e, vec![Op::CreateCollection(spec("a", DIM_A, Metric::L2))], &mut history);
    for i in 0..40 {
        let ops = vec![Op::Upsert {
            collection: "a".into(),
            id: format!("r{i:02}"),
            vector: rng.vector(DIM_A).into(),
            metadata: format!("{{\"i\":{i}}}").into(),
        }];
        commit(&e, ops, &mut history);
    }
    checkpoint(&e).expect("checkpoint");
    e.close().expect("close");
    drop(e);
    // Retention took the WAL that wrote these rows.
    for name in list(&fs, ARCHIVE_DIR) {
        fs.remove(&dir().join(ARCHIVE_DIR).join(name)).expect("remove archived segment");
    }
    let seg = list(&fs, DATA_DIR).into_iter().find(|n| n.ends_with(".seg")).expect("a base file");
    let seg_path = dir().join(DATA_DIR).join(&seg);
    let records = segment_records(&fs.read(&seg_path).expect("read"));
    let victims: Vec<(usize, String)> = [7usize, 23].iter().map(|&i| (records[i].0 + 32 + 5, records[i].2.clone())).collect();
    for (pos, _) in &victims {
        flip(&fs, &seg_path, *pos, 3);
    }
    let unreadable: BTreeSet<String> = victims.iter().map(|(_, id)| id.clone()).collect();
    let mut want = history.model_at(history.len());
    want.get_mut("a").expect("a").rows.retain(|id, _| !unreadable.contains(id));

    let check = |e: &Engine, ctx: &str| {
        let reported: BTreeSet<String> = e.recovery_report().unreadable_records.iter().map(|u| u.id.clone()).collect();
        assert_eq!(reported, unreadable, "{ctx}: recovery report");
        assert_eq!(e.count("a").expect("count"), 40, "{ctx}: unreadable records still exist");
        for id in &unreadable {
            let err = e.get("a", id).expect_err("a damaged record must not be served");
            assert_eq!(err.code(), "CAIRN_CORRUPTION", "{ctx}: {err}");
            assert!(err.to_string().contains(&format!("'{id}'")), "{ctx}: the error names the record: {err}");
        }
        assert_state(e, &want, ctx);
        let q = vec![0.0; DIM_A as usize];
        for out in [e.query_exact("a", &q, 5, None).expect("exact"), e.query("a", &q, 5, 32, None).expect("query")] {
            assert_eq!(out.hits.len(), 5, "{ctx}: the query still answers");
            let skipped: BTreeSet<String> = out.skipped.iter().map(|s| s.id.clone()).collect();
            assert_eq!(skipped, unreadable, "{ctx}: the query reports what it could not consider");
        }
    };
    let e = open_with(&fs, RecoveryMode::TolerateTornTail).expect("open with two damaged records");
    check(&e, "first open");
    let crashed = fs.crash(CrashKind::DropUnsynced);
    drop(e);
    // The damaged file is no longer named; the markers live in the manifest.
    let e = open_with(&crashed, RecoveryMode::AbsoluteConsistency).expect("reopen");
    check(&e, "reopen");
    // Writing or deleting the record ends it being unreadable.
    let (fixed, gone) = (victims[0].1.clone(), victims[1].1.clone());
    let v = vec![0.5; DIM_A as usize];
    e.commit(&[Op::Upsert { collection: "a".into(), id: fixed.clone(), vector: v.clone().into(), metadata: "null".into() }])
        .expect("rewrite");
    e.commit(&[Op::Delete { collection: "a".into(), id: gone.clone() }]).expect("delete");
    want.get_mut("a").expect("a").rows.insert(fixed.clone(), (v, "null".into()));
    assert_state(&e, &want, "after rewrite");
    assert_eq!(e.count("a").expect("count"), 39);
    checkpoint(&e).expect("checkpoint");
    e.close().expect("close");
    drop(e);
    let e = open_with(&crashed, RecoveryMode::AbsoluteConsistency).expect("reopen after rewrite");
    assert!(e.recovery_report().unreadable_records.is_empty(), "{:?}", e.recovery_report().unreadable_records);
    assert_state(&e, &want, "reopen after rewrite");
    assert_eq!(e.count("a").expect("count"), 39);
}

/// A collection's checkpoint files are named by its id, the sequence number of its create; two
/// creates in one batch would share that id and overwrite each other's files at a checkpoint.
#[test]
fn one_batch_creates_at_most_one_collection() {
    let fs = FaultStorage::new();
    let e = open_with(&fs, RecoveryMode::TolerateTornTail).expect("open");
    let both = [Op::CreateCollection(spec("x", 2, Metric::L2)), Op::CreateCollection(spec("y", 3, Metric::L2))];
    let err = e.commit(&both).expect_err("two creates in one batch must be refused");
    assert_eq!(err.code(), "CAIRN_INVALID_ARGUMENT");
    assert!(err.to_string().contains("ops[1]"), "the message names the operation: {err}");
    assert_eq!((e.last_seq(), e.collections().expect("collections").len()), (0, 0), "nothing was written");
    assert!(e.poisoned().is_none(), "bad input does not poison the store");
    // Separately they work, and a checkpoint keeps their files apart.
    let up = |c: &str, n: usize| Op::Upsert { collection: c.into(), id: "r".into(), vector: vec![1.0; n].into(), metadata: "null".into() };
    e.commit(&both[..1]).expect("create x");
    e.commit(&both[1..]).expect("create y");
    e.commit(&[up("x", 2), up("y", 3)]).expect("upsert");
    checkpoint(&e).expect("checkpoint");
    let again = fs.crash(CrashKind::DropUnsynced);
    drop(e);
    let e = open_with(&again, RecoveryMode::AbsoluteConsistency).expect("reopen");
    assert_eq!(e.get("x", "r").expect("get"), Some((vec![1.0; 2], "null".into())));
    assert_eq!(e.get("y", "r").expect("get"), Some((vec![1.0; 3], "null".into())));
}

/// A damaged persisted graph is not data: open rebuilds it from the vectors, says so in the
/// report, and every answer stays the model's.
#[test]
fn bit_flip_in_persisted_index_means_rebuild_not_wrong_answers() {
    let shape = WorkloadShape { commits: 60, checkpoint_pct: 0, reopen_pct: 0, big_pct: 10 };
    let mut steps = workload(75, shape);
    steps.push(Step::Checkpoint);
    let (fs, history) = build(&steps, 1 << 20);
    let want = history.model_at(history.len());
    let graphs: Vec<PathBuf> =
        list(&fs, DATA_DIR).into_iter().filter(|n| n.ends_with(".hnsw")).map(|n| dir().join(DATA_DIR).join(n)).collect();
    assert!(!graphs.is_empty(), "the checkpoint persists the graphs");
    let mut rng = Rng::new(76);
    for path in &graphs {
        let len = fs.read(path).expect("read").len();
        for trial in 0..3 {
            let pos = rng.below(len as u64) as usize;
            let ctx = format!("trial {trial}: flip in {} at {pos}", path.display());
            let damaged = copy(&fs);
            flip(&damaged, path, pos, rng.below(8) as u8);
            for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::AbsoluteConsistency, RecoveryMode::SkipCorrupt] {
                let e = open_with(&copy(&damaged), mode).unwrap_or_else(|err| panic!("{ctx}: {mode:?}: {err}"));
                assert!(!e.recovery_report().index_rebuilds.is_empty(), "{ctx}: {mode:?}: the rebuild is not reported");
                assert_state(&e, &want, &format!("{ctx}: {mode:?}"));
                for info in e.collections().expect("collections") {
                    let q = vec![0.5; info.dim as usize];
                    let k = info.count.clamp(1, 10);
                    let exact = e.query_exact(&info.name, &q, k, None).expect("exact").hits;
                    let approx = e.query(&info.name, &q, k, 64, None).expect("query").hits;
                    assert_eq!(approx, exact, "{ctx}: {mode:?}: '{}' answers differ from the exact scan", info.name);
                }
            }
        }
    }
}

#[test]
fn bit_flip_in_manifest_is_recovered_from_its_copy_and_refused_when_both_are_damaged() {
    let shape = WorkloadShape { commits: 30, checkpoint_pct: 0, reopen_pct: 0, big_pct: 0 };
    let mut steps = workload(81, shape);
    steps.insert(20, Step::Checkpoint);
    let (fs, history) = build(&steps, 1 << 20);
    let want = history.model_at(history.len());
    let path = dir().join(MANIFEST_FILE);
    let copy_path = dir().join(MANIFEST_COPY_FILE);
    assert_eq!(fs.read(&path).expect("read"), fs.read(&copy_path).expect("read copy"), "the copy is identical");
    let len = fs.read(&path).expect("read").len();
    let mut rng = Rng::new(82);
    for trial in 0..16 {
        let pos = rng.below(len as u64) as usize;
        let ctx = format!("trial {trial}: flip in MANIFEST at {pos}");
        let damaged = copy(&fs);
        flip(&damaged, &path, pos, rng.below(8) as u8);
        // absolute-consistency refuses any damage and leaves the store untouched.
        expect_corruption(&damaged, RecoveryMode::AbsoluteConsistency, &path, len, len + 1, &ctx);
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::SkipCorrupt] {
            let store = copy(&damaged);
            let e = open_with(&store, mode).unwrap_or_else(|err| panic!("{ctx}: {mode:?} did not use the copy: {err}"));
            assert!(e.recovery_report().manifest_restored.is_some(), "{ctx}: not reported");
            assert_state(&e, &want, &ctx);
            // Both files were rewritten: the strictest mode opens after a power cut.
            let after = store.crash(CrashKind::DropUnsynced);
            drop(e);
            let e2 = open_with(&after, RecoveryMode::AbsoluteConsistency).unwrap_or_else(|err| panic!("{ctx}: after repair: {err}"));
            assert_state(&e2, &want, &ctx);
        }
        // With the copy damaged too, nothing names the files: every mode refuses.
        let pos2 = rng.below(len as u64) as usize;
        flip(&damaged, &copy_path, pos2, rng.below(8) as u8);
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::AbsoluteConsistency, RecoveryMode::SkipCorrupt] {
            expect_corruption(&damaged, mode, &path, len, len + 1, &ctx);
        }
    }
    // A missing manifest beside data is corruption too, never a fresh empty store.
    let damaged = copy(&fs);
    damaged.remove(&path).expect("remove");
    damaged.remove(&copy_path).expect("remove copy");
    let err = open_with(&damaged, RecoveryMode::SkipCorrupt).err().expect("a store without its MANIFEST must not open");
    assert_eq!(err.code(), "CAIRN_CORRUPTION");
}

// ---------------------------------------------------------------------------------------------
// Clean close
// ---------------------------------------------------------------------------------------------

#[test]
fn clean_close_then_lost_tail_is_corruption() {
    let shape = WorkloadShape { commits: 25, checkpoint_pct: 0, reopen_pct: 0, big_pct: 10 };
    let steps = workload(91, shape);
    let fs = FaultStorage::new();
    let engine = Engine::open(dir(), options(&fs, SyncMode::None, RecoveryMode::TolerateTornTail, 1 << 20, Prealloc::Off)).expect("open");
    let mut history = History::default();
    for s in &steps {
        if let Step::Commit(ops) = s {
            history.acknowledge(engine.commit(ops).expect("commit"), ops.clone());
        }
    }
    engine.close().expect("clean close");
    drop(engine);
    // A clean close makes even `none`-mode writes durable.
    let closed = fs.crash(CrashKind::DropUnsynced);
    let e = open_with(&copy(&closed), RecoveryMode::AbsoluteConsistency).expect("open after clean close");
    assert_eq!(e.last_seq(), history.len());
    assert_state(&e, &history.model_at(history.len()), "after clean close");
    drop(e);

    let path = wal_segments(&closed).pop().expect("a segment");
    let last = wal_record_len(history.commits.last().expect("commits"));
    for cut in [last, last / 2, 8] {
        let ctx = format!("cut {cut} of the last record's {last} bytes");
        let damaged = copy(&closed);
        damaged.mutate(&path, |b| b.truncate(b.len() - cut)).expect("truncate");
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::AbsoluteConsistency] {
            let before = files(&damaged);
            let err = open_with(&damaged, mode)
                .err()
                .unwrap_or_else(|| panic!("{ctx}: {mode:?} took a lost tail after a clean close for a torn write"));
            assert_eq!(err.code(), "CAIRN_CORRUPTION", "{ctx}: {err}");
            assert_eq!(corruption_location(&err).0, path, "{ctx}");
            assert!(files(&damaged) == before, "{ctx}: a refused open modified the store");
        }
        let e = open_with(&damaged, RecoveryMode::SkipCorrupt).unwrap_or_else(|err| panic!("{ctx}: skip-corrupt: {err}"));
        let n = history.len();
        assert!(e.recovery_report().skipped.iter().any(|r| r.from_seq == n && r.to_seq == Some(n)), "{ctx}: {:?}", e.recovery_report());
        assert_eq!(e.last_seq(), n - 1);
        assert_state(&e, &history.model_at(n - 1), &ctx);
    }
}

/// Opening clears the clean-close mark: a crash after that reopen is an ordinary crash, and its
/// torn tail is tolerated.
#[test]
fn clean_close_mark_is_cleared_on_open() {
    let fs = FaultStorage::new();
    let opts = options(&fs, SyncMode::Always, RecoveryMode::TolerateTornTail, 1 << 20, Prealloc::Off);
    let e = Engine::open(dir(), opts.clone()).expect("open");
    e.commit(&[Op::CreateCollection(spec("b", DIM_B, Metric::Ip))]).expect("create");
    e.close().expect("close");
    drop(e);
    let e = Engine::open(dir(), opts).expect("reopen");
    fs.fail_at(cairn_core::fault::FaultOp::Sync, 1);
    let big: Vec<Op> = (0..30)
        .map(|i| Op::Upsert {
            collection: "b".into(),
            id: format!("r{i}"),
            vector: vec![1.0; DIM_B as usize].into(),
            metadata: "null".into(),
        })
        .collect();
    assert!(e.commit(&big).is_err());
    let torn = fs.crash(CrashKind::TearLastWrite(4096));
    drop(e);
    let e = open_with(&torn, RecoveryMode::TolerateTornTail).expect("a crash after reopen is not a lost tail after a clean close");
    assert!(e.recovery_report().torn_tail.is_some());
    assert_eq!(e.last_seq(), 1);
    assert_eq!(e.count("b").expect("count"), 0);
}

// ---------------------------------------------------------------------------------------------
// Checkpoints and the WAL archive
// ---------------------------------------------------------------------------------------------

#[test]
fn reopen_after_checkpoint_round_trips() {
    let shape = WorkloadShape { commits: 150, checkpoint_pct: 8, reopen_pct: 4, big_pct: 5 };
    let steps = workload(101, shape);
    let fs = FaultStorage::new();
    let opts = options(&fs, SyncMode::Group, RecoveryMode::TolerateTornTail, 8192, Prealloc::Inline);
    let mut engine = Engine::open(dir(), opts.clone()).expect("open");
    let mut history = History::default();
    let mut checkpoint_seq = 0;
    let mut checkpoints = 0;
    for (i, s) in steps.iter().enumerate() {
        match s {
            Step::Commit(ops) => history.acknowledge(engine.commit(ops).expect("commit"), ops.clone()),
            Step::Checkpoint => {
                checkpoint_seq = checkpoint(&engine).expect("checkpoint");
                checkpoints += 1;
            }
            Step::Reopen => {
                engine.close().expect("close");
                drop(engine);
                engine = Engine::open(dir(), opts.clone()).expect("reopen");
                let r = engine.recovery_report();
                assert_eq!((r.checkpoint_seq, r.replayed_records), (checkpoint_seq, history.len() - checkpoint_seq), "step {i}: {r:?}");
            }
        }
        if matches!(s, Step::Checkpoint) || i % 10 == 0 {
            let e = open_with(&fs.crash(CrashKind::DropUnsynced), RecoveryMode::AbsoluteConsistency).expect("open a power-cut copy");
            let r = e.recovery_report();
            assert_eq!(r.checkpoint_seq, checkpoint_seq, "step {i}");
            assert_eq!(r.replayed_records, history.len() - checkpoint_seq, "step {i}: only the WAL after the checkpoint is replayed");
            assert_state(&e, &history.model_at(history.len()), &format!("step {i}"));
        }
    }
    assert!(checkpoints >= 5);
}

/// The same round trip on the real file system, with background preallocation.
#[test]
fn reopen_after_checkpoint_round_trips_on_disk() {
    let root = std::env::temp_dir().join(format!("cairn-recovery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let opts = Options {
        sync: SyncMode::Group,
        recovery: RecoveryMode::TolerateTornTail,
        segment_bytes: 64 << 10,
        prealloc: Prealloc::Background,
        storage: Arc::new(OsStorage),
        ..Options::default()
    };
    let shape = WorkloadShape { commits: 120, checkpoint_pct: 6, reopen_pct: 3, big_pct: 8 };
    let mut history = History::default();
    let mut engine = Engine::open(&root, opts.clone()).expect("open on disk");
    assert_eq!(code(&Engine::open(&root, opts.clone())), "CAIRN_LOCKED", "a second writer is refused");
    for s in workload(111, shape) {
        if run_step(&engine, &s, &mut history) {
            engine.close().expect("close");
            drop(engine);
            engine = Engine::open(&root, opts.clone()).expect("reopen");
            assert_state(&engine, &history.model_at(history.len()), "on-disk reopen");
        }
    }
    checkpoint(&engine).expect("checkpoint");
    engine.close().expect("close");
    drop(engine);
    let engine = Engine::open(&root, opts).expect("final reopen");
    assert_eq!(engine.last_seq(), history.len());
    assert_state(&engine, &history.model_at(history.len()), "on-disk final");
    drop(engine);
    let _ = std::fs::remove_dir_all(&root);
}

fn manifest_segments(fs: &FaultStorage, name: &str) -> Vec<cairn_core::state::FileRef> {
    let m = manifest::load(fs, dir()).expect("manifest").expect("present");
    m.collections.into_iter().find(|c| c.name == name).map(|c| c.data_files).unwrap_or_default()
}

/// Every file the manifest names in data/: checkpoint segments and persisted graphs.
fn manifest_files(fs: &FaultStorage) -> BTreeSet<String> {
    let m = manifest::load(fs, dir()).expect("manifest").expect("present");
    m.collections.into_iter().flat_map(|c| c.data_files.into_iter().chain(c.index)).map(|s| s.file).collect()
}

#[test]
fn delta_checkpoints_then_merge_into_a_base() {
    let fs = FaultStorage::new();
    let engine = Engine::open(dir(), options(&fs, SyncMode::Always, RecoveryMode::TolerateTornTail, 1 << 20, Prealloc::Off)).expect("open");
    let mut history = History::default();
    let mut rng = Rng::new(121);
    let commit = |ops: Vec<Op>, h: &mut History| {
        let seq = engine.commit(&ops).expect("commit");
        h.acknowledge(seq, ops);
    };
    commit(vec![Op::CreateCollection(spec("a", DIM_A, Metric::L2))], &mut history);
    commit(vec![Op::CreateCollection(spec("b", DIM_B, Metric::Ip))], &mut history);
    let rows = |c: &str, n: usize, dim: u32, rng: &mut Rng| -> Vec<Op> {
        (0..n)
            .map(|i| Op::Upsert {
                collection: c.into(),
                id: format!("{c}{i}"),
                vector: rng.vector(dim).into(),
                metadata: format!("{{\"i\":{i}}}").into(),
            })
            .collect()
    };
    commit(rows("a", 50, DIM_A, &mut rng), &mut history);
    commit(rows("b", 20, DIM_B, &mut rng), &mut history);
    checkpoint(&engine).expect("base checkpoint");
    assert_eq!(manifest_segments(&fs, "a").len(), 1);
    let b_files = manifest_segments(&fs, "b");

    let mut lens = Vec::new();
    for round in 0..12 {
        // A small change: one new value and one delete.
        let upd = Op::Upsert {
            collection: "a".into(),
            id: format!("a{}", round * 3),
            vector: rng.vector(DIM_A).into(),
            metadata: format!("{{\"round\":{round}}}").into(),
        };
        commit(vec![upd, Op::Delete { collection: "a".into(), id: format!("a{}", round * 3 + 1) }], &mut history);
        let seq = checkpoint(&engine).expect("checkpoint");
        let segs = manifest_segments(&fs, "a");
        lens.push(segs.len());
        let newest = segs.last().expect("a file");
        assert_eq!(newest.covered_seq, seq);
        let bytes = fs.read(&dir().join(DATA_DIR).join(&newest.file)).expect("read");
        let header = read_header(&bytes, Path::new(&newest.file)).expect("header");
        if segs.len() == 1 {
            assert_eq!(header.kind, KIND_BASE, "round {round}: a lone file is a base");
            assert_eq!(newest.records as usize, history.model_at(seq)["a"].rows.len());
        } else {
            assert_eq!(header.kind, KIND_DELTA, "round {round}: a small change is a delta");
            assert_eq!(newest.records, 2, "round {round}: a delta holds only the changed ids");
        }
        // Untouched collections get no new file; superseded files are removed.
        assert_eq!(manifest_segments(&fs, "b"), b_files);
        assert_eq!(
            list(&fs, DATA_DIR).into_iter().collect::<BTreeSet<_>>(),
            manifest_files(&fs),
            "round {round}: data/ holds exactly the live files"
        );
        let e = open_with(&fs.crash(CrashKind::DropUnsynced), RecoveryMode::AbsoluteConsistency).expect("reopen");
        assert_eq!(e.recovery_report().replayed_records, 0);
        assert_state(&e, &history.model_at(history.len()), &format!("round {round}"));
    }
    // A base plus up to seven deltas, then the next checkpoint merges them into one base.
    assert_eq!(lens, vec![2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5], "files per collection after each checkpoint");
}

#[test]
fn wal_segments_are_archived_never_deleted() {
    let shape = WorkloadShape { commits: 200, checkpoint_pct: 6, reopen_pct: 3, big_pct: 6 };
    let steps = workload(131, shape);
    let fs = FaultStorage::new();
    let opts = options(&fs, SyncMode::Always, RecoveryMode::TolerateTornTail, 4096, Prealloc::Inline);
    let mut engine = Engine::open(dir(), opts.clone()).expect("open");
    let mut history = History::default();
    let mut archived: BTreeSet<String> = BTreeSet::new();
    let mut in_wal: BTreeSet<String> = BTreeSet::new();
    for (i, s) in steps.iter().enumerate() {
        if run_step(&engine, s, &mut history) {
            engine.close().expect("close");
            drop(engine);
            engine = Engine::open(dir(), opts.clone()).expect("reopen");
        }
        let now_archive: BTreeSet<String> = list(&fs, ARCHIVE_DIR).into_iter().collect();
        let now_wal: BTreeSet<String> = list(&fs, WAL_DIR).into_iter().filter(|n| n.ends_with(".wal")).collect();
        assert!(now_archive.is_superset(&archived), "step {i}: a segment left the archive");
        for name in &in_wal {
            assert!(now_wal.contains(name) || now_archive.contains(name), "step {i}: segment {name} was deleted");
        }
        assert!(now_wal.is_disjoint(&now_archive), "step {i}: a segment is both live and archived");
        if matches!(s, Step::Checkpoint) {
            // Everything before the active segment is covered by the checkpoint and archived.
            assert_eq!(now_wal.len(), 1, "step {i}: after a checkpoint only the active segment stays: {now_wal:?}");
        }
        archived = now_archive;
        in_wal = now_wal;
    }
    drop(engine);
    assert!(archived.len() >= 10, "the workload must archive many segments");

    // The archive plus the live WAL is the complete history, each batch exactly once, in order:
    // what point-in-time recovery and replicas read.
    let mut seen: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for (sub, names) in [(ARCHIVE_DIR, &archived), (WAL_DIR, &in_wal)] {
        for name in names {
            let path = dir().join(sub).join(name);
            let buf = fs.read(&path).expect("read");
            let scan = scan_segment(&buf, segment_first_seq(&path));
            assert!(scan.invalid_tail.is_none(), "{name}: invalid tail");
            for item in scan.items {
                match item {
                    ScanItem::Record { header, payload_start, .. } => {
                        let payload = buf[payload_start..payload_start + header.payload_len].to_vec();
                        assert!(seen.insert(header.seq, payload).is_none(), "seq {} appears twice", header.seq);
                    }
                    ScanItem::Corrupt { offset, reason } => panic!("{name} corrupt at {offset}: {reason}"),
                }
            }
        }
    }
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), (1..=history.len()).collect::<Vec<_>>());
    for (seq, payload) in seen {
        assert_eq!(payload, batch::encode(&history.commits[seq as usize - 1]), "seq {seq}: archived batch differs");
    }
}

/// A checkpoint running on another thread when `close` is called must either finish before the
/// close records the clean shutdown or be refused: nothing may write to the store after close
/// returns (the lock is released, another process may own the directory by then).
#[test]
fn close_waits_for_a_running_checkpoint() {
    for attempt in 0..10u64 {
        let fs = FaultStorage::new();
        let engine = open_with(&fs, RecoveryMode::TolerateTornTail).expect("open");
        let mut history = History::default();
        let mut rng = Rng::new(140 + attempt);
        history.acknowledge(
            engine.commit(&[Op::CreateCollection(spec("b", DIM_B, Metric::Ip))]).expect("create"),
            vec![Op::CreateCollection(spec("b", DIM_B, Metric::Ip))],
        );
        for chunk in 0..20 {
            let ops: Vec<Op> = (0..50)
                .map(|i| Op::Upsert {
                    collection: "b".into(),
                    id: format!("r{chunk}-{i}"),
                    vector: rng.vector(DIM_B).into(),
                    metadata: "null".into(),
                })
                .collect();
            history.acknowledge(engine.commit(&ops).expect("commit"), ops);
        }
        let after_close = std::sync::Mutex::new(None);
        std::thread::scope(|s| {
            let (engine, fs, after_close) = (&engine, &fs, &after_close);
            s.spawn(move || {
                for _ in 0..50 {
                    let up = [Op::Upsert {
                        collection: "b".into(),
                        id: "hot".into(),
                        vector: vec![1.0; DIM_B as usize].into(),
                        metadata: "null".into(),
                    }];
                    if engine.commit(&up).is_err() || engine.checkpoint().is_err() {
                        break;
                    }
                }
            });
            s.spawn(move || {
                std::thread::sleep(std::time::Duration::from_micros(200 * attempt));
                engine.close().expect("close");
                *after_close.lock().expect("lock") = Some((fs.counts(), files(fs)));
            });
        });
        let (counts, snapshot) = after_close.lock().expect("lock").take().expect("closed");
        assert_eq!(fs.counts(), counts, "attempt {attempt}: the store was written after close returned");
        assert!(files(&fs) == snapshot, "attempt {attempt}: files changed after close returned");
        drop(engine);
        let m = manifest::load(&fs, dir()).expect("manifest").expect("present");
        assert!(m.clean_shutdown_seq.is_some(), "attempt {attempt}: the clean close mark was overwritten");
        let e = open_with(&fs, RecoveryMode::AbsoluteConsistency).expect("reopen after close");
        assert_eq!(Some(e.last_seq()), m.clean_shutdown_seq);
    }
}
