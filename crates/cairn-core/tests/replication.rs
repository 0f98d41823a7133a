//! Replication's engine side: a primary ships `WalChunk`s with `read_wal`, a replica applies
//! them with `apply_replicated`/`submit_replicated`. Each test checks the replica against the
//! primary and the reference model in `common`: same rows, same last sequence number, and WAL
//! records that are byte for byte the primary's.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_core::batch::{self, Op};
use cairn_core::fault::{CrashKind, FaultStorage};
use cairn_core::layout::{parse_wal_segment_name, ARCHIVE_DIR, WAL_DIR};
use cairn_core::storage::Storage;
use cairn_core::wal::reader::{scan_segment, ScanItem};
use cairn_core::wal::record::{decode_record, encode_record, Decoded, RECORD_TYPE_BATCH};
use cairn_core::wal::writer::Prealloc;
use cairn_core::{Engine, Error, Metric, Options, RecoveryMode, SyncMode, WalChunk};
use common::*;

fn opts(fs: &FaultStorage, sync: SyncMode, segment_bytes: u64, replica: bool) -> Options {
    Options { replica, ..options(fs, sync, RecoveryMode::AbsoluteConsistency, segment_bytes, Prealloc::Off) }
}

fn open_primary(fs: &FaultStorage, segment_bytes: u64) -> Engine {
    Engine::open(dir(), opts(fs, SyncMode::Group, segment_bytes, false)).expect("open primary")
}

fn open_replica(fs: &FaultStorage, sync: SyncMode, segment_bytes: u64) -> Engine {
    Engine::open(dir(), opts(fs, sync, segment_bytes, true)).expect("open replica")
}

/// Sequence numbers of a chunk's records, decoding it independently of the engine.
fn chunk_seqs(bytes: &[u8]) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        match decode_record(&bytes[pos..]) {
            Decoded::Record { header, len, .. } => {
                seqs.push(header.seq);
                pos += len;
            }
            _ => panic!("chunk holds an invalid record at byte {pos}"),
        }
    }
    seqs
}

/// Check a chunk's shape: consecutive records from `from`, within `max_bytes` unless it is one.
fn check_chunk(chunk: &WalChunk, from: u64, max_bytes: usize, ctx: &str) {
    let seqs = chunk_seqs(&chunk.bytes);
    assert_eq!(chunk.count, seqs.len() as u64, "{ctx}: count");
    assert_eq!(chunk.first_seq, from, "{ctx}: first_seq");
    if chunk.count == 0 {
        assert_eq!(chunk.last_seq, from - 1, "{ctx}: an empty chunk ends before it starts");
        return;
    }
    let want: Vec<u64> = (from..=chunk.last_seq).collect();
    assert_eq!(seqs, want, "{ctx}: records must be consecutive from {from}");
    assert!(chunk.count == 1 || chunk.bytes.len() <= max_bytes, "{ctx}: {} bytes > max_bytes {max_bytes}", chunk.bytes.len());
}

/// Ship from `primary` to `replica` until the replica has everything, in chunks of random size.
fn catch_up(primary: &Engine, replica: &Engine, rng: &mut Rng, ctx: &str) {
    for _ in 0..100_000 {
        let from = replica.last_seq() + 1;
        let max_bytes = match rng.below(4) {
            0 => 1,
            1 => rng.range(1, 2_000) as usize,
            2 => rng.range(2_000, 40_000) as usize,
            _ => 1 << 20,
        };
        let chunk = primary.read_wal(from, max_bytes).unwrap_or_else(|e| panic!("{ctx}: read_wal({from}): {e}"));
        check_chunk(&chunk, from, max_bytes, ctx);
        if chunk.count == 0 {
            assert_eq!(replica.last_seq(), primary.last_seq(), "{ctx}: empty chunk before the end");
            return;
        }
        let applied = replica.apply_replicated(chunk.bytes).unwrap_or_else(|e| panic!("{ctx}: apply_replicated from {from}: {e}"));
        assert_eq!(applied, chunk.last_seq, "{ctx}: apply returns the chunk's last seq");
        assert_eq!(replica.last_seq(), chunk.last_seq, "{ctx}: replica's last_seq after apply");
    }
    panic!("{ctx}: catch-up did not finish");
}

/// Every WAL record on disk (`wal-archive/` and `wal/`) by sequence number, read with the
/// recovery scanner rather than `read_wal`.
fn records_on_disk(fs: &FaultStorage) -> BTreeMap<u64, Vec<u8>> {
    let mut out = BTreeMap::new();
    for sub in [ARCHIVE_DIR, WAL_DIR] {
        for name in list(fs, sub) {
            let Some(first) = parse_wal_segment_name(&name) else { continue };
            let buf = fs.read(&dir().join(sub).join(&name)).expect("read segment");
            for item in scan_segment(&buf, first).items {
                match item {
                    ScanItem::Record { offset, header, len, .. } => {
                        let rec = buf[offset as usize..offset as usize + len].to_vec();
                        assert!(out.insert(header.seq, rec).is_none(), "seq {} stored twice", header.seq);
                    }
                    ScanItem::Corrupt { offset, reason } => panic!("{sub}/{name} is corrupt at {offset}: {reason}"),
                }
            }
        }
    }
    out
}

