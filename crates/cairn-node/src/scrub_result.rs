//! The last scrub's result (docs/format.md, "Scrub result"), written after each scrub and read
//! by status readers without the store's lock.

use std::path::Path;

use cairn_core::scrub::result::{self, ScrubResult};
use cairn_core::storage::OsStorage;
use napi::Env;
use napi_derive::napi;

use crate::errors::{core, sync, Failure, Outcome};

/// Counts of one scrub (`SCRUB_RESULT`).
#[napi(object)]
pub struct NativeScrubResult {
    /// When it finished, ms since the Unix epoch.
    pub time_ms: f64,
    pub duration_ms: f64,
    pub files: f64,
    pub bytes: f64,
    pub corrupt: f64,
    pub repaired: f64,
    pub unrepaired: f64,
    pub repair: bool,
}

fn count(field: &str, v: f64) -> Outcome<u64> {
    if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0) {
        return Err(Failure::invalid(format!("result.{field} must be a non-negative integer")));
    }
    Ok(v as u64)
}

/// Record `r` as the last scrub of the store in `dir` (temp file, fsync, rename, dir fsync).
#[napi]
pub fn write_scrub_result(env: Env, dir: String, r: NativeScrubResult) -> napi::Result<()> {
    sync(&env, || {
        let rec = ScrubResult {
            time_ms: count("timeMs", r.time_ms)?,
            duration_ms: count("durationMs", r.duration_ms)?,
            files: count("files", r.files)?,
            bytes: count("bytes", r.bytes)?,
            corrupt: count("corrupt", r.corrupt)?,
            repaired: count("repaired", r.repaired)?,
            unrepaired: count("unrepaired", r.unrepaired)?,
            repair: r.repair,
        };
        core(result::write(&OsStorage, Path::new(&dir), &rec))
    })
}

/// The last scrub's result of the store in `dir`, or null when none was recorded.
#[napi]
pub fn read_scrub_result(env: Env, dir: String) -> napi::Result<Option<NativeScrubResult>> {
    sync(&env, || {
        Ok(core(result::read(&OsStorage, Path::new(&dir)))?.map(|r| NativeScrubResult {
            time_ms: r.time_ms as f64,
            duration_ms: r.duration_ms as f64,
            files: r.files as f64,
            bytes: r.bytes as f64,
            corrupt: r.corrupt as f64,
            repaired: r.repaired as f64,
            unrepaired: r.unrepaired as f64,
            repair: r.repair,
        }))
    })
}
