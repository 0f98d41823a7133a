//! Scrub bindings: file verification (sync for piscina workers, async for the main thread) and
//! the scan controls shared by every worker thread of one scrub.
//!
//! A scan control is process-wide state: piscina workers are threads of this process and load
//! this same library, so one token bucket and one cancel flag can serve all of them. JavaScript
//! refers to it by a numeric id.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use cairn_core::scrub::{self, Expected, FileCheck, FileKind, Finding, ScanControl};
use napi::bindgen_prelude::{AsyncTask, BigInt};
use napi::Env;
use napi_derive::napi;

use crate::errors::{core, sync, Failure, Outcome};
use crate::quarantine_note::damage_name;
use crate::task::{task, CoreTask};

static SCANS: Mutex<BTreeMap<u32, Arc<ScanControl>>> = Mutex::new(BTreeMap::new());
static NEXT_SCAN: AtomicU32 = AtomicU32::new(1);

fn scans() -> std::sync::MutexGuard<'static, BTreeMap<u32, Arc<ScanControl>>> {
    SCANS.lock().unwrap_or_else(|p| p.into_inner())
}

fn control(id: u32) -> Outcome<Arc<ScanControl>> {
    scans().get(&id).cloned().ok_or_else(|| Failure::invalid(format!("scan {id} is not open")))
}

pub(crate) fn kind(s: &str) -> Outcome<FileKind> {
    FileKind::parse(s).ok_or_else(|| Failure::invalid(format!("unknown file kind '{s}'")))
}

pub(crate) fn expected(bytes: Option<f64>, xxh3: Option<String>) -> Outcome<Option<Expected>> {
    match (bytes, xxh3) {
        (Some(b), Some(h)) if b >= 0.0 => {
            let xxh3 = scrub::parse_xxh3(&h).ok_or_else(|| Failure::invalid(format!("expected xxh3 '{h}' is not 16 hex digits")))?;
            Ok(Some(Expected { bytes: b as u64, xxh3 }))
        }
        (None, None) => Ok(None),
        _ => Err(Failure::invalid("expected bytes and xxh3 come together")),
    }
}

pub(crate) fn required(bytes: f64, xxh3: String) -> Outcome<Expected> {
    expected(Some(bytes), Some(xxh3))?.ok_or_else(|| Failure::invalid("expected checksum required"))
}

#[napi(object)]
pub struct NativeFinding {
    pub offset: f64,
    #[napi(ts_type = "'checksum' | 'truncated' | 'missing' | 'unreadable'")]
    pub kind: String,
    /// The record's id, when a damaged checkpoint record still names one.
    pub id: Option<String>,
    pub detail: String,
}

/// What the verifier found in one file (see `scrub::FileCheck`).
#[napi(object, use_nullable = true)]
pub struct NativeFileCheck {
    /// Size of the file on disk (0 when missing).
    pub bytes: f64,
    /// Bytes read and hashed.
    pub read: f64,
    /// xxh3 of the whole file, when it was read to the end.
    pub xxh3: Option<String>,
    pub findings: Vec<NativeFinding>,
    /// WAL segments: the first sequence number (from the header) and the last valid record's.
    pub first_seq: Option<BigInt>,
    pub last_seq: Option<BigInt>,
    /// WAL segments: where the last valid record ends.
    pub end: Option<f64>,
    pub records: f64,
    pub cancelled: bool,
}

fn finding(f: Finding) -> NativeFinding {
    NativeFinding { offset: f.offset as f64, kind: damage_name(f.kind).to_string(), id: f.id, detail: f.detail }
}

