//! Golden fixtures: a small store written by today's format (test/fixtures/golden/v1/), opened,
//! read, queried, restored and verified file by file by every later build, plus hand-corrupted
//! copies of it that must give the outcomes their `case.json` names. A format change that breaks
//! stores written today fails here; such a change needs a new format version that still reads
//! these files, not a regenerated fixture.
//!
//! `regenerate_golden_fixture` (ignored) writes the fixture; see test/fixtures/golden/README.md.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use cairn_core::batch::{CollectionSpec, Op};
use cairn_core::checksum::xxh3;
use cairn_core::datafile::{self, DataFileHeader, DataFileWriter, DataRecord};
use cairn_core::layout::{
    ARCHIVE_DIR, DATA_DIR, MANIFEST_COPY_FILE, MANIFEST_FILE, NOTE_SUFFIX, QUARANTINE_DIR, SNAPSHOTS_DIR, SNAPSHOT_FILE, WAL_DIR,
};
use cairn_core::manifest::{self, decode_framed, Manifest};
use cairn_core::pitr::{self, RestoreTarget};
use cairn_core::quarantine::QuarantineNote;
use cairn_core::scrub::{parse_xxh3, verify_file, Expected, FileKind, ScanControl};
use cairn_core::snapshot::{self, SnapshotInfo, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
use cairn_core::storage::OsStorage;
use cairn_core::wal::writer::Prealloc;
use cairn_core::{Engine, Error, Metric, Options, RecoveryMode, SyncMode};
use common::{apply, read_state, History, Model, ModelCollection, Rng};
use serde_json::{json, Value};

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/golden/v1")
}

/// Small segments (so the fixture has several) and no preallocation (so no file holds
/// megabytes of zeros).
fn options(recovery: RecoveryMode) -> Options {
    Options { sync: SyncMode::Always, recovery, segment_bytes: 2048, prealloc: Prealloc::Off, ..Options::default() }
}

fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create dir");
    for entry in fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&src, &dst);
        } else {
            fs::copy(&src, &dst).expect("copy file");
        }
    }
}

