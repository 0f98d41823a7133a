//! The manifest (docs/format.md, "Manifest"): the live checkpoint files and their checksums,
//! decoded by `cairn_core::manifest` from a file, or as the open engine holds it.

use std::path::Path;

use cairn_core::manifest::{self, Manifest, ManifestCollection};
use cairn_core::state::FileRef;
use cairn_core::storage::OsStorage;
use napi::bindgen_prelude::BigInt;
use napi::Env;
use napi_derive::napi;

use crate::errors::{core, sync};
use crate::store::NativeStore;

/// A checkpoint file the manifest names, with its size and xxh3.
#[napi(object)]
pub struct NativeFileRef {
    /// Name inside `data/`.
    pub file: String,
    pub bytes: f64,
    pub xxh3: String,
    pub records: f64,
    pub covered_seq: BigInt,
}

#[napi(object)]
pub struct NativeUnreadable {
    pub id: String,
    pub file: String,
    pub offset: f64,
    pub reason: String,
}

#[napi(object, use_nullable = true)]
pub struct NativeManifestCollection {
    pub id: BigInt,
    pub name: String,
    pub dim: u32,
    #[napi(ts_type = "'cosine' | 'l2' | 'ip'")]
    pub metric: String,
    pub m: u32,
    pub ef_construction: u32,
    pub segments: Vec<NativeFileRef>,
    /// The persisted HNSW graph; absent until the first checkpoint.
    pub index: Option<NativeFileRef>,
    /// The persisted payload indexes (`.pidx`); absent when the collection has none.
    pub payload_index: Option<NativeFileRef>,
    /// Records whose stored bytes are damaged beyond repair.
    pub unreadable: Vec<NativeUnreadable>,
}

#[napi(object, use_nullable = true)]
pub struct NativeManifest {
    pub checkpoint_seq: BigInt,
    pub checkpoint_time_ms: f64,
    pub clean_shutdown_seq: Option<BigInt>,
    pub collections: Vec<NativeManifestCollection>,
}

fn file_ref(s: &FileRef) -> NativeFileRef {
    NativeFileRef {
        file: s.file.clone(),
        bytes: s.bytes as f64,
        xxh3: s.xxh3.clone(),
        records: s.records as f64,
        covered_seq: s.covered_seq.into(),
    }
}

fn collection(c: &ManifestCollection) -> NativeManifestCollection {
    NativeManifestCollection {
        id: c.id.into(),
        name: c.name.clone(),
        dim: c.dim,
        metric: c.metric.as_str().to_string(),
        m: c.m,
        ef_construction: c.ef_construction,
        segments: c.data_files.iter().map(file_ref).collect(),
        index: c.index.as_ref().map(file_ref),
        payload_index: c.payload_file.as_ref().map(file_ref),
        unreadable: c
            .unreadable
            .iter()
            .map(|u| NativeUnreadable { id: u.id.clone(), file: u.file.clone(), offset: u.offset as f64, reason: u.reason.clone() })
            .collect(),
    }
}

impl From<Manifest> for NativeManifest {
    fn from(m: Manifest) -> NativeManifest {
        NativeManifest {
            checkpoint_seq: m.checkpoint_seq.into(),
            checkpoint_time_ms: m.checkpoint_time_ms as f64,
            clean_shutdown_seq: m.clean_shutdown_seq.map(BigInt::from),
            collections: m.collections.iter().map(collection).collect(),
        }
    }
}

/// Whether a process holds `dir`'s writer lock (the store is open there); never takes it.
#[napi]
pub fn lock_held(env: Env, dir: String) -> napi::Result<bool> {
    let path = Path::new(&dir).join(cairn_core::layout::LOCK_FILE);
    sync(&env, || core(cairn_core::storage::lock_held(&path).map_err(|e| cairn_core::Error::io(&path, e))))
}

/// Decode `dir/MANIFEST`; null when the store has none.
#[napi]
pub fn read_manifest(env: Env, dir: String) -> napi::Result<Option<NativeManifest>> {
    sync(&env, || Ok(core(manifest::load(&OsStorage, Path::new(&dir)))?.map(NativeManifest::from)))
}

#[napi]
impl NativeStore {
    /// The manifest the engine holds: the live checkpoint files and their checksums.
    #[napi]
    pub fn manifest(&self, env: Env) -> napi::Result<NativeManifest> {
        sync(&env, || Ok(NativeManifest::from(self.engine.manifest())))
    }
}
