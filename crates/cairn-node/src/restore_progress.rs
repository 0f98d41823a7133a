//! Progress of running restores and snapshots (`cairn_core::progress::ByteProgress`), polled
//! from JavaScript by handle while the work runs on the libuv pool.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cairn_core::progress::ByteProgress;
use napi_derive::napi;

static OPEN: Mutex<BTreeMap<u32, Arc<ByteProgress>>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU32 = AtomicU32::new(1);

fn open() -> MutexGuard<'static, BTreeMap<u32, Arc<ByteProgress>>> {
    OPEN.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn get(id: u32) -> Option<Arc<ByteProgress>> {
    open().get(&id).cloned()
}

#[napi(object)]
pub struct NativeByteProgress {
    pub bytes: f64,
    pub total_bytes: f64,
}

/// A handle for `restoreStore(..., progress)` or `snapshot(..., progress)`; close it when the
/// work settled.
#[napi]
pub fn restore_progress_open() -> u32 {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    open().insert(id, Arc::new(ByteProgress::default()));
    id
}

/// Bytes the restore or snapshot has moved, of its total (0 of 0 before it planned its work).
#[napi]
pub fn restore_progress(id: u32) -> NativeByteProgress {
    let p = get(id);
    NativeByteProgress { bytes: p.as_ref().map_or(0.0, |p| p.done() as f64), total_bytes: p.as_ref().map_or(0.0, |p| p.total() as f64) }
}

#[napi]
pub fn restore_progress_close(id: u32) {
    open().remove(&id);
}