/// Where a record is: (segment path, offset) by sequence number.
fn record_locations(fs: &FaultStorage, sub: &str) -> BTreeMap<u64, (PathBuf, u64)> {
    let mut out = BTreeMap::new();
    for name in list(fs, sub) {
        let Some(first) = parse_wal_segment_name(&name) else { continue };
        let path = dir().join(sub).join(&name);
        let buf = fs.read(&path).expect("read segment");
        for item in scan_segment(&buf, first).items {
            if let ScanItem::Record { offset, header, .. } = item {
                out.insert(header.seq, (path.clone(), offset));
            }
        }
    }
    out
}

fn assert_same_store(primary: (&Engine, &FaultStorage), replica: (&Engine, &FaultStorage), history: &History, ctx: &str) {
    let (p, pfs) = primary;
    let (r, rfs) = replica;
    assert_eq!(r.last_seq(), p.last_seq(), "{ctx}: last_seq");
    assert_eq!(p.last_seq(), history.len(), "{ctx}: primary's last_seq is the history's");
    let want = history.model_at(history.len());
    assert_state(p, &want, &format!("{ctx}: primary"));
    assert_state(r, &want, &format!("{ctx}: replica"));
    let (pr, rr) = (records_on_disk(pfs), records_on_disk(rfs));
    assert_eq!(pr.keys().collect::<Vec<_>>(), rr.keys().collect::<Vec<_>>(), "{ctx}: the same records are on both disks");
    for (seq, bytes) in &pr {
        assert!(rr[seq] == *bytes, "{ctx}: WAL record {seq} differs between primary and replica");
    }
    let (pc, rc) = (p.read_wal(1, usize::MAX).expect("primary read_wal"), r.read_wal(1, usize::MAX).expect("replica read_wal"));
    assert!(pc == rc, "{ctx}: read_wal from seq 1 differs between primary and replica");
}