/// A fresh temporary copy of the golden store with a case's files laid over it (git keeps no
/// empty directories, so those are made again from expected.json).
fn store_copy(tag: &str, case: Option<&str>) -> PathBuf {
    let root = fixture_root();
    let dir = std::env::temp_dir().join(format!("cairn-golden-{}-{tag}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    copy_tree(&root.join("store"), &dir);
    for d in read_json(&root.join("expected.json"))["empty_dirs"].as_array().expect("empty_dirs") {
        fs::create_dir_all(dir.join(d.as_str().expect("dir name"))).expect("create empty dir");
    }
    if let Some(case) = case {
        copy_tree(&root.join("corrupt").join(case).join("files"), &dir);
    }
    dir
}

fn metric_of(name: &str) -> Metric {
    Metric::parse(name).unwrap_or_else(|| panic!("unknown metric {name}"))
}

/// expected.json's `{ name: { dim, metric, rows: [{ id, vector, metadata }] } }` as a model,
/// with metadata as compact JSON text.
fn model_from_json(v: &Value) -> Model {
    let mut model = Model::new();
    for (name, c) in v.as_object().expect("collections object") {
        let mut rows = BTreeMap::new();
        for r in c["rows"].as_array().expect("rows") {
            let vector = r["vector"].as_array().expect("vector").iter().map(|x| x.as_f64().expect("number") as f32).collect();
            rows.insert(r["id"].as_str().expect("id").to_string(), (vector, r["metadata"].to_string()));
        }
        let dim = c["dim"].as_u64().expect("dim") as u32;
        model.insert(name.clone(), ModelCollection { dim, metric: metric_of(c["metric"].as_str().expect("metric")), rows });
    }
    model
}

fn model_to_json(model: &Model) -> Value {
    let mut out = serde_json::Map::new();
    for (name, c) in model {
        let rows: Vec<Value> = c
            .rows
            .iter()
            .map(
                |(id, (v, meta))| json!({ "id": id, "vector": v, "metadata": serde_json::from_str::<Value>(meta).expect("metadata JSON") }),
            )
            .collect();
        out.insert(name.clone(), json!({ "dim": c.dim, "metric": c.metric.as_str(), "rows": rows }));
    }
    Value::Object(out)
}

/// The state an engine serves, with metadata re-serialised the way `model_from_json` does.
fn served(e: &Engine) -> Model {
    let mut m = read_state(e);
    for c in m.values_mut() {
        for row in c.rows.values_mut() {
            row.1 = serde_json::from_str::<Value>(&row.1).expect("stored metadata is JSON").to_string();
        }
    }
    m
}

fn assert_same(got: &Model, want: &Model, ctx: &str) {
    common::assert_model_eq(got, want, ctx);
}

// ---------------------------------------------------------------------------------------------
// The store opens, and serves exactly what was written
// ---------------------------------------------------------------------------------------------

#[test]
fn golden_store_opens_with_every_row_and_answers_queries() {
    let expected = read_json(&fixture_root().join("expected.json"));
    let dir = store_copy("open", None);
    let e = Engine::open(&dir, options(RecoveryMode::AbsoluteConsistency)).expect("the golden store opens, even in absolute-consistency");
    let report = e.recovery_report();
    assert!(
        report.torn_tail.is_none() && report.skipped.is_empty() && report.repaired_records.is_empty() && report.manifest_restored.is_none(),
        "{report:?}"
    );
    assert!(report.index_rebuilds.is_empty(), "every persisted graph loads: {:?}", report.index_rebuilds);
    assert_eq!(e.last_seq(), expected["last_seq"].as_u64().expect("last_seq"));
    assert_eq!(report.checkpoint_seq, expected["checkpoint_seq"].as_u64().expect("checkpoint_seq"));
    assert_same(&served(&e), &model_from_json(&expected["collections"]), "golden store");
    for info in e.collections().expect("collections") {
        let c = &expected["collections"][&info.name];
        assert_eq!(
            (info.m as u64, info.ef_construction as u64),
            (c["m"].as_u64().expect("m"), c["ef_construction"].as_u64().expect("ef")),
            "{}",
            info.name
        );
    }
    for q in expected["queries"].as_array().expect("queries") {
        let collection = q["collection"].as_str().expect("collection");
        let vector: Vec<f32> = q["vector"].as_array().expect("vector").iter().map(|x| x.as_f64().expect("number") as f32).collect();
        let k = q["k"].as_u64().expect("k") as usize;
        let want: Vec<&str> = q["ids"].as_array().expect("ids").iter().map(|x| x.as_str().expect("id")).collect();
        let exact: Vec<String> = e.query_exact(collection, &vector, k, None).expect("exact query").hits.into_iter().map(|h| h.0).collect();
        let graph: Vec<String> = e.query(collection, &vector, k, 64, None).expect("graph query").hits.into_iter().map(|h| h.0).collect();
        assert_eq!(exact, want, "exact query on {collection}");
        assert_eq!(graph, want, "HNSW query on {collection}");
    }
    // A write on top of the old files works, and so does the checkpoint that rewrites them.
    let seq = e.commit(&[Op::Delete { collection: "docs".into(), id: "doc-00".into() }]).expect("write");
    e.checkpoint().expect("checkpoint");
    assert_eq!(e.get("docs", "doc-00").expect("get"), None);
    assert_eq!(seq, e.last_seq());
    e.close().expect("close");
    let _ = fs::remove_dir_all(&dir);
}

/// Every snapshot, and a point between them, restores to the state recorded at its seq: the
/// snapshot manifests, snapshot files and archived WAL segments are all read.
#[test]
fn golden_store_restores_to_every_recorded_point() {
    let expected = read_json(&fixture_root().join("expected.json"));
    let source = store_copy("restore", None);
    let infos = snapshot::list(&source).expect("snapshots list");
    let kinds: Vec<&str> = infos.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds, ["full", "incremental"]);
    for point in expected["points_in_time"].as_array().expect("points_in_time") {
        let seq = point["seq"].as_u64().expect("seq");
        let target = source.with_file_name(format!("{}-at-{seq}", source.file_name().and_then(|n| n.to_str()).unwrap_or("x")));
        let _ = fs::remove_dir_all(&target);
        let result = pitr::restore(&source, &target, RestoreTarget::Seq(seq)).unwrap_or_else(|e| panic!("restore to {seq}: {e}"));
        assert_eq!(result.seq, seq);
        assert_eq!(result.snapshot.as_deref(), point["snapshot"].as_str(), "snapshot used for seq {seq}");
        let e = Engine::open(&target, options(RecoveryMode::AbsoluteConsistency)).expect("restored store opens");
        assert_same(&served(&e), &model_from_json(&point["collections"]), &format!("restored to seq {seq}"));
        e.close().expect("close");
        let _ = fs::remove_dir_all(&target);
    }
    let _ = fs::remove_dir_all(&source);
}

// ---------------------------------------------------------------------------------------------
// Every file verifies
// ---------------------------------------------------------------------------------------------

fn expected_of(bytes: u64, hex: &str) -> Expected {
    Expected { bytes, xxh3: parse_xxh3(hex).expect("hex xxh3") }
}

fn snapshot_info(path: &Path) -> SnapshotInfo {
    let buf = fs::read(path).expect("read SNAPSHOT");
    let body = decode_framed(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, &buf, path).expect("SNAPSHOT framing");
    serde_json::from_slice(body).expect("SNAPSHOT body")
}

fn files_under(dir: &Path, rel: &str, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir.join(rel)).expect("read dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        if entry.file_type().expect("file type").is_dir() {
            files_under(dir, &child, out);
        } else {
            out.push(child);
        }
    }
}

