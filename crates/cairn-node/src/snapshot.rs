//! Snapshots: take one of the open store, list those of a directory, read one's manifest
//! (`SNAPSHOT`, docs/format.md "Snapshot manifest").

use std::path::Path;

use cairn_core::snapshot::{SnapshotFile, SnapshotInfo};
use napi::bindgen_prelude::{AsyncTask, BigInt};
use napi::Env;
use napi_derive::napi;

use crate::errors::{core, sync};
use crate::store::{on_engine, NativeStore};
use crate::task::{task, CoreTask};

#[napi(object)]
pub struct NativeSnapshotFile {
    /// Relative to the snapshot directory: `MANIFEST`, `data/...` or `wal/...`.
    pub path: String,
    pub bytes: f64,
    pub xxh3: String,
}

#[napi(object, use_nullable = true)]
pub struct NativeSnapshotInfo {
    pub id: String,
    pub seq: BigInt,
    pub time_ms: f64,
    #[napi(ts_type = "'full' | 'incremental'")]
    pub kind: String,
    /// The snapshot an incremental one builds on.
    pub base: Option<String>,
    pub bytes: f64,
    pub files: Vec<NativeSnapshotFile>,
}

impl From<&SnapshotFile> for NativeSnapshotFile {
    fn from(f: &SnapshotFile) -> NativeSnapshotFile {
        NativeSnapshotFile { path: f.path.clone(), bytes: f.bytes as f64, xxh3: f.xxh3.clone() }
    }
}

impl From<SnapshotInfo> for NativeSnapshotInfo {
    fn from(s: SnapshotInfo) -> NativeSnapshotInfo {
        NativeSnapshotInfo {
            files: s.files.iter().map(NativeSnapshotFile::from).collect(),
            id: s.id,
            seq: s.seq.into(),
            time_ms: s.time_ms as f64,
            kind: s.kind,
            base: s.base,
            bytes: s.bytes as f64,
        }
    }
}

/// Complete snapshots of the store in `dir`, oldest first.
#[napi(ts_return_type = "Promise<Array<NativeSnapshotInfo>>")]
pub fn list_snapshots(dir: String) -> AsyncTask<CoreTask<Vec<NativeSnapshotInfo>>> {
    task(move || Ok(core(cairn_core::snapshot::list(Path::new(&dir)))?.into_iter().map(NativeSnapshotInfo::from).collect()))
}

/// Decode the snapshot manifest (`SNAPSHOT`) of the snapshot directory `dir`.
#[napi]
pub fn read_snapshot_manifest(env: Env, dir: String) -> napi::Result<NativeSnapshotInfo> {
    sync(&env, || Ok(core(cairn_core::snapshot::read_info(&cairn_core::storage::OsStorage, Path::new(&dir)))?.into()))
}

#[napi]
impl NativeStore {
    /// Checkpoint, then snapshot; `progress` is a handle from `restoreProgressOpen` that counts
    /// the bytes written and read (`cairn_core::snapshot::take_tracked`).
    #[napi(ts_return_type = "Promise<NativeSnapshotInfo>")]
    pub fn snapshot(&self, incremental: bool, progress: Option<u32>) -> AsyncTask<CoreTask<NativeSnapshotInfo>> {
        let progress = progress.and_then(crate::restore_progress::get);
        on_engine(self, move |e| {
            let info = match &progress {
                Some(p) => cairn_core::snapshot::take_tracked(e, incremental, p),
                None => cairn_core::snapshot::take(e, incremental),
            };
            core(info).map(NativeSnapshotInfo::from)
        })
    }
}