/// Same collections (ids are the sequence numbers of their creates) and the same rows with the
/// same labels (the sequence number and op of the write that produced each row): a full base
/// checkpoint file of each collection, written at the same seq, is byte-identical on both.
fn assert_same_rows_and_labels(primary: &Engine, replica: &Engine, ctx: &str) {
    let base_files = |e: &Engine| {
        let ids: Vec<u64> = e.manifest().collections.iter().map(|c| c.id).collect();
        for id in ids {
            e.rewrite_collection_files(id, |_, _| Ok(())).unwrap_or_else(|err| panic!("{ctx}: rewrite collection {id}: {err}"));
        }
        let m = e.manifest();
        assert_eq!(m.checkpoint_seq, e.last_seq());
        m.collections
            .iter()
            .map(|c| (c.id, c.name.clone(), c.dim, c.metric, c.data_files.iter().map(|f| f.xxh3.clone()).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    };
    assert_eq!(base_files(primary), base_files(replica), "{ctx}: collections or base checkpoint files differ");
}

fn run_workload_with_replica(seed: u64) {
    let ctx = format!("seed {seed}");
    let mut rng = Rng::new(seed ^ 0x5eed);
    let (pfs, rfs) = (FaultStorage::new(), FaultStorage::new());
    let mut primary = open_primary(&pfs, 16 << 10);
    // Different segment sizes: records are byte-identical, segment boundaries need not be.
    let mut replica = open_replica(&rfs, SyncMode::Group, 10 << 10);
    let shape = WorkloadShape { commits: 260, checkpoint_pct: 6, reopen_pct: 2, big_pct: 6 };
    let mut history = History::default();
    for step in workload(seed, shape) {
        match step {
            Step::Commit(ops) => {
                let seq = primary.commit(&ops).unwrap_or_else(|e| panic!("{ctx}: commit: {e}"));
                history.acknowledge(seq, ops);
            }
            Step::Checkpoint => {
                checkpoint(&primary).unwrap_or_else(|e| panic!("{ctx}: checkpoint: {e}"));
            }
            Step::Reopen => {
                primary.close().expect("close primary");
                drop(primary);
                primary = open_primary(&pfs, 16 << 10);
            }
        }
        if rng.percent(20) {
            catch_up(&primary, &replica, &mut rng, &ctx);
            assert_state(&replica, &history.model_at(replica.last_seq()), &format!("{ctx}: replica at {}", replica.last_seq()));
        } else if rng.percent(3) {
            // Part of the way only: a chunk or two, then on.
            let from = replica.last_seq() + 1;
            let chunk = primary.read_wal(from, rng.range(1, 9_000) as usize).expect("read_wal");
            replica.apply_replicated(chunk.bytes).expect("apply");
        }
        if rng.percent(4) {
            checkpoint(&replica).unwrap_or_else(|e| panic!("{ctx}: replica checkpoint: {e}"));
        }
        if rng.percent(2) {
            replica.close().expect("close replica");
            drop(replica);
            replica = open_replica(&rfs, SyncMode::Group, 10 << 10);
        }
    }
    catch_up(&primary, &replica, &mut rng, &ctx);
    assert_same_store((&primary, &pfs), (&replica, &rfs), &history, &ctx);
    assert_same_rows_and_labels(&primary, &replica, &ctx);
    // And after both are closed and opened again.
    primary.close().expect("close primary");
    replica.close().expect("close replica");
    drop((primary, replica));
    let (primary, replica) = (open_primary(&pfs, 16 << 10), open_replica(&rfs, SyncMode::Group, 10 << 10));
    assert_same_store((&primary, &pfs), (&replica, &rfs), &history, &format!("{ctx}, reopened"));
}

#[test]
fn replica_equals_primary_after_random_workload() {
    for seed in [1u64, 2, 3] {
        run_workload_with_replica(seed);
    }
}

/// Commit `n` small batches to collection "a" (created first).
fn fill(e: &Engine, n: usize, history: &mut History, rng: &mut Rng) {
    if history.len() == 0 {
        let ops = vec![Op::CreateCollection(spec("a", DIM_A, Metric::L2))];
        history.acknowledge(e.commit(&ops).expect("create"), ops);
    }
    for _ in 0..n {
        let ops = vec![Op::Upsert {
            collection: "a".into(),
            id: format!("a{}", rng.below(50)),
            vector: rng.vector(DIM_A).into(),
            metadata: format!("{{\"n\":{}}}", rng.below(1000)).into(),
        }];
        history.acknowledge(e.commit(&ops).expect("commit"), ops);
    }
}

#[test]
fn read_wal_spans_archive_and_live_without_gap() {
    let fs = FaultStorage::new();
    let e = open_primary(&fs, 2 << 10);
    let (mut history, mut rng) = (History::default(), Rng::new(7));
    for _ in 0..4 {
        fill(&e, 30, &mut history, &mut rng);
        checkpoint(&e).expect("checkpoint");
    }
    fill(&e, 60, &mut history, &mut rng);
    assert!(list(&fs, ARCHIVE_DIR).len() >= 3, "the test needs several archived segments: {:?}", list(&fs, ARCHIVE_DIR));
    assert!(list(&fs, WAL_DIR).len() >= 3, "and several live ones (rolls): {:?}", list(&fs, WAL_DIR));
    let on_disk = records_on_disk(&fs);
    let last = e.last_seq();
    assert_eq!(e.oldest_retained_seq().expect("oldest"), 1);
    for from in 1..=last {
        for max_bytes in [1usize, 100, 700, 3_000, usize::MAX] {
            let chunk = e.read_wal(from, max_bytes).expect("read_wal");
            let ctx = format!("from {from}, max_bytes {max_bytes}");
            check_chunk(&chunk, from, max_bytes, &ctx);
            assert!(chunk.count >= 1, "{ctx}: a record is available, so at least one is returned");
            let want: Vec<u8> = (from..=chunk.last_seq).flat_map(|s| on_disk[&s].clone()).collect();
            assert!(chunk.bytes == want, "{ctx}: bytes differ from the records on disk");
            let tried = e.try_read_wal(from, max_bytes).expect("try_read_wal").expect("nothing moves here");
            assert!(tried.bytes == chunk.bytes && tried.last_seq == chunk.last_seq, "{ctx}: try_read_wal differs from read_wal");
            if max_bytes == usize::MAX {
                assert_eq!(chunk.last_seq, last, "{ctx}: an unbounded read reaches last_seq");
            }
        }
    }
    let empty = e.read_wal(last + 1, 1 << 20).expect("read past the end");
    assert_eq!((empty.count, empty.first_seq, empty.last_seq, empty.bytes.len()), (0, last + 1, last, 0));
    assert_eq!(code(&e.read_wal(0, 10)), "CAIRN_INVALID_ARGUMENT");

    // Concurrently: a writer commits and checkpoints (moving segments to the archive) while a
    // reader tails the log from seq 1 again and again. Every chunk continues the last one.
    let e = Arc::new(e);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (e, stop) = (e.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = Rng::new(8);
            for i in 0..400 {
                let ops = vec![Op::Upsert {
                    collection: "a".into(),
                    id: format!("w{}", rng.below(40)),
                    vector: rng.vector(DIM_A).into(),
                    metadata: "null".into(),
                }];
                e.commit(&ops).expect("concurrent commit");
                if i % 25 == 0 {
                    checkpoint(&e).expect("concurrent checkpoint");
                }
            }
            stop.store(true, Ordering::SeqCst);
        })
    };
    let mut rng = Rng::new(9);
    let mut passes = 0;
    while passes < 200 {
        let done = stop.load(Ordering::SeqCst);
        let mut next = 1;
        let mut chunks = 0;
        loop {
            let max_bytes = rng.range(1, 5_000) as usize;
            // Half the reads take the event-loop path, which gives up (None) when a segment moved.
            let tried = if rng.below(2) == 0 {
                e.try_read_wal(next, max_bytes).unwrap_or_else(|err| panic!("concurrent try_read_wal({next}): {err}"))
            } else {
                None
            };
            let chunk = match tried {
                Some(c) => c,
                None => e.read_wal(next, max_bytes).unwrap_or_else(|err| panic!("concurrent read_wal({next}): {err}")),
            };
            check_chunk(&chunk, next, max_bytes, &format!("concurrent pass {passes}"));
            if chunk.count == 0 {
                break;
            }
            next = chunk.last_seq + 1;
            chunks += 1;
            assert!(chunks < 100_000, "tail never ends");
        }
        passes += 1;
        if done {
            assert_eq!(next, e.last_seq() + 1, "a pass after the writer stopped reaches the end");
            break;
        }
    }
    writer.join().expect("writer thread");
}

