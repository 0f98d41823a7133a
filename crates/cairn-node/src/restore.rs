//! Point-in-time restore of a store directory, and the range it can reach.

use std::path::Path;

use cairn_core::pitr::{self, Point, RestoreTarget};
use cairn_core::placement::Placement;
use napi::bindgen_prelude::{AsyncTask, BigInt};
use napi::Env;
use napi_derive::napi;

use crate::errors::{core, sync, Failure};
use crate::task::{task, CoreTask};

#[napi(object)]
pub struct NativePoint {
    pub seq: BigInt,
    pub time_ms: f64,
}

#[napi(object)]
pub struct NativeRange {
    pub from: NativePoint,
    pub to: NativePoint,
}

#[napi(object, use_nullable = true)]
pub struct NativeRestoreResult {
    pub seq: BigInt,
    pub time_ms: f64,
    /// The snapshot the restore started from, if any.
    pub snapshot: Option<String>,
    pub replayed_records: f64,
    /// Snapshot files cloned (FICLONE), hard-linked, or copied into the restored store.
    pub cloned_files: f64,
    pub linked_files: f64,
    pub copied_files: f64,
}

fn point(p: Point) -> NativePoint {
    NativePoint { seq: p.seq.into(), time_ms: p.time_ms as f64 }
}

/// Restore `source` into `target` as of `seq` or `timeMs` (neither: the latest state).
/// Never takes the source's writer lock. `progress`: a handle from `restoreProgressOpen`.
/// Immutable snapshot files are cloned or hard-linked after their checksum is verified, unless
/// `copy` asks for an independent copy.
#[napi(ts_return_type = "Promise<NativeRestoreResult>")]
pub fn restore_store(
    env: Env,
    source: String,
    target: String,
    seq: Option<BigInt>,
    time_ms: Option<f64>,
    progress: Option<u32>,
    copy: Option<bool>,
) -> napi::Result<AsyncTask<CoreTask<NativeRestoreResult>>> {
    let to = sync(&env, || match (seq, time_ms) {
        (Some(_), Some(_)) => Err(Failure::invalid("to must give either seq or time, not both")),
        (Some(s), None) => {
            let (negative, value, lossless) = s.get_u64();
            if negative || !lossless {
                return Err(Failure::invalid("to.seq must be a non-negative 64-bit integer"));
            }
            Ok(RestoreTarget::Seq(value))
        }
        (None, Some(t)) if t.is_finite() && t >= 0.0 => Ok(RestoreTarget::Time(t as u64)),
        (None, Some(_)) => Err(Failure::invalid("to.time must be a valid date")),
        (None, None) => Ok(RestoreTarget::Latest),
    })?;
    Ok(task(move || {
        let placement = if copy == Some(true) { Placement::Copy } else { Placement::Link };
        let tracked = progress.and_then(crate::restore_progress::get);
        let r = core(pitr::restore_with(Path::new(&source), Path::new(&target), to, placement, tracked.as_deref()))?;
        Ok(NativeRestoreResult {
            seq: r.seq.into(),
            time_ms: r.time_ms as f64,
            snapshot: r.snapshot,
            replayed_records: r.replayed_records as f64,
            cloned_files: r.cloned_files as f64,
            linked_files: r.linked_files as f64,
            copied_files: r.copied_files as f64,
        })
    }))
}

/// The seqs and times that `restoreStore` can reach.
#[napi(ts_return_type = "Promise<NativeRange>")]
pub fn recoverable_range(source: String) -> AsyncTask<CoreTask<NativeRange>> {
    task(move || {
        let r = core(pitr::recoverable_range(Path::new(&source)))?;
        Ok(NativeRange { from: point(r.from), to: point(r.to) })
    })
}