/// How scrub checks each file of the store, with what the manifests recorded for it. Panics
/// on a file it does not know: a new kind of file needs a line here and in the fixture.
fn verification_plan(dir: &Path) -> Vec<(String, FileKind, Option<Expected>)> {
    let m: Manifest =
        manifest::decode(&fs::read(dir.join(MANIFEST_FILE)).expect("MANIFEST"), Path::new(MANIFEST_FILE)).expect("MANIFEST decodes");
    let mut recorded: BTreeMap<String, Expected> = BTreeMap::new();
    for c in &m.collections {
        for s in c.data_files.iter().chain(c.index.iter()) {
            recorded.insert(format!("{DATA_DIR}/{}", s.file), expected_of(s.bytes, &s.xxh3));
        }
    }
    let mut files = Vec::new();
    files_under(dir, "", &mut files);
    files.sort();
    for snap in files.iter().filter(|f| f.ends_with(&format!("/{SNAPSHOT_FILE}"))) {
        let prefix = &snap[..snap.len() - SNAPSHOT_FILE.len()];
        for f in snapshot_info(&dir.join(snap)).files {
            recorded.insert(format!("{prefix}{}", f.path), expected_of(f.bytes, &f.xxh3));
        }
    }
    let last_live_wal = files.iter().filter(|f| f.starts_with(&format!("{WAL_DIR}/"))).max().cloned();
    let mut plan = Vec::new();
    for f in files {
        let name = f.rsplit('/').next().unwrap_or_default();
        let kind = if f.starts_with(&format!("{QUARANTINE_DIR}/")) {
            continue; // checked by golden_store_quarantine_entry_is_kept_with_its_note
        } else if name == MANIFEST_FILE || name == MANIFEST_COPY_FILE {
            FileKind::Manifest
        } else if name == SNAPSHOT_FILE {
            FileKind::SnapshotManifest
        } else if name.ends_with(".seg") {
            FileKind::SegmentDeep
        } else if name.ends_with(".hnsw") {
            FileKind::Blob
        } else if name.ends_with(".wal") && Some(&f) == last_live_wal.as_ref() {
            FileKind::WalTail
        } else if name.ends_with(".wal") {
            FileKind::Wal
        } else {
            panic!("the golden store holds a file no verifier knows: {f}");
        };
        let exp = recorded.get(&f).copied();
        if kind == FileKind::Blob || kind == FileKind::SegmentDeep {
            assert!(exp.is_some(), "{f} is named by no manifest");
        }
        plan.push((f, kind, exp));
    }
    plan
}

#[test]
fn golden_store_files_all_verify_and_cover_every_file_type() {
    let dir = fixture_root().join("store");
    let plan = verification_plan(&dir);
    let ctl = ScanControl::new(None);
    for (rel, kind, exp) in &plan {
        let check = verify_file(&dir.join(rel), *kind, *exp, &ctl);
        assert!(check.findings.is_empty(), "{rel} ({kind:?}): {:?}", check.findings);
    }
    // Every file type the format has is in the fixture.
    let has = |pred: &dyn Fn(&str) -> bool| plan.iter().any(|(f, _, _)| pred(f));
    let version_of = |f: &str| {
        let b = fs::read(dir.join(f)).expect("read segment");
        datafile::check_header(&b).expect("segment header").version
    };
    let segs: Vec<&String> = plan.iter().map(|p| &p.0).filter(|f| f.starts_with(&format!("{DATA_DIR}/")) && f.ends_with(".seg")).collect();
    assert!(segs.iter().any(|f| version_of(f) == 1), "a version 1 data file is live");
    assert!(segs.iter().any(|f| version_of(f) == 2), "a version 2 data file is live");
    assert!(segs.iter().any(|f| fs::read(dir.join(f)).expect("read")[33] == datafile::KIND_DELTA), "a delta data file is live");
    assert!(has(&|f| f.starts_with(&format!("{DATA_DIR}/")) && f.ends_with(".hnsw")), "a graph file");
    assert!(plan.iter().filter(|(f, _, _)| f.starts_with(&format!("{WAL_DIR}/"))).count() >= 2, "several live WAL segments");
    assert!(has(&|f| f.starts_with(&format!("{ARCHIVE_DIR}/"))), "archived WAL segments");
    assert!(has(&|f| f == MANIFEST_COPY_FILE), "MANIFEST.copy");
    assert!(has(&|f| f.starts_with(SNAPSHOTS_DIR) && f.contains("-full/") && f.ends_with(SNAPSHOT_FILE)), "a full snapshot");
    assert!(has(&|f| f.starts_with(SNAPSHOTS_DIR) && f.contains("-incremental/wal/")), "an incremental snapshot with WAL");
    assert_eq!(fs::read(dir.join(MANIFEST_FILE)).expect("MANIFEST"), fs::read(dir.join(MANIFEST_COPY_FILE)).expect("copy"));
}