#[test]
fn read_wal_after_retention_reports_pruned() {
    let fs = FaultStorage::new();
    let o = Options { archive_max_bytes: Some(3 << 10), ..opts(&fs, SyncMode::Group, 2 << 10, false) };
    let e = Engine::open(dir(), o).expect("open");
    let (mut history, mut rng) = (History::default(), Rng::new(3));
    for _ in 0..5 {
        fill(&e, 30, &mut history, &mut rng);
        checkpoint(&e).expect("checkpoint");
    }
    fill(&e, 5, &mut history, &mut rng);
    let oldest = e.oldest_retained_seq().expect("oldest");
    assert!(oldest > 1, "retention must have removed the first segments");
    let first_on_disk = *records_on_disk(&fs).keys().next().expect("records remain");
    assert_eq!(oldest, first_on_disk, "oldest_retained_seq is the first record on disk");
    for from in [1, oldest - 1] {
        match e.read_wal(from, 1 << 20) {
            Err(err @ Error::WalPruned { requested, oldest: o }) => {
                assert_eq!((requested, o), (from, oldest));
                assert_eq!(err.code(), "CAIRN_WAL_PRUNED");
            }
            other => panic!("read_wal({from}) must report the pruned range, got {other:?}"),
        }
    }
    let chunk = e.read_wal(oldest, usize::MAX).expect("the oldest retained record can be read");
    check_chunk(&chunk, oldest, usize::MAX, "from oldest");
    assert_eq!(chunk.last_seq, e.last_seq());

    // A fresh replica cannot catch up from seq 1; one seeded at or after `oldest` could.
    let rfs = FaultStorage::new();
    let replica = open_replica(&rfs, SyncMode::Group, 4 << 10);
    assert_eq!(code(&e.read_wal(replica.last_seq() + 1, 1 << 20)), "CAIRN_WAL_PRUNED");
}

#[test]
fn corrupt_record_is_never_shipped() {
    let fs = FaultStorage::new();
    let e = open_primary(&fs, 2 << 10);
    let (mut history, mut rng) = (History::default(), Rng::new(5));
    fill(&e, 40, &mut history, &mut rng);
    checkpoint(&e).expect("checkpoint");
    fill(&e, 10, &mut history, &mut rng);
    let archived = record_locations(&fs, ARCHIVE_DIR);
    let bad_seq = 20;
    let (path, offset) = archived.get(&bad_seq).cloned().expect("record 20 is archived");
    // One bit in the middle of the record's payload.
    fs.mutate(&path, |b| b[offset as usize + 30] ^= 0x04).expect("flip a bit");

    // Records before it still ship (a chunk ends before the damage); a read that starts at it
    // fails naming it.
    let before = e.read_wal(1, usize::MAX).expect("the records before the damage");
    check_chunk(&before, 1, usize::MAX, "up to the damage");
    assert_eq!(before.last_seq, bad_seq - 1, "a chunk stops before the damaged record");
    let mut next = 1;
    loop {
        match e.read_wal(next, 500) {
            Ok(chunk) => {
                check_chunk(&chunk, next, 500, "before the damage");
                assert!(chunk.last_seq < bad_seq, "the damaged record was shipped");
                next = chunk.last_seq + 1;
            }
            Err(err) => {
                assert_eq!(corruption_location(&err), (path.clone(), offset));
                assert_eq!(err.code(), "CAIRN_CORRUPTION");
                break;
            }
        }
    }
    assert_eq!(next, bad_seq, "every record before the damaged one ships");
    for max_bytes in [1, usize::MAX] {
        let err = e.read_wal(bad_seq, max_bytes).expect_err("the damaged record is refused");
        assert_eq!(corruption_location(&err), (path.clone(), offset));
    }
    // A record after it in the same segment cannot be found without trusting the damaged one's
    // length, so that read fails too; the next segment still ships.
    let err = e.read_wal(bad_seq + 1, usize::MAX).expect_err("the damaged record is walked over");
    assert_eq!(corruption_location(&err), (path.clone(), offset));
    let next_segment = archived.iter().find(|(_, (p, _))| *p != path && p > &path).map(|(s, _)| *s).expect("a later archived segment");
    let after = e.read_wal(next_segment, usize::MAX).expect("records of later segments still ship");
    check_chunk(&after, next_segment, usize::MAX, "after the damage");
    assert_eq!(after.last_seq, e.last_seq());
}

/// A replica that applied `1..=n` of a primary's history, with the primary.
fn primary_and_replica(n: usize, seed: u64) -> (Engine, FaultStorage, Engine, FaultStorage, History) {
    let (pfs, rfs) = (FaultStorage::new(), FaultStorage::new());
    let p = open_primary(&pfs, 4 << 10);
    let r = open_replica(&rfs, SyncMode::Group, 4 << 10);
    let (mut history, mut rng) = (History::default(), Rng::new(seed));
    fill(&p, n, &mut history, &mut rng);
    (p, pfs, r, rfs, history)
}

