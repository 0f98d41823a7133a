//! Installing a repaired copy: copy beside the damaged file, fsync, verify the copy, keep the
//! damaged file in quarantine, rename the copy over it, fsync the directory.
//! Invariant: what is installed is exactly what was verified, and the damaged bytes are in
//! quarantine before their name is replaced.

use std::path::Path;

use serde::Serialize;

use super::check::{parse_xxh3, Expected, FileKind};
use super::control::ScanControl;
use super::verify::verify_file_on;
use crate::durable::copy;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::layout::{DATA_DIR, INSTALL_SUFFIX};
use crate::quarantine::{quarantine as keep_in_quarantine, QuarantineNote};
use crate::storage::{OsStorage, Storage, StorageFile};

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Install {
    /// The copy verified and is in place; the damaged file (if any) is in quarantine.
    Installed { quarantined: Option<String> },
    /// The copy did not verify (for example a hard link to the same damaged bytes); nothing changed.
    Rejected { detail: String },
    /// The store no longer names this file (a checkpoint replaced it meanwhile); nothing changed.
    Moot,
}

/// `install_copy_on` the real file system.
pub fn install_copy(dir: &Path, rel: &str, source: &Path, kind: FileKind, expected: Expected, note: &QuarantineNote) -> Result<Install> {
    install_copy_on(&OsStorage, dir, rel, source, kind, expected, note)
}

/// Copy `source` next to `dir/rel`, fsync it, verify the copy as `kind` against `expected`,
/// then quarantine the damaged file and rename the copy over it, and fsync the directory.
/// What is installed is exactly what was verified.
pub fn install_copy_on(
    storage: &dyn Storage,
    dir: &Path,
    rel: &str,
    source: &Path,
    kind: FileKind,
    expected: Expected,
    note: &QuarantineNote,
) -> Result<Install> {
    install_on(storage, dir, rel, kind, Some(expected), note, &format!("copy from {}", source.display()), |tmp| {
        copy(storage, source, tmp).map(|(f, _)| f).map_err(|e| format!("cannot copy {}: {e}", source.display()))
    })
}

/// `install_copy_on` for bytes built in memory (a WAL segment rebuilt from the other nodes'
/// records): written beside `dir/rel`, fsynced, verified as `kind` (against `expected` when it
/// is known), then installed the same way.
pub fn install_bytes_on(
    storage: &dyn Storage,
    dir: &Path,
    rel: &str,
    bytes: &[u8],
    kind: FileKind,
    expected: Option<Expected>,
    note: &QuarantineNote,
) -> Result<Install> {
    install_on(storage, dir, rel, kind, expected, note, "the file built from the other nodes' records", |tmp| {
        let f = storage.create(tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        f.write_at(0, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        Ok(f)
    })
}

/// The install both share: `place` writes the candidate at the temporary name; it is fsynced
/// and verified there, and only then does the damaged file go to quarantine and the candidate
/// take its name.
#[expect(clippy::too_many_arguments, reason = "one install's target, its check and its note, called from two places")]
fn install_on(
    storage: &dyn Storage,
    dir: &Path,
    rel: &str,
    kind: FileKind,
    expected: Option<Expected>,
    note: &QuarantineNote,
    what: &str,
    place: impl FnOnce(&Path) -> std::result::Result<Box<dyn StorageFile>, String>,
) -> Result<Install> {
    let target = dir.join(rel);
    let parent = target.parent().map(Path::to_path_buf).unwrap_or_else(|| dir.to_path_buf());
    if !storage.is_dir(&parent) {
        return Ok(Install::Moot);
    }
    let mut tmp_name = target.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(INSTALL_SUFFIX);
    let tmp = parent.join(tmp_name);
    let _ = storage.remove(&tmp);
    let placed = match place(&tmp) {
        Ok(f) => f,
        Err(detail) => {
            let _ = storage.remove(&tmp);
            return Ok(Install::Rejected { detail });
        }
    };
    placed.sync_data().map_err(|e| Error::io(&tmp, e))?;
    let check = verify_file_on(storage, &tmp, kind, expected, &ScanControl::new(None));
    if let Some(bad) = check.findings.first() {
        let _ = storage.remove(&tmp);
        return Ok(Install::Rejected { detail: format!("{what} does not verify: {} at offset {}", bad.detail, bad.offset) });
    }
    let quarantined = keep_in_quarantine(storage, dir, rel, note)?;
    storage.rename(&tmp, &target).map_err(|e| Error::io(&target, e))?;
    // durability: the repaired file's name must survive a power cut.
    storage.sync_dir(&parent).map_err(|e| Error::io(&parent, e))?;
    Ok(Install::Installed { quarantined })
}

/// `install_copy` into an open store, under its checkpoint lock so that no checkpoint writes,
/// archives, prunes or sweeps files meanwhile. A `data/` file must still be named by the
/// manifest with the expected checksum, otherwise the repair is moot.
pub fn install_copy_live(
    engine: &Engine,
    rel: &str,
    source: &Path,
    kind: FileKind,
    expected: Expected,
    note: &QuarantineNote,
) -> Result<Install> {
    let storage = engine.storage().clone();
    engine.with_checkpoint_lock(|m, dir| {
        if let Some(name) = rel.strip_prefix(&format!("{DATA_DIR}/")) {
            let named = m
                .collections
                .iter()
                .flat_map(|c| c.data_files.iter().chain(c.index.iter()).chain(c.payload_file.iter()))
                .any(|s| s.file == name && parse_xxh3(&s.xxh3) == Some(expected.xxh3));
            if !named {
                return Ok(Install::Moot);
            }
        }
        install_copy_on(storage.as_ref(), dir, rel, source, kind, expected, note)
    })
}

#[cfg(test)]
mod tests {
    use super::super::note;
    use super::super::test_support::{expected, segment_bytes, Dir};
    use super::*;
    use crate::layout::NOTE_SUFFIX;

    #[test]
    fn install_copy_refuses_a_copy_that_does_not_verify_and_quarantines_what_it_replaces() {
        let dir = Dir::fault();
        let fs = dir.storage.as_ref();
        fs.create_dir_all(&dir.join(DATA_DIR)).expect("mkdir");
        let good = segment_bytes(20);
        let mut bad = good.clone();
        bad[100] ^= 4;
        let target = dir.join("data/x.seg");
        dir.put(&target, &bad);
        let linked = dir.join("linked.seg");
        fs.hard_link(&target, &linked).expect("link");
        let exp = expected(&good);
        let found = dir.check(&target, FileKind::Segment, Some(exp));
        let n = note("data/x.seg", &found, Some(exp));
        // A hard link shares the damaged bytes: verification rejects it and nothing changes.
        let r = install_copy_on(fs, &dir.path, "data/x.seg", &linked, FileKind::Segment, exp, &n).expect("install");
        assert!(matches!(r, Install::Rejected { .. }), "{r:?}");
        assert_eq!(dir.read(&target), bad);
        let copy = dir.join("copy.seg");
        dir.put(&copy, &good);
        let r = install_copy_on(fs, &dir.path, "data/x.seg", &copy, FileKind::Segment, exp, &n).expect("install");
        let Install::Installed { quarantined: Some(q) } = r else { panic!("{r:?}") };
        assert_eq!(dir.read(&target), good);
        assert_eq!(dir.read(&dir.join(&q)), bad);
        let kept: QuarantineNote = serde_json::from_slice(&dir.read(&dir.join(&format!("{q}{NOTE_SUFFIX}")))).expect("json");
        assert_eq!(kept.file, "data/x.seg");
        assert_eq!(kept.found_xxh3, found.xxh3);
    }
}
