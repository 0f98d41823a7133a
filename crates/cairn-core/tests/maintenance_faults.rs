//! Fault injection into the maintenance tools, through `FaultStorage`: snapshot creation,
//! restore (PITR) and scrub repair (installing a copy into a closed store, rebuilding a file of
//! an open one). For every N, the Nth write fails, then the Nth fsync; a fault fails that
//! operation and every later one of its kind, so the power cut taken right after it
//! (`DropUnsynced`) is a power cut at that step. After each, in the state a process restart
//! sees and in the state a power cut leaves:
//! - the source store opens with exactly the committed rows (the model in `common`);
//! - `snapshot::list` shows only complete snapshots, and every listed one verifies;
//! - a failed restore leaves no target, and a successful one is durable and equals the model;
//! - a failed repair keeps the damaged bytes, in place or in quarantine, never loses them.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_core::durable::write_synced;
use cairn_core::fault::{CrashKind, FaultOp, FaultStorage};
use cairn_core::layout::{DATA_DIR, NOTE_SUFFIX, QUARANTINE_DIR, SNAPSHOT_FILE};
use cairn_core::pitr::{self, RestoreTarget};
use cairn_core::placement::Placement;
use cairn_core::scrub::{self, Expected, FileKind, Install, Rebuild, ScanControl};
use cairn_core::snapshot::{self, SnapshotInfo};
use cairn_core::storage::{FileId, Storage};
use cairn_core::wal::writer::Prealloc;
use cairn_core::{Engine, Options, RecoveryMode, SyncMode};
use common::*;

/// No sweep below may run longer than this many injections per fault kind: a bound on every
/// loop, far above what the operations here perform.
const MAX_STEPS: u64 = 3000;

fn store_options(fs: &FaultStorage) -> Options {
    // Small WAL segments, so that the archive holds several and PITR replays across them.
    options(fs, SyncMode::Always, RecoveryMode::TolerateTornTail, 4096, Prealloc::Off)
}

fn commit_all(e: &Engine, steps: &[Step], history: &mut History) {
    for s in steps {
        if let Step::Commit(ops) = s {
            history.acknowledge(e.commit(ops).expect("commit"), ops.clone());
        }
    }
}

/// A closed store at `/store` whose every byte is durable: commits, a full snapshot at the
/// first third, commits, a second full snapshot, commits after it (so every kind of restore
/// replays WAL). Returns the storage and the committed history.
fn base_store() -> (FaultStorage, History) {
    let steps = workload(91, WorkloadShape { commits: 36, checkpoint_pct: 0, reopen_pct: 0, big_pct: 10 });
    let fs = FaultStorage::new();
    let e = Engine::open(dir(), store_options(&fs)).expect("open");
    let mut history = History::default();
    commit_all(&e, &steps[..12], &mut history);
    wait_for_indexes(&e);
    snapshot::take(&e, false).expect("first snapshot");
    commit_all(&e, &steps[12..26], &mut history);
    wait_for_indexes(&e);
    snapshot::take(&e, false).expect("second snapshot");
    commit_all(&e, &steps[26..], &mut history);
    e.close().expect("close");
    drop(e);
    let base = fs.crash(CrashKind::DropUnsynced);
    assert_eq!(snapshot::list_on(&base, dir()).expect("list").len(), 2);
    (base, history)
}

/// With every graph complete, what a checkpoint writes does not depend on thread timing.
fn wait_for_indexes(e: &Engine) {
    for c in e.collections().expect("collections") {
        e.wait_for_index(&c.name).expect("index");
    }
}

/// An independent copy of a storage whose bytes are all durable.
fn fork(fs: &FaultStorage) -> FaultStorage {
    fs.crash(CrashKind::DropUnsynced)
}