#[test]
fn corrupt_chunk_is_not_applied() {
    let (p, _pfs, r, rfs, history) = primary_and_replica(30, 11);
    catch_up_to(&p, &r, 10);
    let good = p.read_wal(11, usize::MAX).expect("read 11..");
    assert!(good.count >= 10);
    let files_before = files(&rfs);
    let mut rng = Rng::new(12);
    for trial in 0..150 {
        let mut bad = good.bytes.clone();
        let at = rng.below(bad.len() as u64) as usize;
        bad[at] ^= 1 << rng.below(8);
        let res = r.apply_replicated(bad);
        let err = res.expect_err(&format!("trial {trial}: a chunk with byte {at} flipped must be refused"));
        // The checksum is checked before anything else: a flipped sequence number is damage too.
        assert_eq!(err.code(), "CAIRN_CORRUPTION", "trial {trial}: {err}");
        assert_eq!(r.last_seq(), 10, "trial {trial}: nothing of a refused chunk is applied");
    }
    assert_state(&r, &history.model_at(10), "after refused chunks");
    assert!(files(&rfs) == files_before, "a refused chunk writes nothing");
    // A truncated chunk too.
    let cut = good.bytes[..good.bytes.len() - 8].to_vec();
    assert_eq!(code(&r.apply_replicated(cut)), "CAIRN_CORRUPTION");
    assert_eq!(r.last_seq(), 10);
    assert_eq!(r.apply_replicated(good.bytes).expect("the intact chunk applies"), good.last_seq);
    assert_state(&r, &history.model_at(good.last_seq), "after the intact chunk");
}

/// A framed record, as a primary would have written it.
fn record(seq: u64, ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_record(&mut out, RECORD_TYPE_BATCH, seq, 1_700_000_000_000 + seq, &batch::encode(ops));
    out
}

#[test]
fn gap_and_repeat_are_refused() {
    let (p, _pfs, r, _rfs, history) = primary_and_replica(12, 13);
    let mut rng = Rng::new(14);
    catch_up_to(&p, &r, 5);
    let all = p.read_wal(1, usize::MAX).expect("read");
    let rec = |s: u64| p.read_wal(s, 1).expect("read one").bytes;
    let gap = |res: cairn_core::Result<u64>| match res {
        Err(Error::SequenceGap { expected, got }) => (expected, got),
        other => panic!("expected a sequence gap, got {other:?}"),
    };
    assert_eq!(gap(r.apply_replicated(rec(7))), (6, 7), "a gap");
    assert_eq!(gap(r.apply_replicated(rec(5))), (6, 5), "a repeat");
    assert_eq!(gap(r.apply_replicated(all.bytes.clone())), (6, 1), "a chunk from the start");
    let mut holed = rec(6);
    holed.extend(rec(8));
    assert_eq!(gap(r.apply_replicated(holed)), (7, 8), "a gap inside a chunk");
    assert_eq!(r.last_seq(), 5, "nothing of a refused chunk is applied, not even its good head");
    assert_eq!(Error::SequenceGap { expected: 1, got: 2 }.code(), "CAIRN_SEQUENCE_GAP");

    // A chunk the schema refuses is refused whole, and its earlier records' schema changes are
    // undone: seq 6 creates "z", seq 7 writes to a missing collection.
    let mut bad = record(6, &[Op::CreateCollection(spec("z", 2, Metric::L2))]);
    bad.extend(record(
        7,
        &[Op::Upsert { collection: "missing".into(), id: "x".into(), vector: vec![0.0; 2].into(), metadata: "null".into() }],
    ));
    assert_eq!(code(&r.apply_replicated(bad)), "CAIRN_NOT_FOUND");
    let wrong_dim =
        record(6, &[Op::Upsert { collection: "a".into(), id: "x".into(), vector: vec![0.0; 3].into(), metadata: "null".into() }]);
    assert_eq!(code(&r.apply_replicated(wrong_dim)), "CAIRN_INVALID_ARGUMENT");
    assert_eq!(r.last_seq(), 5);
    assert_state(&r, &history.model_at(5), "after refused chunks");

    // The real continuation still applies, in random pieces.
    catch_up(&p, &r, &mut rng, "after refusals");
    assert_state(&r, &history.model_at(history.len()), "caught up");
    assert_eq!(r.apply_replicated(Vec::new()).expect("an empty chunk"), history.len());
}

fn catch_up_to(p: &Engine, r: &Engine, seq: u64) {
    while r.last_seq() < seq {
        let chunk = p.read_wal(r.last_seq() + 1, 1).expect("read");
        r.apply_replicated(chunk.bytes).expect("apply");
    }
}

#[test]
fn replica_refuses_local_writes() {
    let (p, _pfs, r, _rfs, history) = primary_and_replica(8, 15);
    catch_up_to(&p, &r, history.len());
    assert!(r.is_replica() && !p.is_replica());
    let write =
        vec![Op::Upsert { collection: "a".into(), id: "x".into(), vector: vec![0.5; DIM_A as usize].into(), metadata: "null".into() }];
    let refused = r.commit(&write);
    assert!(matches!(refused, Err(Error::NotPrimary(_))), "{refused:?}");
    assert_eq!(code(&refused), "CAIRN_NOT_PRIMARY");
    let (tx, rx) = std::sync::mpsc::channel();
    r.submit(batch::encode(&write), Box::new(move |res| tx.send(res).expect("send")));
    assert_eq!(code(&rx.recv().expect("submit completes")), "CAIRN_NOT_PRIMARY");
    assert_eq!(r.last_seq(), history.len(), "a refused write changes nothing");
    // Reads and checkpoints work on a replica.
    assert_state(&r, &history.model_at(history.len()), "replica reads");
    checkpoint(&r).expect("a replica checkpoints");
    // A primary does not take replicated records.
    let chunk = p.read_wal(1, 100).expect("read");
    assert_eq!(code(&p.apply_replicated(chunk.bytes)), "CAIRN_INVALID_ARGUMENT");
}

