//! Payload indexes through the engine: persisted at checkpoint, brought up to date by the WAL
//! tail on open, rebuilt from the rows when their file is missing or damaged (which scrub's check
//! reports), and dropped.

use std::path::Path;
use std::sync::Arc;

use cairn_core::batch::{CollectionSpec, Op};
use cairn_core::distance::Metric;
use cairn_core::engine::{Engine, Options, PayloadIndexInfo};
use cairn_core::fault::FaultStorage;
use cairn_core::filter::Filter;
use cairn_core::layout::DATA_DIR;
use cairn_core::payload::IndexKind;
use cairn_core::scrub::{parse_xxh3, verify_file_on, Expected, FileKind, ScanControl};
use cairn_core::storage::Storage;
use cairn_core::wal::writer::Prealloc;

fn open(fs: &Arc<FaultStorage>) -> Engine {
    let opts = Options { storage: fs.clone(), prealloc: Prealloc::Off, ..Options::default() };
    Engine::open(Path::new("/store"), opts).expect("open")
}

fn upsert(id: &str, meta: &str) -> Op {
    Op::Upsert { collection: "c".into(), id: id.into(), vector: vec![0.0, 1.0].into(), metadata: meta.into() }
}

fn count(e: &Engine, f: &str) -> usize {
    e.count_where("c", &Filter::parse(f).expect("filter")).expect("count")
}

/// The index file the manifest names, and what the manifest recorded for it.
fn payload_file(e: &Engine) -> (std::path::PathBuf, Expected) {
    let m = e.manifest();
    let f = m.collections[0].payload_file.clone().expect("payload file");
    (Path::new("/store").join(DATA_DIR).join(&f.file), Expected { bytes: f.bytes, xxh3: parse_xxh3(&f.xxh3).expect("hex") })
}

#[test]
fn payload_indexes_persist_follow_the_wal_tail_and_rebuild_when_their_file_is_lost_or_damaged() {
    let fs = Arc::new(FaultStorage::new());
    let e = open(&fs);
    let spec = CollectionSpec { name: "c".into(), dim: 2, metric: Metric::L2, m: 16, ef_construction: 64 };
    e.commit(&[Op::CreateCollection(spec), upsert("a", r#"{"l": "en"}"#), upsert("b", r#"{"l": ["de", "en"]}"#)]).expect("rows");
    e.create_index("c", "l", IndexKind::Keyword).expect("index");
    let (path, exp) = payload_file(&e);
    assert!(verify_file_on(fs.as_ref(), &path, FileKind::PayloadIndex, Some(exp), &ScanControl::new(None)).findings.is_empty());
    // Written after the checkpoint: only in the WAL tail, applied to the loaded index on open.
    e.commit(&[upsert("c", r#"{"l": "de"}"#), Op::Delete { collection: "c".into(), id: "a".into() }]).expect("tail");
    e.close().expect("close");

    let e = open(&fs);
    assert_eq!(e.indexes("c").expect("indexes"), vec![PayloadIndexInfo { field: "l".into(), kind: IndexKind::Keyword, entries: 3 }]);
    assert_eq!((count(&e, r#"{"l": "en"}"#), count(&e, r#"{"l": "de"}"#)), (1, 2));
    e.checkpoint().expect("checkpoint");
    let (path, exp) = payload_file(&e);
    e.close().expect("close");

    // A damaged file: scrub's check finds it, and open rebuilds the index from the rows.
    fs.mutate(&path, |b| {
        let at = b.len() / 2;
        b[at] ^= 0x20;
    })
    .expect("damage");
    let found = verify_file_on(fs.as_ref(), &path, FileKind::PayloadIndex, Some(exp), &ScanControl::new(None));
    assert!(!found.findings.is_empty(), "scrub must see the damage");
    let e = open(&fs);
    assert_eq!((count(&e, r#"{"l": "en"}"#), count(&e, r#"{"l": "de"}"#)), (1, 2));
    assert_eq!(e.indexes("c").expect("indexes")[0].entries, 3);
    e.checkpoint().expect("checkpoint rewrites the file");
    let (path, exp) = payload_file(&e);
    assert!(verify_file_on(fs.as_ref(), &path, FileKind::PayloadIndex, Some(exp), &ScanControl::new(None)).findings.is_empty());
    e.close().expect("close");

    // A missing file: rebuilt too.
    fs.remove(&path).expect("remove");
    let e = open(&fs);
    assert_eq!(count(&e, r#"{"l": {"$in": ["en", "de"]}}"#), 2);
    e.drop_index("c", "l").expect("drop");
    assert!(e.indexes("c").expect("indexes").is_empty());
    assert!(e.manifest().collections[0].payload_file.is_none() && e.manifest().collections[0].payload_indexes.is_empty());
    assert_eq!(e.drop_index("c", "l").expect_err("gone").code(), "CAIRN_NOT_FOUND");
    e.close().expect("close");
}

#[test]
fn bad_index_requests_are_refused() {
    let fs = Arc::new(FaultStorage::new());
    let e = open(&fs);
    let spec = CollectionSpec { name: "c".into(), dim: 2, metric: Metric::L2, m: 16, ef_construction: 64 };
    e.commit(&[Op::CreateCollection(spec)]).expect("create");
    for bad in ["", "a..b", "$x", "a.$in"] {
        assert_eq!(e.create_index("c", bad, IndexKind::Number).expect_err(bad).code(), "CAIRN_INVALID_ARGUMENT");
    }
    assert_eq!(e.create_index("nope", "a", IndexKind::Number).expect_err("no collection").code(), "CAIRN_NOT_FOUND");
    e.create_index("c", "a", IndexKind::Number).expect("index");
    e.create_index("c", "a", IndexKind::Number).expect("same again is a no-op");
    assert_eq!(e.create_index("c", "a", IndexKind::Bool).expect_err("other kind").code(), "CAIRN_ALREADY_EXISTS");
    e.close().expect("close");
}
