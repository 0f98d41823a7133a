//! Scrub bindings: file verification (sync for piscina workers, async for the main thread),
//! the scan controls shared by every worker thread of one scrub, and the repair primitives.
//!
//! A scan control is process-wide state: piscina workers are threads of this process and load
//! this same library, so one token bucket and one cancel flag can serve all of them. JavaScript
//! refers to it by a numeric id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use cairn_core::scrub::{self, Expected, FileKind, QuarantineNote, ScanControl};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::{guarded, invalid, json_task, JsonTask, NativeStore};

static SCANS: Mutex<BTreeMap<u32, Arc<ScanControl>>> = Mutex::new(BTreeMap::new());
static NEXT_SCAN: AtomicU32 = AtomicU32::new(1);

fn scans() -> std::sync::MutexGuard<'static, BTreeMap<u32, Arc<ScanControl>>> {
    SCANS.lock().unwrap_or_else(|p| p.into_inner())
}

fn control(id: u32) -> napi::Result<Arc<ScanControl>> {
    scans().get(&id).cloned().ok_or_else(|| invalid(format!("scan {id} is not open")))
}

fn kind(s: &str) -> napi::Result<FileKind> {
    FileKind::parse(s).ok_or_else(|| invalid(format!("unknown file kind '{s}'")))
}

fn expected(bytes: Option<f64>, xxh3: Option<String>) -> napi::Result<Option<Expected>> {
    match (bytes, xxh3) {
        (Some(b), Some(h)) if b >= 0.0 => {
            let xxh3 = scrub::parse_xxh3(&h).ok_or_else(|| invalid(format!("expected xxh3 '{h}' is not 16 hex digits")))?;
            Ok(Some(Expected { bytes: b as u64, xxh3 }))
        }
        (None, None) => Ok(None),
        _ => Err(invalid("expected bytes and xxh3 come together")),
    }
}

fn note(json: &str) -> napi::Result<QuarantineNote> {
    serde_json::from_str(json).map_err(|e| invalid(format!("quarantine note: {e}")))
}

/// Start a scan control: `bytesPerSec` is the aggregate read rate of every file task that
/// uses it (null: unthrottled). Returns its id.
#[napi]
pub fn scan_open(bytes_per_sec: Option<f64>) -> u32 {
    let id = NEXT_SCAN.fetch_add(1, Ordering::Relaxed);
    scans().insert(id, Arc::new(ScanControl::new(bytes_per_sec)));
    id
}

/// Make every file task of this scan stop at its next chunk (also while throttled).
#[napi]
pub fn scan_cancel(id: u32) {
    if let Some(c) = scans().get(&id) {
        c.cancel();
    }
}

#[napi]
pub fn scan_close(id: u32) {
    if let Some(c) = scans().remove(&id) {
        c.cancel();
    }
}

/// Bytes read so far by every task of this scan (for progress).
#[napi]
pub fn scan_bytes(id: u32) -> f64 {
    scans().get(&id).map_or(0.0, |c| c.bytes_read() as f64)
}

/// Verify one file, blocking the calling thread: piscina workers call this. Returns the JSON
/// `FileCheck`. `kind`: manifest | snapshot-manifest | segment | wal | wal-tail | blob.
#[napi]
pub fn verify_file(
    scan: u32,
    path: String,
    kind_name: String,
    expected_bytes: Option<f64>,
    expected_xxh3: Option<String>,
) -> napi::Result<String> {
    let ctl = control(scan)?;
    let kind = kind(&kind_name)?;
    let exp = expected(expected_bytes, expected_xxh3)?;
    guarded(|| {
        let check = scrub::verify_file(Path::new(&path), kind, exp, &ctl);
        serde_json::to_string(&check).map_err(|e| cairn_core::Error::InvalidArgument(e.to_string()))
    })
}

/// `verifyFile` on the libuv pool.
#[napi(ts_return_type = "Promise<string>")]
pub fn verify_file_async(
    scan: u32,
    path: String,
    kind_name: String,
    expected_bytes: Option<f64>,
    expected_xxh3: Option<String>,
) -> napi::Result<AsyncTask<JsonTask>> {
    let ctl = control(scan)?;
    let kind = kind(&kind_name)?;
    let exp = expected(expected_bytes, expected_xxh3)?;
    Ok(json_task(move || Ok(scrub::verify_file(Path::new(&path), kind, exp, &ctl))))
}

/// Range boundaries, from 0 to `bytes`, for verifying a large file by `hashRange` tasks of
/// about `rangeBytes` each (see `scrub::ranges`).
#[napi]
pub fn scan_ranges(bytes: f64, range_bytes: f64) -> napi::Result<Vec<f64>> {
    if bytes.is_nan() || bytes < 0.0 || range_bytes.is_nan() || range_bytes < 1.0 {
        return Err(invalid("bytes must be a non-negative number and rangeBytes a positive one"));
    }
    let cuts = scrub::ranges(bytes as u64, range_bytes as u64);
    Ok(cuts.into_iter().map(|b| b as f64).collect())
}

