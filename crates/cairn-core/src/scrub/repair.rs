//! Rebuilding a damaged file of an open store from its verified in-memory state, and the
//! quarantine note a repair leaves. Invariant: the damaged file is quarantined under the
//! checkpoint lock before the rewrite, whose sweep of unnamed files would otherwise delete it.

use serde::Serialize;

use super::check::{hex, Expected, FileCheck};
use crate::clock::now_ms;
use crate::engine::Engine;
use crate::error::Result;
use crate::layout::{DATA_DIR, MANIFEST_COPY_FILE, MANIFEST_FILE};
use crate::quarantine::{quarantine as keep_in_quarantine, Damage, QuarantineNote};

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Rebuild {
    /// Rewritten from the engine's verified in-memory state; the damaged file is in quarantine.
    Rebuilt {
        quarantined: Option<String>,
        checkpoint_seq: Option<u64>,
    },
    Moot,
}

/// Rebuild a damaged file of an open store from its in-memory state: `MANIFEST` is rewritten
/// from the manifest the engine holds; a `data/` file by a full checkpoint of its collection
/// (`Engine::rewrite_collection_files`). The damaged file is quarantined first, so the
/// checkpoint's sweep of unnamed files never deletes it.
pub fn rebuild_live(engine: &Engine, rel: &str, note: &QuarantineNote) -> Result<Rebuild> {
    let storage = engine.storage().clone();
    if rel == MANIFEST_FILE || rel == MANIFEST_COPY_FILE {
        let mut quarantined = None;
        engine.rewrite_manifest(|_, dir| {
            quarantined = keep_in_quarantine(storage.as_ref(), dir, rel, note)?;
            Ok(())
        })?;
        return Ok(Rebuild::Rebuilt { quarantined, checkpoint_seq: None });
    }
    let Some(name) = rel.strip_prefix(&format!("{DATA_DIR}/")) else { return Ok(Rebuild::Moot) };
    let owner = engine
        .manifest()
        .collections
        .iter()
        .find(|c| c.data_files.iter().chain(c.index.iter()).chain(c.payload_file.iter()).any(|s| s.file == name))
        .map(|c| c.id);
    let Some(id) = owner else { return Ok(Rebuild::Moot) };
    let mut quarantined = None;
    let mut moot = false;
    let seq = engine.rewrite_collection_files(id, |m, dir| {
        // Checked again under the lock: a checkpoint may have replaced the file meanwhile.
        moot = !m
            .collections
            .iter()
            .any(|c| c.id == id && c.data_files.iter().chain(c.index.iter()).chain(c.payload_file.iter()).any(|s| s.file == name));
        if !moot {
            quarantined = keep_in_quarantine(storage.as_ref(), dir, rel, note)?;
        }
        Ok(())
    })?;
    Ok(if moot { Rebuild::Moot } else { Rebuild::Rebuilt { quarantined, checkpoint_seq: Some(seq) } })
}