#[test]
fn golden_store_quarantine_entry_is_kept_with_its_note() {
    let dir = fixture_root().join("store").join(QUARANTINE_DIR);
    let names: Vec<String> =
        fs::read_dir(&dir).expect("quarantine dir").map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
    let notes: Vec<&String> = names.iter().filter(|n| n.ends_with(NOTE_SUFFIX)).collect();
    assert!(!notes.is_empty(), "a quarantine entry");
    for note_name in notes {
        let note: QuarantineNote = serde_json::from_slice(&fs::read(dir.join(note_name)).expect("note")).expect("the note parses");
        let kept = dir.join(&note_name[..note_name.len() - NOTE_SUFFIX.len()]);
        assert_eq!(note.bytes, fs::metadata(&kept).expect("the quarantined bytes are kept").len());
        assert_eq!(note.file, MANIFEST_FILE);
        // What was kept is the damaged manifest: scrub still finds the damage in it.
        let check = verify_file(&kept, FileKind::Manifest, None, &ScanControl::new(None));
        assert!(!check.findings.is_empty(), "the quarantined manifest verifies clean");
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-corrupted copies
// ---------------------------------------------------------------------------------------------

fn case(name: &str) -> Value {
    read_json(&fixture_root().join("corrupt").join(name).join("case.json"))
}

fn location(e: &Error) -> (PathBuf, u64) {
    common::corruption_location(e)
}

#[test]
fn golden_bit_flip_in_data_file_is_located_refused_or_repaired() {
    let c = case("bit-flip-in-data-file");
    let (file, offset, id) = (c["file"].as_str().expect("file"), c["offset"].as_u64().expect("offset"), c["id"].as_str().expect("id"));
    let expected = read_json(&fixture_root().join("expected.json"));
    let dir = store_copy("bitflip", Some("bit-flip-in-data-file"));
    // Scrub names the record.
    let check = verify_file(&dir.join(file), FileKind::SegmentDeep, None, &ScanControl::new(None));
    assert_eq!(check.findings.len(), 1, "{:?}", check.findings);
    assert_eq!((check.findings[0].offset, check.findings[0].id.as_deref()), (offset, Some(id)));
    // absolute-consistency refuses, naming file and offset.
    let err = Engine::open(&dir, options(RecoveryMode::AbsoluteConsistency)).err().expect("absolute-consistency refuses a damaged record");
    assert_eq!(location(&err), (dir.join(file), offset));
    // The default repairs the record from the WAL and serves every row.
    let e = Engine::open(&dir, options(RecoveryMode::TolerateTornTail)).expect("default open repairs");
    let repairs: Vec<(&str, &str, u64)> =
        e.recovery_report().repaired_records.iter().map(|r| (r.id.as_str(), r.file.as_str(), r.offset)).collect();
    assert_eq!(repairs, [(id, file, offset)]);
    assert_same(&served(&e), &model_from_json(&expected["collections"]), "after repair");
    e.close().expect("close");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn golden_torn_wal_tail_is_truncated() {
    let c = case("torn-wal-tail");
    let (file, offset) = (c["file"].as_str().expect("file"), c["offset"].as_u64().expect("offset"));
    let expected = read_json(&fixture_root().join("expected.json"));
    let dir = store_copy("torn", Some("torn-wal-tail"));
    // A sealed segment ending so would be damage; the last one may tear.
    assert!(verify_file(&dir.join(file), FileKind::WalTail, None, &ScanControl::new(None)).findings.is_empty());
    let sealed = verify_file(&dir.join(file), FileKind::Wal, None, &ScanControl::new(None));
    assert_eq!(sealed.findings.iter().map(|f| f.offset).collect::<Vec<_>>(), [offset]);
    let err = Engine::open(&dir, options(RecoveryMode::AbsoluteConsistency)).err().expect("absolute-consistency refuses a torn tail");
    assert_eq!(location(&err).0, dir.join(file));
    let e = Engine::open(&dir, options(RecoveryMode::TolerateTornTail)).expect("default open truncates");
    let torn = e.recovery_report().torn_tail.clone().expect("a torn tail is reported");
    assert_eq!((torn.offset, Path::new(&torn.file).file_name()), (offset, Path::new(file).file_name()));
    assert_eq!(e.last_seq(), c["last_seq"].as_u64().expect("last_seq"));
    let mut want = model_from_json(&expected["collections"]);
    for gone in c["absent"].as_array().expect("absent") {
        let (coll, id) = (gone[0].as_str().expect("collection"), gone[1].as_str().expect("id"));
        want.get_mut(coll).expect("collection").rows.remove(id);
    }
    assert_same(&served(&e), &want, "after truncating the torn tail");
    assert_eq!(fs::metadata(dir.join(file)).expect("segment").len(), offset, "truncated at the torn record");
    e.close().expect("close");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn golden_damaged_manifest_is_recovered_from_its_copy() {
    let c = case("damaged-manifest");
    let offset = c["offset"].as_u64().expect("offset");
    let expected = read_json(&fixture_root().join("expected.json"));
    let dir = store_copy("manifest", Some("damaged-manifest"));
    let check = verify_file(&dir.join(MANIFEST_FILE), FileKind::Manifest, None, &ScanControl::new(None));
    assert_eq!(check.findings.iter().map(|f| f.offset).collect::<Vec<_>>(), [offset]);
    assert!(verify_file(&dir.join(MANIFEST_COPY_FILE), FileKind::Manifest, None, &ScanControl::new(None)).findings.is_empty());
    let err =
        Engine::open(&dir, options(RecoveryMode::AbsoluteConsistency)).err().expect("absolute-consistency refuses a damaged manifest");
    assert_eq!(location(&err), (dir.join(MANIFEST_FILE), offset));
    let e = Engine::open(&dir, options(RecoveryMode::TolerateTornTail)).expect("default open uses the copy");
    assert!(e.recovery_report().manifest_restored.is_some());
    assert!(e.recovery_report().quarantined.iter().any(|q| q.file == MANIFEST_FILE));
    assert_eq!(e.last_seq(), expected["last_seq"].as_u64().expect("last_seq"));
    assert_same(&served(&e), &model_from_json(&expected["collections"]), "after restoring the manifest");
    e.close().expect("close");
    assert_eq!(
        fs::read(dir.join(MANIFEST_FILE)).expect("MANIFEST"),
        fs::read(dir.join(MANIFEST_COPY_FILE)).expect("copy"),
        "both rewritten"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn golden_bit_flip_in_archived_wal_is_located_and_its_snapshot_copy_is_intact() {
    let c = case("bit-flip-in-archived-wal");
    let (file, offset, copy) =
        (c["file"].as_str().expect("file"), c["offset"].as_u64().expect("offset"), c["copy"].as_str().expect("copy"));
    let expected = read_json(&fixture_root().join("expected.json"));
    let dir = store_copy("archived", Some("bit-flip-in-archived-wal"));
    let check = verify_file(&dir.join(file), FileKind::Wal, None, &ScanControl::new(None));
    assert_eq!(check.findings.iter().map(|f| f.offset).collect::<Vec<_>>(), [offset], "{:?}", check.findings);
    assert!(verify_file(&dir.join(copy), FileKind::Wal, None, &ScanControl::new(None)).findings.is_empty());
    let e = Engine::open(&dir, options(RecoveryMode::AbsoluteConsistency)).expect("open reads no archived WAL");
    assert_same(&served(&e), &model_from_json(&expected["collections"]), "with a damaged archived segment");
    e.close().expect("close");
    let _ = fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------------------------

/// Vectors of eighths: exact in f32 and in JSON, so every layer compares them bit for bit.
fn vector(rng: &mut Rng, dim: u32) -> Vec<f32> {
    (0..dim).map(|_| (rng.below(33) as f32 - 16.0) / 8.0).collect()
}

struct Writer {
    history: History,
    model: Model,
    rng: Rng,
}

impl Writer {
    fn commit(&mut self, e: &Engine, ops: Vec<Op>) -> u64 {
        let seq = e.commit(&ops).expect("commit");
        assert!(apply(&mut self.model, &ops), "the model applies what the engine took");
        self.history.acknowledge(seq, ops);
        seq
    }

    fn upserts(&mut self, e: &Engine, collection: &str, ids: &[String]) -> u64 {
        let dim = self.model[collection].dim;
        let ops = ids
            .iter()
            .map(|id| {
                let n = self.rng.below(100);
                let tag = ["red", "green", "blue"][n as usize % 3];
                let metadata = json!({ "n": n, "tag": tag, "nested": { "ok": n.is_multiple_of(2) } }).to_string();
                Op::Upsert {
                    collection: collection.into(),
                    id: id.clone(),
                    vector: vector(&mut self.rng, dim).into(),
                    metadata: metadata.into(),
                }
            })
            .collect();
        self.commit(e, ops)
    }
}

fn ids(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i:02}")).collect()
}

/// Rewrite the collection's one base file as segment format version 1 (what the writer wrote
/// before the identity checksum) and record its new size and xxh3 in both manifests.
fn rewrite_base_as_v1(store: &Path, collection: &str) {
    let mut m = manifest::load(&OsStorage, store).expect("load").expect("a manifest");
    let c = m.collections.iter_mut().find(|c| c.name == collection).expect("collection");
    assert_eq!(c.data_files.len(), 1, "one base file");
    let seg = &mut c.data_files[0];
    let path = store.join(DATA_DIR).join(&seg.file);
    let bytes = fs::read(&path).expect("read base");
    let contents = datafile::read_data_file(&bytes, &path, false).expect("valid base");
    let h = &contents.header;
    let mut w = DataFileWriter::new(&DataFileHeader {
        version: 1,
        dim: h.dim,
        collection_id: h.collection_id,
        covered_seq: h.covered_seq,
        metric: h.metric,
        kind: h.kind,
    });
    for r in &contents.records {
        match r {
            DataRecord::Upsert { id, label, vector, metadata } => w.upsert(id, *label, vector, metadata),
            DataRecord::Delete { id, label } => w.delete(id, *label),
        }
    }
    let (v1, records) = w.finish();
    fs::write(&path, &v1).expect("write v1 base");
    (seg.bytes, seg.xxh3, seg.records) = (v1.len() as u64, format!("{:016x}", xxh3(&v1)), records);
    manifest::store(&OsStorage, store, &m).expect("store manifests");
}

fn wal_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("wal dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wal"))
        .collect();
    names.sort();
    names
}

fn empty_dirs(dir: &Path, rel: &str, out: &mut Vec<String>) {
    let mut empty = true;
    for entry in fs::read_dir(dir.join(rel)).expect("read dir") {
        empty = false;
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_dir() {
            let name = entry.file_name().to_string_lossy().into_owned();
            empty_dirs(dir, &if rel.is_empty() { name } else { format!("{rel}/{name}") }, out);
        }
    }
    if empty && !rel.is_empty() {
        out.push(rel.to_string());
    }
}

/// Pretty JSON, except that a value whose compact form fits on a line (a row, a vector) is
/// written on one line: the fixture stays small and readable.
fn write_json(path: &Path, v: &Value) {
    fn put(out: &mut String, v: &Value, indent: usize) {
        let compact = v.to_string();
        if compact.len() + indent <= 130 {
            out.push_str(&compact);
            return;
        }
        let pad = " ".repeat(indent + 2);
        let (open, close, items): (char, char, Vec<(Option<&String>, &Value)>) = match v {
            Value::Array(a) => ('[', ']', a.iter().map(|x| (None, x)).collect()),
            Value::Object(o) => ('{', '}', o.iter().map(|(k, x)| (Some(k), x)).collect()),
            _ => {
                out.push_str(&compact);
                return;
            }
        };
        out.push(open);
        for (i, (key, item)) in items.iter().enumerate() {
            out.push_str(if i == 0 { "\n" } else { ",\n" });
            out.push_str(&pad);
            if let Some(k) = key {
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push_str(": ");
            }
            put(out, item, indent + 2);
        }
        out.push('\n');
        out.push_str(&" ".repeat(indent));
        out.push(close);
    }
    let mut text = String::new();
    put(&mut text, v, 0);
    text.push('\n');
    fs::write(path, text).expect("write json");
}

fn overlay(case_dir: &Path, rel: &str, bytes: &[u8]) {
    let path = case_dir.join("files").join(rel);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, bytes).expect("write overlay file");
}

#[test]
#[ignore = "rewrites test/fixtures/golden/v1; only for a new fixture version (see its README)"]
fn regenerate_golden_fixture() {
    let root = fixture_root();
    let build = std::env::temp_dir().join(format!("cairn-golden-build-{}", std::process::id()));
    let _ = fs::remove_dir_all(&build);
    let store = build.join("store");
    let mut w = Writer { history: History::default(), model: Model::new(), rng: Rng::new(10) };
    let spec = |name: &str, dim: u32, metric: Metric| {
        Op::CreateCollection(CollectionSpec { name: name.into(), dim, metric, m: 4, ef_construction: 32 })
    };

    // Session 1: three collections, rows in small batches (several WAL segments), a delete,
    // a checkpoint (base files, graphs, archived WAL).
    let e = Engine::open(&store, options(RecoveryMode::TolerateTornTail)).expect("create");
    w.commit(&e, vec![spec("docs", 4, Metric::Cosine)]);
    w.commit(&e, vec![spec("points", 3, Metric::L2)]);
    w.commit(&e, vec![spec("scores", 2, Metric::Ip)]);
    for chunk in ids("doc", 0..12).chunks(3) {
        w.upserts(&e, "docs", chunk);
    }
    for chunk in ids("pt", 0..8).chunks(4) {
        w.upserts(&e, "points", chunk);
    }
    for chunk in ids("sc", 0..6).chunks(3) {
        w.upserts(&e, "scores", chunk);
    }
    w.commit(&e, vec![Op::Delete { collection: "docs".into(), id: "doc-03".into() }]);
    common::checkpoint(&e).expect("checkpoint");
    e.close().expect("close");
    rewrite_base_as_v1(&store, "docs");

    // Session 2: a full snapshot, changes to two collections, an incremental snapshot (delta
    // files on top of the v1 and v2 bases), then writes left in the live WAL.
    let e = Engine::open(&store, options(RecoveryMode::AbsoluteConsistency)).expect("reopen after the v1 rewrite");
    let full = snapshot::take(&e, false).expect("full snapshot");
    let mut points = vec![(full.seq, Some(full.id.clone()))];
    w.upserts(&e, "docs", &ids("doc", 12..16));
    w.upserts(&e, "docs", &ids("doc", 0..1));
    let between = w.commit(&e, vec![Op::Delete { collection: "points".into(), id: "pt-02".into() }]);
    points.push((between, Some(full.id.clone())));
    w.upserts(&e, "points", &ids("pt", 8..9));
    for c in ["docs", "points"] {
        e.wait_for_index(c).expect("index");
    }
    let incremental = snapshot::take(&e, true).expect("incremental snapshot");
    points.push((incremental.seq, Some(incremental.id.clone())));
    w.upserts(&e, "docs", &ids("doc", 16..18));
    w.upserts(&e, "scores", &ids("sc", 6..7));
    e.close().expect("close");

    // Session 3: an open that finds MANIFEST damaged and uses MANIFEST.copy, keeping the
    // damaged bytes in quarantine/ with a note; then enough writes to roll live segments.
    let mut damaged = fs::read(store.join(MANIFEST_FILE)).expect("MANIFEST");
    damaged[40] ^= 0x04;
    fs::write(store.join(MANIFEST_FILE), &damaged).expect("damage MANIFEST");
    let e = Engine::open(&store, options(RecoveryMode::TolerateTornTail)).expect("open from MANIFEST.copy");
    assert!(e.recovery_report().manifest_restored.is_some());
    for chunk in ids("doc", 18..30).chunks(2) {
        w.upserts(&e, "docs", chunk);
    }
    w.commit(&e, vec![Op::Delete { collection: "scores".into(), id: "sc-01".into() }]);
    let tail = w.upserts(&e, "docs", &["tail-00".to_string()]);
    // The store as a crash right now would leave it: manifests without the clean-close mark.
    let open_manifest = fs::read(store.join(MANIFEST_FILE)).expect("MANIFEST");
    let open_copy = fs::read(store.join(MANIFEST_COPY_FILE)).expect("MANIFEST.copy");
    let infos = e.collections().expect("collections");
    let mut queries = Vec::new();
    for (c, probe) in [("docs", 1u64), ("points", 2), ("scores", 3)] {
        let dim = w.model[c].dim;
        // Off the grid of eighths, so no two rows tie and the order is well defined.
        let mut rng = Rng::new(probe);
        let v: Vec<f32> = (0..dim).map(|_| rng.unit()).collect();
        let hits: Vec<String> = e.query_exact(c, &v, 5, None).expect("query").hits.into_iter().map(|h| h.0).collect();
        queries.push(json!({ "collection": c, "vector": v, "k": 5, "ids": hits }));
    }
    let checkpoint_seq = e.manifest().checkpoint_seq;
    assert_eq!(e.last_seq(), tail);
    e.close().expect("close");
    let _ = fs::remove_file(store.join(cairn_core::layout::LOCK_FILE));

    // expected.json: every row, the queries, and the state at each point PITR can reach.
    let mut collections = model_to_json(&w.model);
    for info in infos {
        collections[&info.name]["m"] = json!(info.m);
        collections[&info.name]["ef_construction"] = json!(info.ef_construction);
    }
    let points_in_time: Vec<Value> = points
        .iter()
        .map(|(seq, snap)| json!({ "seq": seq, "snapshot": snap, "collections": model_to_json(&w.history.model_at(*seq)) }))
        .collect();
    let mut dirs = Vec::new();
    empty_dirs(&store, "", &mut dirs);
    let expected = json!({
        "format": "written by cairn-core at format versions WAL 1, data file 1 and 2, manifest 1, HNSW 1, snapshot 1",
        "last_seq": tail,
        "checkpoint_seq": checkpoint_seq,
        "collections": collections,
        "queries": queries,
        "points_in_time": points_in_time,
        "empty_dirs": dirs,
    });
    write_json(&build.join("expected.json"), &expected);

    // Hand-corrupted copies: the files that differ from the store, and the outcome each gives.
    let corrupt = build.join("corrupt");
    let m = manifest::load(&OsStorage, &store).expect("load").expect("manifest");
    let pts = m.collections.iter().find(|c| c.name == "points").expect("points");
    let base = format!("{DATA_DIR}/{}", pts.data_files[0].file);
    let mut flipped = fs::read(store.join(&base)).expect("points base");
    let record = datafile::DATAFILE_HEADER_LEN;
    let victim = match datafile::read_data_file(&flipped, Path::new(&base), false).expect("valid").records.first() {
        Some(DataRecord::Upsert { id, .. }) => id.to_string(),
        _ => panic!("the points base starts with an upsert"),
    };
    let byte = record + 32 + 5; // inside the first record's vector
    flipped[byte] ^= 0x10;
    let case_dir = corrupt.join("bit-flip-in-data-file");
    overlay(&case_dir, &base, &flipped);
    write_json(
        &case_dir.join("case.json"),
        &json!({
            "description": "one bit flipped in the vector of the first record of a version 2 data file",
            "file": base, "offset": record, "byte": byte, "collection": "points", "id": victim,
            "outcome": "scrub reports a checksum finding at `offset` naming `id`; absolute-consistency refuses to open, naming `file` and `offset`; tolerate-torn-tail rebuilds the record from the WAL (repairedRecords) and serves every row of expected.json",
        }),
    );

    let live = wal_names(&store.join(WAL_DIR));
    let last = format!("{WAL_DIR}/{}", live.last().expect("a live segment"));
    let mut torn = fs::read(store.join(&last)).expect("last segment");
    let scan = cairn_core::wal::reader::scan_segment(&torn, cairn_core::wal::record::decode_segment_header(&torn).expect("header"));
    let Some(cairn_core::wal::reader::ScanItem::Record { offset: tail_at, header, .. }) = scan.items.last() else {
        panic!("records in the last segment")
    };
    assert_eq!(header.seq, tail);
    let tail_at = *tail_at;
    torn.truncate(torn.len() - 5);
    let case_dir = corrupt.join("torn-wal-tail");
    let (before_tail, absent) = (tail - 1, json!([["docs", "tail-00"]]));
    overlay(&case_dir, &last, &torn);
    overlay(&case_dir, MANIFEST_FILE, &open_manifest);
    overlay(&case_dir, MANIFEST_COPY_FILE, &open_copy);
    write_json(
        &case_dir.join("case.json"),
        &json!({
            "description": "a crash while the last record was being written: its last 5 bytes never reached the disk (manifests as an open store leaves them, without the clean-close mark)",
            "file": last, "offset": tail_at, "last_seq": before_tail, "absent": absent,
            "outcome": "tolerate-torn-tail truncates the segment at `offset` (tornTail) and serves expected.json without the `absent` rows, at `last_seq`; absolute-consistency refuses",
        }),
    );

    let mut bad = fs::read(store.join(MANIFEST_FILE)).expect("MANIFEST");
    let checksum_at = bad.len() - 8;
    bad[60] ^= 0x01;
    let case_dir = corrupt.join("damaged-manifest");
    overlay(&case_dir, MANIFEST_FILE, &bad);
    write_json(
        &case_dir.join("case.json"),
        &json!({
            "description": "one bit flipped in MANIFEST's JSON body; MANIFEST.copy is intact",
            "file": MANIFEST_FILE, "byte": 60, "offset": checksum_at,
            "outcome": "scrub reports MANIFEST's checksum failing at `offset`; absolute-consistency refuses; tolerate-torn-tail opens from MANIFEST.copy (manifestRestored), quarantines the damaged MANIFEST and serves every row of expected.json",
        }),
    );

    // An archived segment that the incremental snapshot holds an identical copy of.
    let inc_wal = store.join(SNAPSHOTS_DIR).join(&incremental.id).join(WAL_DIR);
    let name = wal_names(&inc_wal).into_iter().next().expect("the incremental snapshot holds WAL");
    let archived = format!("{ARCHIVE_DIR}/{name}");
    let mut flipped = fs::read(store.join(&archived)).expect("archived segment");
    let first = cairn_core::wal::record::decode_segment_header(&flipped).expect("header");
    let records = cairn_core::wal::reader::scan_segment(&flipped, first).items.len();
    assert!(records >= 2, "a later record stays intact, so the damage is located");
    let record = cairn_core::wal::record::SEGMENT_HEADER_LEN;
    let byte = record + 24 + 3; // inside the first record's payload
    flipped[byte] ^= 0x08;
    let case_dir = corrupt.join("bit-flip-in-archived-wal");
    overlay(&case_dir, &archived, &flipped);
    let copy = format!("{SNAPSHOTS_DIR}/{}/{WAL_DIR}/{name}", incremental.id);
    write_json(
        &case_dir.join("case.json"),
        &json!({
            "description": "one bit flipped in the first record of an archived WAL segment that the incremental snapshot holds a copy of",
            "file": archived, "offset": record, "byte": byte, "copy": copy,
            "outcome": "opens and serves every row of expected.json (open reads no archived WAL); scrub reports a checksum finding at `offset`, and a repairing scrub replaces the file from `copy` and quarantines the damaged bytes",
        }),
    );

    let _ = fs::remove_dir_all(&root);
    copy_tree(&build, &root);
    let _ = fs::remove_dir_all(&build);
}