#[test]
fn wait_for_seq_wakes_on_commit_and_on_close() {
    let (p, _pfs, r, _rfs, history) = primary_and_replica(3, 17);
    assert_eq!(p.last_seq(), 4);
    assert!(p.wait_for_seq(4, Duration::ZERO), "an existing seq needs no wait");
    assert!(!p.wait_for_seq(5, Duration::from_millis(20)), "a timeout returns false");
    let p = Arc::new(p);
    let waiter = {
        let p = p.clone();
        std::thread::spawn(move || p.wait_for_seq(6, Duration::from_secs(120)))
    };
    let mut rng = Rng::new(18);
    let mut history = history;
    fill(&p, 2, &mut history, &mut rng);
    assert!(waiter.join().expect("waiter"), "the commit of seq 6 wakes the waiter");

    // A replica's waiters wake when a chunk is applied (read-your-writes).
    let r = Arc::new(r);
    let waiter = {
        let r = r.clone();
        std::thread::spawn(move || r.wait_for_seq(6, Duration::from_secs(120)))
    };
    r.apply_replicated(p.read_wal(1, usize::MAX).expect("read").bytes).expect("apply");
    assert!(waiter.join().expect("waiter"));

    // Close wakes a waiter for a seq that will never come.
    let waiter = {
        let r = r.clone();
        std::thread::spawn(move || r.wait_for_seq(1_000, Duration::from_secs(600)))
    };
    std::thread::sleep(Duration::from_millis(20));
    r.close().expect("close");
    assert!(!waiter.join().expect("waiter"), "a closed store's waiter returns false");
}

#[test]
fn replica_crash_keeps_a_prefix() {
    let pfs = FaultStorage::new();
    let p = open_primary(&pfs, 8 << 10);
    let shape = WorkloadShape { commits: 200, checkpoint_pct: 4, reopen_pct: 0, big_pct: 8 };
    let mut history = History::default();
    for step in workload(21, shape) {
        run_step(&p, &step, &mut history);
    }
    let mut rng = Rng::new(22);
    for round in 0..24 {
        let ctx = format!("round {round}");
        let rfs = FaultStorage::new();
        let r = open_replica(&rfs, SyncMode::Group, 6 << 10);
        // Some chunks applied and acknowledged before the crash...
        let mut acked_before = 0;
        let target = rng.below(history.len() / 2);
        while acked_before < target {
            let chunk = p.read_wal(r.last_seq() + 1, rng.range(1, 6_000) as usize).expect("read");
            acked_before = r.apply_replicated(chunk.bytes).expect("apply");
        }
        if rng.percent(30) {
            checkpoint(&r).expect("replica checkpoint");
        }
        // ...then many submitted at once, so that the commit thread groups them, and the power
        // cut lands while they are in flight.
        let acked = Arc::new(AtomicU64::new(acked_before));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let mut next = acked_before + 1;
        let mut chunks = Vec::new();
        for _ in 0..rng.range(2, 40) {
            let chunk = p.read_wal(next, rng.range(1, 3_000) as usize).expect("read");
            if chunk.count == 0 {
                break;
            }
            next = chunk.last_seq + 1;
            chunks.push(chunk.bytes);
        }
        for bytes in chunks {
            let (acked, errors) = (acked.clone(), errors.clone());
            r.submit_replicated(
                bytes,
                Box::new(move |res| match res {
                    Ok(seq) => {
                        acked.fetch_max(seq, Ordering::SeqCst);
                    }
                    Err(e) => errors.lock().expect("errors").push(e.to_string()),
                }),
            );
        }
        // The power cut: after a random share of the in-flight chunks were acknowledged.
        let stop_at = acked_before + rng.below(next - acked_before);
        for _ in 0..1_000_000 {
            if acked.load(Ordering::SeqCst) >= stop_at {
                break;
            }
            std::hint::spin_loop();
        }
        let acked_at_crash = acked.load(Ordering::SeqCst);
        let crashed = rfs.crash(CrashKind::DropUnsynced);
        drop(r);
        assert!(errors.lock().expect("errors").is_empty(), "{ctx}: {:?}", errors.lock().expect("errors"));

        let r = open_replica(&crashed, SyncMode::Group, 6 << 10);
        let l = r.last_seq();
        assert!(l >= acked_at_crash, "{ctx}: an acknowledged chunk (through {acked_at_crash}) was lost: replica at {l}");
        assert!(l < next, "{ctx}: replica at {l} holds records never shipped");
        assert_state(&r, &history.model_at(l), &format!("{ctx}: replica after crash at seq {l}"));
        // Shipping resumes from its last seq.
        catch_up(&p, &r, &mut rng, &ctx);
        assert_state(&r, &history.model_at(history.len()), &format!("{ctx}: caught up"));
        let (pr, rr) = (records_on_disk(&pfs), records_on_disk(&crashed));
        assert!(pr == rr, "{ctx}: WAL records differ after catch-up");
    }
}