/// The quarantine note for a file a check found damaged.
pub fn note(file: &str, check: &FileCheck, expected: Option<Expected>) -> QuarantineNote {
    let first = check.findings.first();
    QuarantineNote {
        file: file.to_string(),
        time_ms: now_ms(),
        kind: first.map_or(Damage::Checksum, |f| f.kind),
        offset: first.map_or(0, |f| f.offset),
        detail: first.map_or_else(String::new, |f| f.detail.clone()),
        bytes: check.bytes,
        expected_bytes: expected.map(|e| e.bytes),
        expected_xxh3: expected.map(|e| hex(e.xxh3)),
        found_xxh3: check.xxh3.clone(),
        repaired_from: None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::super::test_support::Dir;
    use super::super::{parse_xxh3, FileKind};
    use super::*;
    use crate::distance::Metric;
    use crate::layout::{DATA_EXT, MANIFEST_FILE};
    use crate::wal::writer::Prealloc;

    fn options(dir: &Dir) -> crate::Options {
        crate::Options { storage: dir.storage.clone(), prealloc: Prealloc::Off, ..crate::Options::default() }
    }

    fn engine_with_rows(dir: &Dir, rows: usize) -> Engine {
        use crate::batch::{CollectionSpec, Op};
        let e = Engine::open(&dir.path, options(dir)).expect("open");
        e.commit(&[Op::CreateCollection(CollectionSpec { name: "docs".into(), dim: 4, metric: Metric::L2, m: 8, ef_construction: 32 })])
            .expect("create");
        for chunk in (0..rows).collect::<Vec<_>>().chunks(100) {
            let ops: Vec<Op> = chunk
                .iter()
                .map(|i| Op::Upsert {
                    collection: "docs".into(),
                    id: format!("id-{i}"),
                    vector: vec![*i as f32, 0.5, 1.0, -1.0].into(),
                    metadata: format!("{{\"i\":{i}}}").into(),
                })
                .collect();
            e.commit(&ops).expect("upsert");
        }
        e.checkpoint().expect("checkpoint");
        e
    }

    fn rows_of(e: &Engine, n: usize) -> Vec<Option<(Vec<f32>, String)>> {
        (0..n).map(|i| e.get("docs", &format!("id-{i}")).expect("get")).collect()
    }

    #[test]
    fn damaged_live_files_are_rebuilt_from_memory_and_the_store_reopens_equal() {
        let dir = Dir::fault();
        let e = engine_with_rows(&dir, 3000);
        let want = rows_of(&e, 3000);
        let m = e.manifest();
        let seg = m.collections[0].data_files[0].clone();
        let ix = m.collections[0].index.clone().expect("graph file");
        for (rel, kind, r) in
            [(format!("{DATA_DIR}/{}", seg.file), FileKind::Segment, &seg), (format!("{DATA_DIR}/{}", ix.file), FileKind::Blob, &ix)]
        {
            let path = dir.join(&rel);
            let mut bytes = dir.read(&path);
            let at = bytes.len() / 2;
            bytes[at] ^= 0x40;
            dir.put(&path, &bytes);
            let exp = Expected { bytes: r.bytes, xxh3: parse_xxh3(&r.xxh3).expect("hex") };
            let found = dir.check(&path, kind, Some(exp));
            assert!(!found.findings.is_empty(), "{rel}");
            let out = rebuild_live(&e, &rel, &note(&rel, &found, Some(exp))).expect("rebuild");
            let Rebuild::Rebuilt { quarantined: Some(q), .. } = out else { panic!("{out:?}") };
            assert_eq!(dir.read(&dir.join(&q)), bytes, "the damaged bytes are kept");
            for c in &e.manifest().collections {
                for s in c.data_files.iter().chain(c.index.iter()) {
                    let exp = Expected { bytes: s.bytes, xxh3: parse_xxh3(&s.xxh3).expect("hex") };
                    let k = if s.file.ends_with(DATA_EXT) { FileKind::Segment } else { FileKind::Blob };
                    assert!(dir.check(&Path::new(&dir.path).join(DATA_DIR).join(&s.file), k, Some(exp)).findings.is_empty());
                }
            }
        }
        dir.put(&dir.join(MANIFEST_FILE), b"garbage");
        let found = dir.check(&dir.join(MANIFEST_FILE), FileKind::Manifest, None);
        assert!(!found.findings.is_empty());
        rebuild_live(&e, MANIFEST_FILE, &note(MANIFEST_FILE, &found, None)).expect("rebuild manifest");
        assert!(dir.check(&dir.join(MANIFEST_FILE), FileKind::Manifest, None).findings.is_empty());
        e.close().expect("close");
        drop(e);
        let e = Engine::open(&dir.path, options(&dir)).expect("reopen");
        assert!(e.recovery_report().index_rebuilds.is_empty(), "{:?}", e.recovery_report());
        assert_eq!(rows_of(&e, 3000), want);
        e.close().expect("close");
        let _ = Arc::clone(&dir.storage);
    }
}