/// What a process restart sees (faults cleared) and what a power cut leaves.
fn views(fs: &FaultStorage) -> [(&'static str, FaultStorage); 2] {
    let restart = fs.clone();
    restart.clear_faults();
    [("process restart", restart), ("power cut", fs.crash(CrashKind::DropUnsynced))]
}

/// Run `attempt` with the Nth write, then the Nth fsync, failing, for every N up to the count
/// a fault-free run performs (plus a few, as background work may vary it). `attempt` gets a
/// fresh copy of the store, arms the fault itself, and reports whether it fired.
fn sweep(what: &str, dry: impl Fn() -> (u64, u64), attempt: impl Fn(FaultOp, u64, &str) -> bool) {
    let (writes, syncs) = dry();
    assert!(writes > 0 && syncs > 0, "{what}: the operation wrote nothing");
    for (op, total) in [(FaultOp::Write, writes), (FaultOp::Sync, syncs)] {
        assert!(total < MAX_STEPS, "{what}: {total} {op:?}s is past the bound");
        let mut fired = 0;
        for n in 1..=total + 2 {
            let ctx = format!("{what}: fail {op:?} #{n} of {total}");
            if attempt(op, n, &ctx) {
                fired += 1;
            }
        }
        assert!(fired as u64 >= total.saturating_sub(2), "{what} {op:?}: only {fired} of {total} faults fired");
    }
}

/// The source store opens with exactly the committed rows.
fn assert_source_intact(view: &FaultStorage, history: &History, ctx: &str) {
    let e = open_with(view, RecoveryMode::TolerateTornTail).unwrap_or_else(|err| panic!("{ctx}: source does not open: {err}"));
    assert_eq!(e.last_seq(), history.len(), "{ctx}: source lost commits");
    assert_state(&e, &history.model_at(history.len()), &format!("{ctx}: source rows"));
}

fn verify_snapshot(fs: &FaultStorage, s: &SnapshotInfo, ctx: &str) {
    let sdir = snapshot::snapshot_dir(dir(), &s.id);
    let head = scrub::verify_file_on(fs, &sdir.join(SNAPSHOT_FILE), FileKind::SnapshotManifest, None, &ScanControl::new(None));
    assert!(head.findings.is_empty(), "{ctx}: snapshot {} manifest: {:?}", s.id, head.findings);
    for f in &s.files {
        let (bytes, xxh3) =
            snapshot::hash_file(fs, &sdir.join(&f.path)).unwrap_or_else(|err| panic!("{ctx}: snapshot {} file {}: {err}", s.id, f.path));
        assert_eq!((bytes, &xxh3), (f.bytes, &f.xxh3), "{ctx}: snapshot {} file {} does not verify", s.id, f.path);
    }
}

/// Listed snapshots are the ones before, plus the new one only if it is complete; each verifies.
fn assert_snapshots(view: &FaultStorage, before: &[String], new_id: Option<&str>, must_list_new: bool, ctx: &str) {
    let listed = snapshot::list_on(view, dir()).unwrap_or_else(|err| panic!("{ctx}: list: {err}"));
    let ids: Vec<&str> = listed.iter().map(|s| s.id.as_str()).collect();
    let mut allowed: Vec<&str> = before.iter().map(String::as_str).collect();
    assert!(ids.iter().take(before.len()).copied().eq(allowed.iter().copied()), "{ctx}: earlier snapshots changed: {ids:?}");
    allowed.extend(new_id);
    assert!(ids.iter().all(|id| allowed.contains(id)), "{ctx}: unexpected snapshots {ids:?}");
    if must_list_new {
        assert_eq!(ids.len(), before.len() + 1, "{ctx}: a snapshot reported taken is not listed");
    }
    for s in &listed {
        verify_snapshot(view, s, ctx);
    }
}

fn snapshot_sweep(incremental: bool) {
    let (base, history) = base_store();
    let before: Vec<String> = snapshot::list_on(&base, dir()).expect("list").into_iter().map(|s| s.id).collect();
    let kind = if incremental { "incremental" } else { "full" };
    let new_id = format!("{:020}-{kind}", history.len());
    let open = |fs: &FaultStorage| Engine::open(dir(), store_options(fs)).expect("open the source");
    let dry = || {
        let fs = fork(&base);
        let e = open(&fs);
        let (w, s) = fs.counts();
        let info = snapshot::take(&e, incremental).expect("fault-free snapshot");
        assert_eq!(info.id, new_id);
        let (w2, s2) = fs.counts();
        (w2 - w, s2 - s)
    };
    sweep(&format!("{kind} snapshot"), dry, |op, n, ctx| {
        let fs = fork(&base);
        let e = open(&fs);
        fs.fail_at(op, n);
        let r = snapshot::take(&e, incremental);
        let fired = fs.fault_fired();
        assert!(fired || r.is_ok(), "{ctx}: failed without a fault: {:?}", r.err());
        assert!(!fired || r.is_err(), "{ctx}: reported success although a write or fsync failed");
        drop(e);
        for (what, view) in views(&fs) {
            let ctx = format!("{ctx}, {what}");
            assert_snapshots(&view, &before, Some(&new_id), r.is_ok(), &ctx);
            assert_source_intact(&view, &history, &ctx);
        }
        fired
    });
}

#[test]
fn snapshot_fault_at_every_write_or_fsync_lists_no_half_snapshot() {
    snapshot_sweep(false);
}

#[test]
fn incremental_snapshot_fault_at_every_write_or_fsync_lists_no_half_snapshot() {
    snapshot_sweep(true);
}

/// The restored store at `target` opens with the model at `seq`.
fn assert_restored(view: &FaultStorage, target: &Path, history: &History, seq: u64, ctx: &str) {
    let e = Engine::open(target, options(view, SyncMode::Always, RecoveryMode::AbsoluteConsistency, 4096, Prealloc::Off))
        .unwrap_or_else(|err| panic!("{ctx}: restored store does not open: {err}"));
    assert_eq!(e.last_seq(), seq, "{ctx}: restored seq");
    assert_state(&e, &history.model_at(seq), &format!("{ctx}: restored rows"));
}

#[test]
fn restore_fault_at_every_write_or_fsync_leaves_no_target_and_the_source_unchanged() {
    let (base, history) = base_store();
    let snaps = snapshot::list_on(&base, dir()).expect("list");
    let source_files = files(&base);
    let target = PathBuf::from("/restored");
    // From the newest snapshot, from the older one, and from the empty store; WAL after each.
    let cases =
        [(RestoreTarget::Latest, history.len()), (RestoreTarget::Seq(snaps[0].seq + 5), snaps[0].seq + 5), (RestoreTarget::Seq(4), 4)];
    for (to, seq) in cases {
        let restore = |fs: &FaultStorage| pitr::restore_on(Arc::new(fs.clone()), dir(), &target, to);
        let dry = || {
            let fs = fork(&base);
            let (w, s) = fs.counts();
            let r = restore(&fs).expect("fault-free restore");
            assert_eq!(r.seq, seq);
            let (w2, s2) = fs.counts();
            (w2 - w, s2 - s)
        };
        sweep(&format!("restore to {to:?}"), dry, |op, n, ctx| {
            let fs = fork(&base);
            fs.fail_at(op, n);
            let r = restore(&fs);
            let fired = fs.fault_fired();
            assert!(fired || r.is_ok(), "{ctx}: failed without a fault: {:?}", r.as_ref().err());
            for (what, view) in views(&fs) {
                let ctx = format!("{ctx}, {what}");
                match &r {
                    Ok(_) => assert_restored(&view, &target, &history, seq, &ctx),
                    Err(_) => assert!(!view.exists(&target), "{ctx}: a failed restore left {}", target.display()),
                }
                assert_eq!(files(&view), source_files, "{ctx}: restore changed the source");
                if what == "process restart" && r.is_err() {
                    // A rerun starts afresh over what the failed one left.
                    pitr::restore_on(Arc::new(view.clone()), dir(), &target, to).unwrap_or_else(|err| panic!("{ctx}: rerun: {err}"));
                    assert_restored(&view, &target, &history, seq, &format!("{ctx}: rerun"));
                }
            }
            fired
        });
    }
}

/// The manifest's first checkpoint data file that the newest snapshot also holds:
/// (relative name, kind, what the manifest records, the snapshot's copy).
fn repairable_file(fs: &FaultStorage) -> (String, FileKind, Expected, PathBuf) {
    let snaps = snapshot::list_on(fs, dir()).expect("list");
    let newest = snaps.last().expect("a snapshot");
    let m = cairn_core::manifest::load(fs, dir()).expect("manifest").expect("a manifest");
    for c in &m.collections {
        for s in &c.data_files {
            let rel = format!("{DATA_DIR}/{}", s.file);
            if newest.files.iter().any(|f| f.path == rel) {
                let exp = Expected { bytes: s.bytes, xxh3: scrub::parse_xxh3(&s.xxh3).expect("hex") };
                return (rel.clone(), FileKind::Segment, exp, snapshot::snapshot_dir(dir(), &newest.id).join(&rel));
            }
        }
    }
    panic!("no data file of the manifest is in the newest snapshot");
}

/// Replace the file at `rel` by a damaged copy (a new file, as bit rot under a rewrite would
/// leave; the snapshot's hard link keeps the good bytes). Returns (good, damaged) bytes.
fn damage(fs: &FaultStorage, rel: &str) -> (Vec<u8>, Vec<u8>) {
    let path = dir().join(rel);
    let good = fs.read(&path).expect("read");
    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x08;
    let tmp = dir().join(format!("{rel}.damage"));
    write_synced(fs, &tmp, &bad).expect("write");
    fs.rename(&tmp, &path).expect("rename");
    fs.sync_dir(&dir().join(DATA_DIR)).expect("sync");
    (good, bad)
}

/// Files under `quarantine/` that are not notes, with their bytes.
fn quarantined(fs: &FaultStorage) -> Vec<(String, Vec<u8>)> {
    let q = dir().join(QUARANTINE_DIR);
    let names = fs.list(&q).unwrap_or_default();
    names.into_iter().filter(|n| !n.ends_with(NOTE_SUFFIX)).map(|n| (n.clone(), fs.read(&q.join(&n)).expect("read quarantined"))).collect()
}

/// The damaged bytes are at `rel` or in quarantine, and `rel` holds the damaged or the good bytes.
fn assert_damage_kept(view: &FaultStorage, rel: &str, good: &[u8], bad: &[u8], ctx: &str) {
    let now = view.read(&dir().join(rel)).unwrap_or_else(|err| panic!("{ctx}: {rel} is gone: {err}"));
    assert!(now == good || now == bad, "{ctx}: {rel} holds neither the damaged nor the good bytes");
    let kept = now == bad || quarantined(view).iter().any(|(_, b)| b == bad);
    assert!(kept, "{ctx}: the damaged bytes of {rel} are lost");
}

#[test]
fn install_copy_fault_at_every_write_or_fsync_keeps_the_damaged_file() {
    let (base, history) = base_store();
    let (rel, kind, exp, source) = repairable_file(&base);
    let (good, bad) = damage(&base, &rel);
    let found = scrub::verify_file_on(&base, &dir().join(&rel), kind, Some(exp), &ScanControl::new(None));
    assert!(!found.findings.is_empty(), "the damage must be found");
    let note = scrub::note(&rel, &found, Some(exp));
    let install = |fs: &FaultStorage| scrub::install_copy_on(fs, dir(), &rel, &source, kind, exp, &note);
    let dry = || {
        let fs = fork(&base);
        let (w, s) = fs.counts();
        let r = install(&fs).expect("fault-free install");
        assert!(matches!(r, Install::Installed { quarantined: Some(_) }), "{r:?}");
        let (w2, s2) = fs.counts();
        (w2 - w, s2 - s)
    };
    sweep("install_copy", dry, |op, n, ctx| {
        let fs = fork(&base);
        fs.fail_at(op, n);
        let r = install(&fs);
        let fired = fs.fault_fired();
        let installed = matches!(r, Ok(Install::Installed { .. }));
        assert!(fired || installed, "{ctx}: not installed without a fault: {r:?}");
        for (what, view) in views(&fs) {
            let ctx = format!("{ctx}, {what}");
            assert_damage_kept(&view, &rel, &good, &bad, &ctx);
            if installed {
                assert_eq!(view.read(&dir().join(&rel)).expect("read"), good, "{ctx}: an install reported done is not durable");
            }
            // Damaged or repaired, the store opens with every committed row (the WAL archive
            // still holds what a damaged checkpoint file lost).
            assert_source_intact(&view, &history, &ctx);
        }
        fired
    });
}

#[test]
fn rebuild_live_fault_at_every_write_or_fsync_keeps_the_damaged_file() {
    let (base, history) = base_store();
    let (rel, kind, exp, _) = repairable_file(&base);
    let open = |fs: &FaultStorage| Engine::open(dir(), store_options(fs)).expect("open the source");
    // The damage happens while the store is open, after its files were verified on open.
    let damaged_open = |fs: &FaultStorage| {
        let e = open(fs);
        wait_for_indexes(&e);
        let (_, bad) = damage(fs, &rel);
        let found = scrub::verify_file_on(fs, &dir().join(&rel), kind, Some(exp), &ScanControl::new(None));
        assert!(!found.findings.is_empty(), "the damage must be found");
        (e, bad, scrub::note(&rel, &found, Some(exp)))
    };
    let dry = || {
        let fs = fork(&base);
        let (e, _, note) = damaged_open(&fs);
        let (w, s) = fs.counts();
        let r = scrub::rebuild_live(&e, &rel, &note).expect("fault-free rebuild");
        assert!(matches!(r, Rebuild::Rebuilt { quarantined: Some(_), .. }), "{r:?}");
        let (w2, s2) = fs.counts();
        (w2 - w, s2 - s)
    };
    sweep("rebuild_live", dry, |op, n, ctx| {
        let fs = fork(&base);
        let (e, bad, note) = damaged_open(&fs);
        fs.fail_at(op, n);
        let r = scrub::rebuild_live(&e, &rel, &note);
        let fired = fs.fault_fired();
        let rebuilt = matches!(r, Ok(Rebuild::Rebuilt { .. }));
        assert!(fired || rebuilt, "{ctx}: not rebuilt without a fault: {r:?}");
        drop(e);
        for (what, view) in views(&fs) {
            let ctx = format!("{ctx}, {what}");
            let now = view.read(&dir().join(&rel)).ok();
            // The rebuild may replace the file under the same name or drop the name for a new one.
            let kept = now.as_deref() == Some(&bad[..]) || quarantined(&view).iter().any(|(_, b)| *b == bad);
            assert!(kept, "{ctx}: the damaged bytes of {rel} are lost");
            if rebuilt {
                assert!(quarantined(&view).iter().any(|(_, b)| *b == bad), "{ctx}: a rebuild reported done did not durably quarantine");
                assert_ne!(now.as_deref(), Some(&bad[..]), "{ctx}: a rebuild reported done left the damage in place");
            }
            assert_source_intact(&view, &history, &ctx);
        }
        fired
    });
}

/// Every file each snapshot lists, with its bytes.
fn snapshot_files(fs: &FaultStorage) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for s in snapshot::list_on(fs, dir()).expect("list") {
        let sdir = snapshot::snapshot_dir(dir(), &s.id);
        for f in &s.files {
            let p = sdir.join(&f.path);
            out.insert(p.clone(), fs.read(&p).expect("snapshot file"));
        }
    }
    out
}