#[test]
fn replica_reopened_as_primary_continues_sequence() {
    let (p, _pfs, r, rfs, mut history) = primary_and_replica(40, 23);
    let mut rng = Rng::new(24);
    catch_up(&p, &r, &mut rng, "before failover");
    checkpoint(&r).expect("replica checkpoint");
    let last = r.last_seq();
    r.close().expect("close replica");
    drop(r);
    // Failover: the replica's directory opened as a primary.
    let np = open_primary(&rfs, 4 << 10);
    assert!(!np.is_replica());
    assert_eq!(np.last_seq(), last);
    assert_state(&np, &history.model_at(last), "new primary at open");
    let ops = vec![Op::Upsert {
        collection: "a".into(),
        id: "after".into(),
        vector: vec![0.25; DIM_A as usize].into(),
        metadata: "{\"n\":1}".into(),
    }];
    let seq = np.commit(&ops).expect("a write on the new primary");
    assert_eq!(seq, last + 1, "sequence numbers continue");
    history.acknowledge(seq, ops);
    assert_state(&np, &history.model_at(seq), "new primary after a write");
    // Its log is the old primary's through `last`, byte for byte, then its own.
    let old = p.read_wal(1, usize::MAX).expect("old primary log");
    let new = np.read_wal(1, usize::MAX).expect("new primary log");
    assert!(new.bytes.starts_with(&old.bytes), "the new primary's log extends the old one's");
    check_chunk(&new, 1, usize::MAX, "new primary log");
    let own = np.read_wal(seq, 1).expect("the new record");
    let Decoded::Record { header, .. } = decode_record(&own.bytes) else { panic!("bad record") };
    let Decoded::Record { header: prev, .. } = decode_record(&np.read_wal(last, 1).expect("prev").bytes) else { panic!("bad record") };
    assert!(header.time_ms >= prev.time_ms, "commit times never go backwards across a failover");
    // And a new replica of the new primary follows it.
    let r2fs = FaultStorage::new();
    let r2 = open_replica(&r2fs, SyncMode::Always, 4 << 10);
    catch_up(&np, &r2, &mut rng, "replica of the new primary");
    assert_same_store((&np, &rfs), (&r2, &r2fs), &history, "replica of the new primary");
}

