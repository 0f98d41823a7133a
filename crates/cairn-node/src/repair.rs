//! Repair primitives of scrub: install a verified copy, rebuild from the open engine, keep a
//! damaged file in quarantine. Each takes the quarantine note as a typed object.

use std::path::{Path, PathBuf};

use cairn_core::quarantine::QuarantineNote;
use cairn_core::scrub::{self, Expected, FileKind, Install, Rebuild};
use napi::bindgen_prelude::{AsyncTask, BigInt, Buffer};
use napi::Env;
use napi_derive::napi;

use crate::errors::{core, sync};
use crate::quarantine_note::NativeQuarantineNote;
use crate::scrub::{expected, kind, required};
use crate::store::{on_engine, NativeStore};
use crate::task::{task, CoreTask};

/// What `installCopy` did.
#[napi(object, use_nullable = true)]
pub struct NativeInstallOutcome {
    /// installed: the copy verified and is in place; rejected: it did not verify, nothing
    /// changed; moot: the store no longer names the file, nothing changed.
    #[napi(ts_type = "'installed' | 'rejected' | 'moot'")]
    pub outcome: String,
    /// Where the damaged file was kept (installed only).
    pub quarantined: Option<String>,
    /// Why the copy was rejected.
    pub detail: Option<String>,
}

impl From<Install> for NativeInstallOutcome {
    fn from(i: Install) -> NativeInstallOutcome {
        let (outcome, quarantined, detail) = match i {
            Install::Installed { quarantined } => ("installed", quarantined, None),
            Install::Rejected { detail } => ("rejected", None, Some(detail)),
            Install::Moot => ("moot", None, None),
        };
        NativeInstallOutcome { outcome: outcome.to_string(), quarantined, detail }
    }
}

/// What `rebuildFile` did.
#[napi(object, use_nullable = true)]
pub struct NativeRebuildOutcome {
    #[napi(ts_type = "'rebuilt' | 'moot'")]
    pub outcome: String,
    pub quarantined: Option<String>,
    /// The checkpoint that rewrote a data file.
    pub checkpoint_seq: Option<BigInt>,
}

impl From<Rebuild> for NativeRebuildOutcome {
    fn from(r: Rebuild) -> NativeRebuildOutcome {
        match r {
            Rebuild::Rebuilt { quarantined, checkpoint_seq } => {
                NativeRebuildOutcome { outcome: "rebuilt".to_string(), quarantined, checkpoint_seq: checkpoint_seq.map(BigInt::from) }
            }
            Rebuild::Moot => NativeRebuildOutcome { outcome: "moot".to_string(), quarantined: None, checkpoint_seq: None },
        }
    }
}

/// The checked arguments of both `installCopy`s: the file kind, the copy's expected size and
/// checksum (required), and the quarantine note.
fn install_args(
    env: &Env,
    kind_name: &str,
    expected_bytes: f64,
    expected_xxh3: String,
    note: NativeQuarantineNote,
) -> napi::Result<(FileKind, Expected, QuarantineNote)> {
    sync(env, || Ok((kind(kind_name)?, required(expected_bytes, expected_xxh3)?, QuarantineNote::try_from(note)?)))
}

/// Install a verified copy of `source` at `dir/rel` of a store that is not open here (see
/// `scrub::install_copy`).
#[allow(
    clippy::too_many_arguments,
    reason = "the positional arguments of a JavaScript function; `expect` is unfulfilled through the napi macro"
)]
#[napi(ts_return_type = "Promise<NativeInstallOutcome>")]
pub fn install_copy(
    env: Env,
    dir: String,
    rel: String,
    source: String,
    kind_name: String,
    expected_bytes: f64,
    expected_xxh3: String,
    note: NativeQuarantineNote,
) -> napi::Result<AsyncTask<CoreTask<NativeInstallOutcome>>> {
    let (kind, exp, note) = install_args(&env, &kind_name, expected_bytes, expected_xxh3, note)?;
    Ok(task(move || {
        core(scrub::install_copy(Path::new(&dir), &rel, &PathBuf::from(source), kind, exp, &note)).map(NativeInstallOutcome::from)
    }))
}

/// Keep a copy of a damaged file that nothing could repair under `dir/quarantine/` with its
/// note (a hard link: the file stays in place, and its bytes survive whatever later removes
/// that name). Resolves with the quarantined name, or null when the file is gone.
#[napi(ts_return_type = "Promise<string | null>")]
pub fn quarantine_file(
    env: Env,
    dir: String,
    rel: String,
    note: NativeQuarantineNote,
) -> napi::Result<AsyncTask<CoreTask<Option<String>>>> {
    let note = sync(&env, || QuarantineNote::try_from(note))?;
    Ok(task(move || core(cairn_core::quarantine::quarantine(&cairn_core::storage::OsStorage, Path::new(&dir), &rel, &note))))
}

#[napi]
impl NativeStore {
    /// Install a verified copy into this open store under its checkpoint lock.
    #[allow(
        clippy::too_many_arguments,
        reason = "the positional arguments of a JavaScript function; `expect` is unfulfilled through the napi macro"
    )]
    #[napi(ts_return_type = "Promise<NativeInstallOutcome>")]
    pub fn install_copy(
        &self,
        env: Env,
        rel: String,
        source: String,
        kind_name: String,
        expected_bytes: f64,
        expected_xxh3: String,
        note: NativeQuarantineNote,
    ) -> napi::Result<AsyncTask<CoreTask<NativeInstallOutcome>>> {
        let (kind, exp, note) = install_args(&env, &kind_name, expected_bytes, expected_xxh3, note)?;
        Ok(on_engine(self, move |e| {
            core(scrub::install_copy_live(e, &rel, &PathBuf::from(source), kind, exp, &note)).map(NativeInstallOutcome::from)
        }))
    }

    /// Rebuild the sealed WAL segment `rel` from `records` fetched from the other nodes and
    /// install it (see `scrub::rebuild_wal_segment_live`); `expectedBytes`/`expectedXxh3`
    /// when a snapshot recorded them.
    #[napi(ts_return_type = "Promise<NativeInstallOutcome>")]
    pub fn rebuild_wal_segment(
        &self,
        env: Env,
        rel: String,
        records: Buffer,
        expected_bytes: Option<f64>,
        expected_xxh3: Option<String>,
        note: NativeQuarantineNote,
    ) -> napi::Result<AsyncTask<CoreTask<NativeInstallOutcome>>> {
        let (exp, note) = sync(&env, || Ok((expected(expected_bytes, expected_xxh3)?, QuarantineNote::try_from(note)?)))?;
        let records = records.to_vec();
        Ok(on_engine(self, move |e| core(scrub::rebuild_wal_segment_live(e, &rel, &records, exp, &note)).map(NativeInstallOutcome::from)))
    }

    /// Rebuild `MANIFEST` or a `data/` file from the in-memory state (see `scrub::rebuild_live`).
    #[napi(ts_return_type = "Promise<NativeRebuildOutcome>")]
    pub fn rebuild_file(
        &self,
        env: Env,
        rel: String,
        note: NativeQuarantineNote,
    ) -> napi::Result<AsyncTask<CoreTask<NativeRebuildOutcome>>> {
        let note = sync(&env, || QuarantineNote::try_from(note))?;
        Ok(on_engine(self, move |e| core(scrub::rebuild_live(e, &rel, &note)).map(NativeRebuildOutcome::from)))
    }
}
