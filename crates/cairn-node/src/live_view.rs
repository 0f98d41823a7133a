//! What a store holds now, read without its lock (`cairn_core::inspect::live_view`): the
//! checkpoint plus a read-only replay of the WAL after it, for `inspectStore` and `cairn status`.

use std::path::Path;

use cairn_core::inspect::live_view as core_live_view;
use cairn_core::storage::OsStorage;
use napi::bindgen_prelude::{AsyncTask, BigInt};
use napi_derive::napi;

use crate::errors::core;
use crate::task::{task, CoreTask};

#[napi(object)]
pub struct NativeLiveCollection {
    pub name: String,
    pub dim: u32,
    #[napi(ts_type = "'cosine' | 'l2' | 'ip'")]
    pub metric: String,
    /// Rows now, including rows known to be unreadable.
    pub count: f64,
}

#[napi(object)]
pub struct NativeLiveView {
    pub checkpoint_seq: BigInt,
    /// The last WAL record applied (the checkpoint's seq when none follows it).
    pub last_seq: BigInt,
    pub last_time_ms: f64,
    /// WAL records applied after the checkpoint.
    pub wal_records: f64,
    pub collections: Vec<NativeLiveCollection>,
}

/// The store in `dir` as of its last intact WAL record, or null when it has no manifest.
/// Reads only; never takes the lock, truncates or fsyncs anything.
#[napi(ts_return_type = "Promise<NativeLiveView | null>")]
pub fn live_view(dir: String) -> AsyncTask<CoreTask<Option<NativeLiveView>>> {
    task(move || {
        let v = core(core_live_view(&OsStorage, Path::new(&dir)))?;
        Ok(v.map(|v| NativeLiveView {
            checkpoint_seq: v.checkpoint_seq.into(),
            last_seq: v.last_seq.into(),
            last_time_ms: v.last_time_ms as f64,
            wal_records: v.wal_records as f64,
            collections: v
                .collections
                .into_iter()
                .map(|c| NativeLiveCollection { name: c.name, dim: c.dim, metric: c.metric.as_str().to_string(), count: c.count as f64 })
                .collect(),
        }))
    })
}
