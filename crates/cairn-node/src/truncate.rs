//! Cutting a closed store's WAL back to a fork point (failover), the cut records kept under
//! `rollback/` (`cairn_core::engine::truncate`).

use std::path::Path;

use cairn_core::engine::truncate::truncate_wal;
use cairn_core::storage::OsStorage;
use napi::bindgen_prelude::{AsyncTask, BigInt};
use napi::Env;
use napi_derive::napi;

use crate::errors::{core, sync, Failure};
use crate::task::{task, CoreTask};

#[napi(object)]
pub struct NativeRollback {
    /// The rollback segment, relative to the store directory.
    pub file: String,
    pub first_seq: BigInt,
    pub last_seq: BigInt,
    pub records: f64,
    pub bytes: f64,
}

/// Cut every WAL record from `fromSeq` on out of the closed store at `dir`, after saving them
/// (and a note with `reason`) under `rollback/`. Null when the WAL holds none.
#[napi(ts_return_type = "Promise<NativeRollback | null>")]
pub fn truncate_wal_to(
    env: Env,
    dir: String,
    from_seq: BigInt,
    reason: String,
) -> napi::Result<AsyncTask<CoreTask<Option<NativeRollback>>>> {
    let from = sync(&env, || {
        let (negative, value, lossless) = from_seq.get_u64();
        if negative || !lossless || value == 0 {
            return Err(Failure::invalid("fromSeq must be a positive 64-bit integer"));
        }
        Ok(value)
    })?;
    Ok(task(move || {
        let r = core(truncate_wal(&OsStorage, Path::new(&dir), from, &reason))?;
        Ok(r.map(|r| NativeRollback {
            file: r.file,
            first_seq: r.first_seq.into(),
            last_seq: r.last_seq.into(),
            records: r.records as f64,
            bytes: r.bytes as f64,
        }))
    }))
}