fn identities(fs: &FaultStorage, paths: impl IntoIterator<Item = PathBuf>) -> HashSet<FileId> {
    paths.into_iter().map(|p| fs.open_read(&p).and_then(|f| f.identity()).expect("identity")).collect()
}

#[test]
fn linked_restore_shares_snapshot_files_and_writes_to_it_never_reach_the_source() {
    let (base, history) = base_store();
    let before = (files(&base), snapshot_files(&base));
    let source_ids = identities(&base, before.1.keys().cloned());
    let target = PathBuf::from("/linked");
    let r = pitr::restore_placed(Arc::new(base.clone()), dir(), &target, RestoreTarget::Latest, Placement::Link, None).expect("restore");
    assert!(r.linked_files + r.cloned_files > 0 && r.copied_files == 0, "{r:?}");
    assert_restored(&base, &target, &history, history.len(), "linked restore");
    let data = |t: &Path| base.list(&t.join(DATA_DIR)).expect("data dir").into_iter().map(|n| t.join(DATA_DIR).join(n)).collect::<Vec<_>>();
    assert!(!identities(&base, data(&target)).is_disjoint(&source_ids), "no file of the linked restore shares the source's inode");
    // Writes, deletes and a checkpoint on the restored store: it replaces and unlinks the
    // linked files, and never writes into them.
    // The base store's workload continued: its first 36 commits are the ones already in it.
    let steps = workload(91, WorkloadShape { commits: 48, checkpoint_pct: 0, reopen_pct: 0, big_pct: 10 });
    let e = Engine::open(&target, store_options(&base)).expect("open the restored store");
    let commits = steps.iter().filter_map(|s| if let Step::Commit(ops) = s { Some(ops) } else { None });
    for ops in commits.skip(history.len() as usize) {
        e.commit(ops).expect("commit");
    }
    checkpoint(&e).expect("checkpoint");
    e.close().expect("close");
    assert_eq!((files(&base), snapshot_files(&base)), before, "a write to the linked restore changed the source");
    assert_source_intact(&base, &history, "after writes to the linked restore");
    // `Copy`: nothing shared.
    let copied = PathBuf::from("/copied");
    let r =
        pitr::restore_placed(Arc::new(base.clone()), dir(), &copied, RestoreTarget::Latest, Placement::Copy, None).expect("restore copy");
    assert!(r.linked_files + r.cloned_files == 0 && r.copied_files > 0, "{r:?}");
    assert!(identities(&base, data(&copied)).is_disjoint(&source_ids), "a copied restore shares an inode with the source");
    assert_restored(&base, &copied, &history, history.len(), "copied restore");
}
