//! Settles promises on the JS thread for work finished on the engine's own threads (commits on
//! the commit thread, single queries on the query workers). The finishing thread queues each
//! result and wakes the JS thread through one threadsafe function per store and kind of result,
//! once per burst of results. (A napi-rs `JsDeferred` creates a threadsafe function, and with it
//! a libuv handle, for every promise: that was a large share of a small commit's cost on the JS
//! thread.)

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use napi::bindgen_prelude::ToNapiValue;
use napi::{check_status, sys, Env, JsError, JsObject, NapiRaw, NapiValue};

use crate::errors::Outcome;

/// A promise's resolver. Only ever used on the JS thread, in `settle`.
pub struct Deferred(sys::napi_deferred);
// SAFETY: the raw handle is moved through the finishing thread but only dereferenced by N-API
// calls on the JS thread.
unsafe impl Send for Deferred {}

struct Tsfn(sys::napi_threadsafe_function);
// SAFETY: N-API allows napi_call_threadsafe_function from any thread; ref, unref and release
// are only called on the JS thread.
unsafe impl Send for Tsfn {}
unsafe impl Sync for Tsfn {}

/// Promises settled with a `T` (or rejected with a `Failure`).
pub struct Completions<T> {
    done: Mutex<Vec<(Deferred, Outcome<T>)>>,
    /// A call of the threadsafe function is queued and has not started draining `done` yet.
    wake_pending: AtomicBool,
    /// Promises not settled yet. While there are any, the threadsafe function
    /// keeps the event loop alive (like the handle of any pending I/O); otherwise it does not.
    in_flight: AtomicUsize,
    /// The threadsafe function; `None` once released or finalized. Callers from other threads
    /// hold the read lock while calling it, so it is never called after its release.
    tsfn: RwLock<Option<Tsfn>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<T: ToNapiValue + Send + 'static> Completions<T> {
    /// Create the threadsafe function, named `name` for diagnostics (JS thread).
    pub fn new(env: &Env, name: &str) -> napi::Result<Arc<Completions<T>>> {
        let c = Arc::new(Completions {
            done: Mutex::new(Vec::new()),
            wake_pending: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            tsfn: RwLock::new(None),
        });
        let name = env.create_string(name)?;
        // The threadsafe function owns one reference, given back in `finalize`.
        let context = Arc::into_raw(c.clone()) as *mut c_void;
        let mut raw = ptr::null_mut();
        // SAFETY: plain N-API calls on the JS thread; `context` stays valid until `finalize`.
        let created = unsafe {
            check_status!(sys::napi_create_threadsafe_function(
                env.raw(),
                ptr::null_mut(),
                ptr::null_mut(),
                name.raw(),
                0,
                1,
                context,
                Some(finalize::<T>),
                context,
                Some(call_js::<T>),
                &mut raw,
            ))
        };
        if let Err(e) = created {
            // SAFETY: not handed to N-API, so this is the only user of that reference.
            drop(unsafe { Arc::from_raw(context as *const Completions<T>) });
            return Err(e);
        }
        // SAFETY: `raw` was just created on this thread.
        unsafe { check_status!(sys::napi_unref_threadsafe_function(env.raw(), raw))? };
        *c.tsfn.write().unwrap_or_else(|p| p.into_inner()) = Some(Tsfn(raw));
        Ok(c)
    }

    /// A new pending promise (JS thread).
    pub fn begin(&self, env: &Env) -> napi::Result<(Deferred, JsObject)> {
        let mut deferred = ptr::null_mut();
        let mut promise = ptr::null_mut();
        // SAFETY: plain N-API call on the JS thread.
        unsafe { check_status!(sys::napi_create_promise(env.raw(), &mut deferred, &mut promise))? };
        if self.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            if let Some(t) = self.tsfn.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
                // SAFETY: JS thread, live threadsafe function.
                unsafe { sys::napi_ref_threadsafe_function(env.raw(), t.0) };
            }
        }
        // SAFETY: `promise` is a fresh value of this env.
        Ok((Deferred(deferred), unsafe { JsObject::from_raw_unchecked(env.raw(), promise) }))
    }

    /// Queue a result (any thread); the JS thread settles its promise soon after.
    pub fn complete(&self, deferred: Deferred, result: Outcome<T>) {
        lock(&self.done).push((deferred, result));
        // Cleared by `settle` before it drains, so a result pushed after a drain began always
        // schedules another one.
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            if let Some(t) = self.tsfn.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
                // SAFETY: the read lock keeps the threadsafe function from being released
                // meanwhile. Fails only while the environment shuts down, when nobody awaits.
                unsafe { sys::napi_call_threadsafe_function(t.0, ptr::null_mut(), sys::ThreadsafeFunctionCallMode::nonblocking) };
            }
        }
    }

    /// Settle every queued result (JS thread).
    fn settle(&self, env: sys::napi_env) {
        self.wake_pending.store(false, Ordering::SeqCst);
        let batch = std::mem::take(&mut *lock(&self.done));
        let settled = batch.len();
        for (deferred, result) in batch {
            // SAFETY: JS thread, each deferred settled exactly once.
            unsafe {
                let value = match result {
                    Ok(v) => T::to_napi_value(env, v).map_err(|e| JsError::from(e).into_value(env)),
                    Err(f) => Err(JsError::from(f.into_napi(&Env::from_raw(env))).into_value(env)),
                };
                match value {
                    Ok(v) => sys::napi_resolve_deferred(env, deferred.0, v),
                    Err(err) => sys::napi_reject_deferred(env, deferred.0, err),
                };
            }
        }
        self.finished(env, settled);
    }

    /// A promise from `begin` that will never be settled (its work was not submitted).
    pub fn abandon(&self, env: &Env) {
        self.finished(env.raw(), 1);
    }

    fn finished(&self, env: sys::napi_env, n: usize) {
        if n > 0 && self.in_flight.fetch_sub(n, Ordering::Relaxed) == n {
            if let Some(t) = self.tsfn.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
                // SAFETY: JS thread, live threadsafe function.
                unsafe { sys::napi_unref_threadsafe_function(env, t.0) };
            }
        }
    }

    /// Release the threadsafe function (JS thread, when the store object is collected).
    pub fn release(&self) {
        let taken = self.tsfn.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = taken {
            // SAFETY: taken under the write lock, so no other thread calls it any more.
            unsafe { sys::napi_release_threadsafe_function(t.0, sys::ThreadsafeFunctionReleaseMode::release) };
        }
    }
}

unsafe extern "C" fn call_js<T: ToNapiValue + Send + 'static>(
    env: sys::napi_env,
    _js: sys::napi_value,
    context: *mut c_void,
    _data: *mut c_void,
) {
    // A null env: the environment is being torn down; nothing can be settled any more.
    if env.is_null() || context.is_null() {
        return;
    }
    // SAFETY: `context` is the reference owned by the threadsafe function, alive until `finalize`.
    let c = unsafe { &*(context as *const Completions<T>) };
    c.settle(env);
}

unsafe extern "C" fn finalize<T>(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: the reference given to the threadsafe function in `new`, returned exactly once.
    let c = unsafe { Arc::from_raw(data as *const Completions<T>) };
    // Finalized by the environment's teardown before `release`: never call it again.
    c.tsfn.write().unwrap_or_else(|p| p.into_inner()).take();
}

// Shared with the commit thread and the query workers.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Completions<napi::bindgen_prelude::BigInt>>();
    assert_send_sync::<Completions<Vec<String>>>();
};