/// Start hashing a file of `bytes` bytes by ranges under scan `scan`; returns the split id.
#[napi]
pub fn scan_split_open(scan: u32, bytes: f64) -> napi::Result<u32> {
    if bytes.is_nan() || bytes < 0.0 {
        return Err(invalid("bytes must be a non-negative number"));
    }
    Ok(control(scan)?.split_open(bytes as u64))
}

/// Hash bytes `start..end` of `path` into split `split`, blocking the calling thread: piscina
/// workers call this. Returns the bytes read.
#[napi]
pub fn hash_range(scan: u32, split: u32, path: String, start: f64, end: f64) -> napi::Result<f64> {
    let ctl = control(scan)?;
    guarded(|| scrub::hash_range(&ctl, split, Path::new(&path), start as u64, end as u64).map(|n| n as f64))
}

/// Close split `split`: the JSON `FileCheck` when its ranges prove the file intact (or the scan
/// was cancelled), null when the file must be verified whole (`verifyFile`).
#[napi]
pub fn scan_split_finish(
    scan: u32,
    split: u32,
    path: String,
    kind_name: String,
    expected_bytes: f64,
    expected_xxh3: String,
) -> napi::Result<Option<String>> {
    let ctl = control(scan)?;
    let kind = kind(&kind_name)?;
    let exp = expected(Some(expected_bytes), Some(expected_xxh3))?.ok_or_else(|| invalid("expected checksum required"))?;
    guarded(|| {
        let check = scrub::split_finish(&ctl, split, Path::new(&path), kind, exp)?;
        check.map(|c| serde_json::to_string(&c).map_err(|e| cairn_core::Error::InvalidArgument(e.to_string()))).transpose()
    })
}

/// Install a verified copy of `source` at `dir/rel` of a store that is not open here (see
/// `scrub::install_copy`); resolves with the JSON outcome.
#[napi(ts_return_type = "Promise<string>")]
pub fn install_copy(
    dir: String,
    rel: String,
    source: String,
    kind_name: String,
    expected_bytes: f64,
    expected_xxh3: String,
    note_json: String,
) -> napi::Result<AsyncTask<JsonTask>> {
    let kind = kind(&kind_name)?;
    let exp = expected(Some(expected_bytes), Some(expected_xxh3))?.ok_or_else(|| invalid("expected checksum required"))?;
    let note = note(&note_json)?;
    Ok(json_task(move || scrub::install_copy(Path::new(&dir), &rel, &PathBuf::from(source), kind, exp, &note)))
}

/// Keep a copy of a damaged file that nothing could repair under `dir/quarantine/` with its
/// note (a hard link: the file stays in place, and its bytes survive whatever later removes
/// that name). Resolves with the quarantined name, or null when the file is gone.
#[napi(ts_return_type = "Promise<string>")]
pub fn quarantine_file(dir: String, rel: String, note_json: String) -> napi::Result<AsyncTask<JsonTask>> {
    let note = note(&note_json)?;
    Ok(json_task(move || cairn_core::quarantine::quarantine(&cairn_core::storage::OsStorage, Path::new(&dir), &rel, &note)))
}

#[napi]
impl NativeStore {
    /// The manifest the engine holds (JSON): the live checkpoint files and their checksums.
    #[napi]
    pub fn manifest(&self) -> napi::Result<String> {
        guarded(|| serde_json::to_string(&self.engine.manifest()).map_err(|e| cairn_core::Error::InvalidArgument(e.to_string())))
    }

    /// Install a verified copy into this open store under its checkpoint lock.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn install_copy(
        &self,
        rel: String,
        source: String,
        kind_name: String,
        expected_bytes: f64,
        expected_xxh3: String,
        note_json: String,
    ) -> napi::Result<AsyncTask<JsonTask>> {
        let kind = kind(&kind_name)?;
        let exp = expected(Some(expected_bytes), Some(expected_xxh3))?.ok_or_else(|| invalid("expected checksum required"))?;
        let note = note(&note_json)?;
        let engine = self.engine.clone();
        Ok(json_task(move || scrub::install_copy_live(&engine, &rel, &PathBuf::from(source), kind, exp, &note)))
    }

    /// Rebuild `MANIFEST` or a `data/` file from the in-memory state (see `scrub::rebuild_live`).
    #[napi(ts_return_type = "Promise<string>")]
    pub fn rebuild_file(&self, rel: String, note_json: String) -> napi::Result<AsyncTask<JsonTask>> {
        let note = note(&note_json)?;
        let engine = self.engine.clone();
        Ok(json_task(move || scrub::rebuild_live(&engine, &rel, &note)))
    }
}
