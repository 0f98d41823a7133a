//! Damaged bytes are kept, never deleted: `quarantine/<time>-<flattened name>` is a hard link to
//! the damaged file (a copy when links are impossible), beside a JSON note saying why
//! (docs/format.md, "Quarantine note"). Both the engine (on open) and scrub (on repair) put
//! files here; the caller replaces or drops the original name only after this returns.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::durable::{copy_synced, temp_path, write_synced};
use crate::error::{Error, Result};
use crate::layout::{NOTE_SUFFIX, QUARANTINE_DIR};
use crate::storage::Storage;

/// What is wrong with a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Damage {
    /// Bytes differ from what was written: a record, header or whole-file checksum fails, or
    /// the file is longer than recorded.
    Checksum,
    /// The file ends before its recorded size or in the middle of a record.
    Truncated,
    Missing,
    /// The operating system could not read it (permissions, I/O error).
    Unreadable,
}

/// Why a file was moved to `quarantine/`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct QuarantineNote {
    /// The damaged file, relative to the store directory.
    pub file: String,
    pub time_ms: u64,
    pub kind: Damage,
    pub offset: u64,
    pub detail: String,
    /// Size found on disk.
    pub bytes: u64,
    pub expected_bytes: Option<u64>,
    pub expected_xxh3: Option<String>,
    /// xxh3 of the damaged file as found.
    pub found_xxh3: Option<String>,
    /// What replaced it, when a repair did.
    pub repaired_from: Option<String>,
}

/// Keep the damaged file at `rel` under `quarantine/` with a note, as a hard link. Returns the
/// quarantined name relative to `dir`, or None when there is no file to keep. When this returns
/// Ok, the link and its note are durable.
pub fn quarantine(storage: &dyn Storage, dir: &Path, rel: &str, note: &QuarantineNote) -> Result<Option<String>> {
    let src = dir.join(rel);
    if !storage.exists(&src) {
        return Ok(None);
    }
    let qdir = dir.join(QUARANTINE_DIR);
    storage.create_dir_all(&qdir).map_err(|e| Error::io(&qdir, e))?;
    let flat = rel.replace('/', "__");
    let mut name = format!("{}-{flat}", note.time_ms);
    let mut n = 1;
    while storage.exists(&qdir.join(&name)) || storage.exists(&qdir.join(format!("{name}{NOTE_SUFFIX}"))) {
        n += 1;
        name = format!("{}-{flat}.{n}", note.time_ms);
    }
    let dst = qdir.join(&name);
    if storage.hard_link(&src, &dst).is_err() {
        copy_synced(storage, &src, &dst).map_err(|e| Error::io(&dst, e))?;
    }
    let body = serde_json::to_vec_pretty(note).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let note_path = qdir.join(format!("{name}{NOTE_SUFFIX}"));
    let tmp = temp_path(&note_path);
    write_synced(storage, &tmp, &body).map_err(|e| Error::io(&tmp, e))?;
    storage.rename(&tmp, &note_path).map_err(|e| Error::io(&note_path, e))?;
    // durability: the quarantined link and its note must survive before the original name goes.
    storage.sync_dir(&qdir).map_err(|e| Error::io(&qdir, e))?;
    storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(Some(format!("{QUARANTINE_DIR}/{name}")))
}