impl From<FileCheck> for NativeFileCheck {
    fn from(c: FileCheck) -> NativeFileCheck {
        NativeFileCheck {
            bytes: c.bytes as f64,
            read: c.read as f64,
            xxh3: c.xxh3,
            findings: c.findings.into_iter().map(finding).collect(),
            first_seq: c.first_seq.map(BigInt::from),
            last_seq: c.last_seq.map(BigInt::from),
            end: c.end.map(|e| e as f64),
            records: c.records as f64,
            cancelled: c.cancelled,
        }
    }
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

/// Verify one file, blocking the calling thread: piscina workers call this.
/// `kind`: manifest | snapshot-manifest | segment | segment-deep | wal | wal-tail | blob.
#[napi]
pub fn verify_file(
    env: Env,
    scan: u32,
    path: String,
    kind_name: String,
    expected_bytes: Option<f64>,
    expected_xxh3: Option<String>,
) -> napi::Result<NativeFileCheck> {
    sync(&env, || {
        let ctl = control(scan)?;
        let kind = kind(&kind_name)?;
        let exp = expected(expected_bytes, expected_xxh3)?;
        Ok(scrub::verify_file(Path::new(&path), kind, exp, &ctl).into())
    })
}

/// `verifyFile` on the libuv pool.
#[napi(ts_return_type = "Promise<NativeFileCheck>")]
pub fn verify_file_async(
    env: Env,
    scan: u32,
    path: String,
    kind_name: String,
    expected_bytes: Option<f64>,
    expected_xxh3: Option<String>,
) -> napi::Result<AsyncTask<CoreTask<NativeFileCheck>>> {
    let (ctl, kind, exp) = sync(&env, || Ok((control(scan)?, kind(&kind_name)?, expected(expected_bytes, expected_xxh3)?)))?;
    Ok(task(move || Ok(scrub::verify_file(Path::new(&path), kind, exp, &ctl).into())))
}

/// Range boundaries, from 0 to `bytes`, for verifying a large file by `hashRange` tasks of
/// about `rangeBytes` each (see `scrub::ranges`).
#[napi]
pub fn scan_ranges(env: Env, bytes: f64, range_bytes: f64) -> napi::Result<Vec<f64>> {
    sync(&env, || {
        if bytes.is_nan() || bytes < 0.0 || range_bytes.is_nan() || range_bytes < 1.0 {
            return Err(Failure::invalid("bytes must be a non-negative number and rangeBytes a positive one"));
        }
        Ok(scrub::ranges(bytes as u64, range_bytes as u64).into_iter().map(|b| b as f64).collect())
    })
}

/// Start hashing a file of `bytes` bytes by ranges under scan `scan`; returns the split id.
#[napi]
pub fn scan_split_open(env: Env, scan: u32, bytes: f64) -> napi::Result<u32> {
    sync(&env, || {
        if bytes.is_nan() || bytes < 0.0 {
            return Err(Failure::invalid("bytes must be a non-negative number"));
        }
        Ok(control(scan)?.split_open(bytes as u64))
    })
}

/// Hash bytes `start..end` of `path` into split `split`, blocking the calling thread: piscina
/// workers call this. Returns the bytes read.
#[napi]
pub fn hash_range(env: Env, scan: u32, split: u32, path: String, start: f64, end: f64) -> napi::Result<f64> {
    sync(&env, || {
        let ctl = control(scan)?;
        core(scrub::hash_range(&ctl, split, Path::new(&path), start as u64, end as u64)).map(|n| n as f64)
    })
}

/// Close split `split`: the check when its ranges prove the file intact (or the scan was
/// cancelled), null when the file must be verified whole (`verifyFile`).
#[napi]
pub fn scan_split_finish(
    env: Env,
    scan: u32,
    split: u32,
    path: String,
    kind_name: String,
    expected_bytes: f64,
    expected_xxh3: String,
) -> napi::Result<Option<NativeFileCheck>> {
    sync(&env, || {
        let ctl = control(scan)?;
        let kind = kind(&kind_name)?;
        let exp = required(expected_bytes, expected_xxh3)?;
        Ok(core(scrub::split_finish(&ctl, split, Path::new(&path), kind, exp))?.map(NativeFileCheck::from))
    })
}