/// A live tail as the replication server runs it, on the real file system with background
/// preallocation: a writer commits and checkpoints while a shipper reads what is new (sleeping
/// in `wait_for_seq` when there is nothing) and a replica applies it, several chunks in flight.
#[test]
fn live_tail_on_disk_follows_commits_and_checkpoints() {
    let root = std::env::temp_dir().join(format!("cairn-replication-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let base = Options {
        sync: SyncMode::Group,
        segment_bytes: 64 << 10,
        prealloc: Prealloc::Background,
        storage: Arc::new(cairn_core::storage::OsStorage),
        ..Options::default()
    };
    let p = Arc::new(Engine::open(&root.join("primary"), base.clone()).expect("open primary"));
    let r = Engine::open(&root.join("replica"), Options { replica: true, segment_bytes: 48 << 10, ..base.clone() }).expect("open replica");
    let shape = WorkloadShape { commits: 400, checkpoint_pct: 3, reopen_pct: 0, big_pct: 8 };
    let steps = workload(31, shape);
    let total = commit_count(&steps) as u64;
    let writer = {
        let p = p.clone();
        std::thread::spawn(move || {
            let mut history = History::default();
            for step in steps {
                run_step(&p, &step, &mut history);
            }
            history
        })
    };
    let acked = Arc::new(AtomicU64::new(0));
    let mut next = 1;
    let mut rng = Rng::new(32);
    let mut waits = 0u64;
    while acked.load(Ordering::SeqCst) < total {
        if next > total {
            // Everything is shipped; wait for the replica's acknowledgements.
            r.wait_for_seq(total, Duration::from_secs(60));
            continue;
        }
        let max_bytes = rng.range(1, 20_000) as usize;
        let chunk = p.read_wal(next, max_bytes).unwrap_or_else(|e| panic!("read_wal({next}): {e}"));
        check_chunk(&chunk, next, max_bytes, "live tail");
        if chunk.count == 0 {
            waits += 1;
            assert!(waits < 1_000_000, "the tail never caught up");
            p.wait_for_seq(next, Duration::from_secs(60));
            continue;
        }
        next = chunk.last_seq + 1;
        let acked = acked.clone();
        r.submit_replicated(
            chunk.bytes,
            Box::new(move |res| {
                let seq = res.expect("a shipped chunk applies");
                acked.fetch_max(seq, Ordering::SeqCst);
            }),
        );
    }
    let history = writer.join().expect("writer");
    assert_eq!(r.last_seq(), history.len());
    let want = history.model_at(history.len());
    assert_state(&p, &want, "primary");
    assert_state(&r, &want, "replica");
    let (pw, rw) = (p.read_wal(1, usize::MAX).expect("primary log"), r.read_wal(1, usize::MAX).expect("replica log"));
    assert!(pw == rw, "the replica's log is the primary's, byte for byte");
    r.close().expect("close replica");
    drop(r);
    let r = Engine::open(&root.join("replica"), Options { replica: true, ..base }).expect("reopen replica");
    assert_state(&r, &want, "replica reopened");
    drop(r);
    drop(p);
    let _ = std::fs::remove_dir_all(&root);
}

/// Byte offsets of each upsert record's vector in a checkpoint file, with the record's id.
fn upsert_vectors(buf: &[u8]) -> Vec<(usize, String)> {
    segment_records(buf).into_iter().filter(|(_, vec_bytes, _)| *vec_bytes > 0).map(|(pos, _, id)| (pos + 32, id)).collect()
}

/// Repair from another node's copy (`row_copy` there, `install_row_repair` here): only the
/// version known damaged here is replaced, a row written since is never replaced by the older
/// copy, nothing is added to the WAL, and the repair survives a crash (checkpoint files).
#[test]
fn row_repair_installs_only_the_damaged_version_durably() {
    use cairn_core::engine::{RowCopy, RowRepairOutcome};
    use cairn_core::layout::DATA_DIR;
    let fs = FaultStorage::new();
    let e = open_primary(&fs, 1 << 20);
    let mut history = History::default();
    let mut rng = Rng::new(7);
    fill(&e, 30, &mut history, &mut rng);
    checkpoint(&e).expect("checkpoint");
    e.close().expect("close");
    drop(e);
    // The peer: an identical copy of the store (everything was synced by the clean close).
    let peer_fs = fs.crash(CrashKind::DropUnsynced);
    for name in list(&fs, ARCHIVE_DIR) {
        fs.remove(&dir().join(ARCHIVE_DIR).join(name)).expect("remove archived segment");
    }
    let seg = list(&fs, DATA_DIR).into_iter().find(|n| n.ends_with(".seg")).expect("a base file");
    let seg_path = dir().join(DATA_DIR).join(&seg);
    let vectors = upsert_vectors(&fs.read(&seg_path).expect("read"));
    let (a, b) = (vectors[3].clone(), vectors[11].clone());
    for (pos, _) in [&a, &b] {
        fs.mutate(&seg_path, |buf| buf[*pos + 2] ^= 1 << 5).expect("flip");
    }
    let e = Engine::open(dir(), Options { recovery: RecoveryMode::TolerateTornTail, ..opts(&fs, SyncMode::Group, 1 << 20, false) })
        .expect("open damaged");
    let peer = Engine::open(dir(), opts(&peer_fs, SyncMode::Group, 1 << 20, false)).expect("open peer");
    let last = e.last_seq();
    let coll = "a".to_string();

    let damaged: Vec<String> = e.damaged_rows(100).expect("damaged rows").into_iter().map(|d| d.id).collect();
    let mut want_damaged = vec![a.1.clone(), b.1.clone()];
    want_damaged.sort();
    assert_eq!(damaged, want_damaged);
    for (_, id) in [&a, &b] {
        assert_eq!(code(&e.get(&coll, id)), "CAIRN_CORRUPTION");
        let RowCopy::Damaged { label } = e.row_copy(&coll, id).expect("copy") else { panic!("{id} must be damaged here") };
        let RowCopy::Found { label: peer_label, vector, metadata } = peer.row_copy(&coll, id).expect("peer copy") else {
            panic!("{id} must be found on the peer")
        };
        assert_eq!(label, peer_label, "same version on both nodes");
        // Another version is refused as moot; the damaged one stays damaged.
        let other = e.install_row_repair(&coll, id, label + 1, vector.clone(), metadata.clone()).expect("install other version");
        assert_eq!(other, RowRepairOutcome::Moot);
        assert_eq!(code(&e.get(&coll, id)), "CAIRN_CORRUPTION");
        if id == &b.1 {
            // Written meanwhile: the newer row wins over the repair copy of the old one.
            let newer = vec![0.25; vector.len()];
            let ops = vec![Op::Upsert { collection: coll.clone(), id: id.clone(), vector: newer.into(), metadata: "{}".into() }];
            history.acknowledge(e.commit(&ops).expect("rewrite"), ops);
            assert_eq!(e.install_row_repair(&coll, id, label, vector, metadata).expect("install"), RowRepairOutcome::Moot);
        } else {
            let r = e.install_row_repair(&coll, id, label, vector, metadata).expect("install");
            assert!(matches!(r, RowRepairOutcome::Installed { .. }), "{r:?}");
        }
    }
    assert!(e.damaged_rows(100).expect("damaged rows").is_empty());
    assert_eq!(e.last_seq(), last + 1, "a repair takes no sequence number");
    let want = history.model_at(history.len());
    assert_state(&e, &want, "after repair");
    // Durable: a crash that drops everything unsynced, then the strictest open.
    let crashed = fs.crash(CrashKind::DropUnsynced);
    drop(e);
    let e = Engine::open(dir(), Options { recovery: RecoveryMode::AbsoluteConsistency, ..opts(&crashed, SyncMode::Group, 1 << 20, false) })
        .expect("reopen after repair");
    assert!(e.recovery_report().unreadable_records.is_empty(), "{:?}", e.recovery_report().unreadable_records);
    assert_state(&e, &want, "reopen after repair");
}
