//! The quarantine note (docs/format.md, "Quarantine note"): why a damaged file is kept under
//! `quarantine/`. Typed in both directions: scrub writes notes, and reads old ones.

use std::path::Path;

use cairn_core::quarantine::{Damage, QuarantineNote};
use cairn_core::storage::{OsStorage, Storage};
use napi::Env;
use napi_derive::napi;

use crate::errors::{sync, Failure, Outcome};

pub(crate) fn damage_name(d: Damage) -> &'static str {
    match d {
        Damage::Checksum => "checksum",
        Damage::Truncated => "truncated",
        Damage::Missing => "missing",
        Damage::Unreadable => "unreadable",
    }
}

/// Why a file is kept under `quarantine/` (docs/format.md, "Quarantine note").
#[napi(object, use_nullable = true)]
pub struct NativeQuarantineNote {
    /// The damaged file, relative to the store directory.
    pub file: String,
    pub time_ms: f64,
    #[napi(ts_type = "'checksum' | 'truncated' | 'missing' | 'unreadable'")]
    pub kind: String,
    pub offset: f64,
    pub detail: String,
    /// Size found on disk.
    pub bytes: f64,
    pub expected_bytes: Option<f64>,
    pub expected_xxh3: Option<String>,
    /// xxh3 of the damaged file as found.
    pub found_xxh3: Option<String>,
    /// What replaced it, when a repair did.
    pub repaired_from: Option<String>,
}

fn damage(s: &str) -> Outcome<Damage> {
    Ok(match s {
        "checksum" => Damage::Checksum,
        "truncated" => Damage::Truncated,
        "missing" => Damage::Missing,
        "unreadable" => Damage::Unreadable,
        _ => return Err(Failure::invalid(format!("note.kind '{s}' is not a kind of damage"))),
    })
}

impl TryFrom<NativeQuarantineNote> for QuarantineNote {
    type Error = Failure;
    fn try_from(n: NativeQuarantineNote) -> Outcome<QuarantineNote> {
        Ok(QuarantineNote {
            kind: damage(&n.kind)?,
            file: n.file,
            time_ms: n.time_ms as u64,
            offset: n.offset as u64,
            detail: n.detail,
            bytes: n.bytes as u64,
            expected_bytes: n.expected_bytes.map(|b| b as u64),
            expected_xxh3: n.expected_xxh3,
            found_xxh3: n.found_xxh3,
            repaired_from: n.repaired_from,
        })
    }
}

impl From<QuarantineNote> for NativeQuarantineNote {
    fn from(n: QuarantineNote) -> NativeQuarantineNote {
        NativeQuarantineNote {
            file: n.file,
            time_ms: n.time_ms as f64,
            kind: damage_name(n.kind).to_string(),
            offset: n.offset as f64,
            detail: n.detail,
            bytes: n.bytes as f64,
            expected_bytes: n.expected_bytes.map(|b| b as f64),
            expected_xxh3: n.expected_xxh3,
            found_xxh3: n.found_xxh3,
            repaired_from: n.repaired_from,
        }
    }
}

/// Decode a quarantine note (`quarantine/<name>.note`).
#[napi]
pub fn read_quarantine_note(env: Env, path: String) -> napi::Result<NativeQuarantineNote> {
    sync(&env, || {
        let p = Path::new(&path);
        let note: cairn_core::quarantine::QuarantineNote =
            serde_json::from_slice(&OsStorage.read(p).map_err(|e| Failure::from(cairn_core::Error::io(p, e)))?)
                .map_err(|e| Failure::from(cairn_core::Error::corruption(p, 0, format!("quarantine note: {e}"))))?;
        Ok(note.into())
    })
}
