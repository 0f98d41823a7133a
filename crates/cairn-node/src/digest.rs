//! Content digests of a collection's rows (`NativeStore.rowDigests`), for the recovery drill's
//! reference model.

use napi::bindgen_prelude::AsyncTask;
use napi_derive::napi;

use crate::errors::core;
use crate::store::NativeStore;
use crate::task::{task, CoreTask};

#[napi(object)]
pub struct NativeRowDigests {
    /// Sorted.
    pub ids: Vec<String>,
    /// xxh3 of each row's vector (little-endian bytes) and metadata, as 16 hex digits.
    pub digests: Vec<String>,
}

#[napi]
impl NativeStore {
    /// Every row of `collection` with its content digest; off the event loop.
    #[napi(ts_return_type = "Promise<NativeRowDigests>")]
    pub fn row_digests(&self, collection: String) -> AsyncTask<CoreTask<NativeRowDigests>> {
        let engine = self.engine.clone();
        task(move || {
            let rows = core(engine.row_digests(&collection)).map_err(|f| f.in_collection(&collection))?;
            let (ids, digests) = rows.into_iter().map(|(id, d)| (id, format!("{d:016x}"))).unzip();
            Ok(NativeRowDigests { ids, digests })
        })
    }
}
