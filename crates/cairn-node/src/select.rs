//! Reads and deletes by filter on `NativeStore`: `countWhere`, `scan` (one page, id order),
//! `getMany` and `deleteWherePayload`. Filters arrive as JSON text (TypeScript checks only
//! that the filter is plain JSON; `cairn_core::filter` validates it, naming path and operator).

use cairn_core::engine::ScannedRow;
use cairn_core::filter::Filter;
use napi::bindgen_prelude::*;
use napi::Env;
use napi_derive::napi;

use crate::errors::{core, sync, Failure};
use crate::store::{NativeRow, NativeStore};
use crate::task::{task, CoreTask};

/// `{}` when absent.
pub(crate) fn parse_filter(filter: Option<&str>, collection: &str) -> std::result::Result<Filter, Failure> {
    match filter {
        None => Ok(Filter::all()),
        Some(f) => core(Filter::parse(f)).map_err(|e| e.in_collection(collection)),
    }
}

#[napi(object)]
pub struct NativeScanPage {
    pub ids: Vec<String>,
    /// JSON text of each row's metadata, as stored.
    pub metadata: Vec<String>,
    /// The rows' vectors packed as little-endian f32, when asked for.
    pub vectors: Option<Buffer>,
}

/// A scan page as it crosses: vectors packed little-endian when asked for.
pub(crate) fn scan_page(rows: Vec<ScannedRow>, vectors: bool) -> NativeScanPage {
    let mut page = NativeScanPage { ids: Vec::with_capacity(rows.len()), metadata: Vec::with_capacity(rows.len()), vectors: None };
    let mut packed: Vec<u8> = Vec::new();
    for (id, vector, metadata) in rows {
        page.ids.push(id);
        page.metadata.push(metadata);
        for x in vector.iter().flatten() {
            packed.extend_from_slice(&x.to_le_bytes());
        }
    }
    page.vectors = vectors.then(|| Buffer::from(packed));
    page
}

/// Rows found by id, as they cross.
pub(crate) fn found_rows(rows: Vec<Option<(Vec<f32>, String)>>) -> Vec<Option<NativeRow>> {
    rows.into_iter().map(|r| r.map(|(vector, metadata)| NativeRow { vector: Float32Array::new(vector), metadata })).collect()
}

#[napi(object)]
pub struct NativeDeletePlan {
    /// Batch payload deleting every matching row (docs/format.md, "Batch payload"); empty when
    /// nothing matches.
    pub payload: Buffer,
    pub deleted: u32,
}

#[napi]
impl NativeStore {
    /// Live rows matching `filter` (JSON text; absent: all), off the event loop.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn count_where(&self, env: Env, collection: String, filter: Option<String>) -> napi::Result<AsyncTask<CoreTask<u32>>> {
        let filter = sync(&env, || parse_filter(filter.as_deref(), &collection))?;
        let engine = self.engine.clone();
        Ok(task(move || core(engine.count_where(&collection, &filter)).map(|n| n as u32).map_err(|f| f.in_collection(&collection))))
    }

    /// One page of rows matching `filter` with ids above `after`, in id order.
    #[napi(ts_return_type = "Promise<NativeScanPage>")]
    pub fn scan(
        &self,
        env: Env,
        collection: String,
        filter: Option<String>,
        after: Option<String>,
        limit: u32,
        vectors: bool,
    ) -> napi::Result<AsyncTask<CoreTask<NativeScanPage>>> {
        let filter = sync(&env, || parse_filter(filter.as_deref(), &collection))?;
        let engine = self.engine.clone();
        Ok(task(move || {
            let rows = core(engine.scan(&collection, &filter, after.as_deref(), limit as usize, vectors))
                .map_err(|f| f.in_collection(&collection))?;
            Ok(scan_page(rows, vectors))
        }))
    }

    /// Rows by id in input order; null for an id with no row.
    #[napi]
    pub fn get_many(&self, env: Env, collection: String, ids: Vec<String>) -> napi::Result<Vec<Option<NativeRow>>> {
        let rows = sync(&env, || core(self.engine.get_many(&collection, &ids)).map_err(|f| f.in_collection(&collection)))?;
        Ok(found_rows(rows))
    }

    /// The one batch that deletes every row matching `filter`, for the write path to commit.
    #[napi(ts_return_type = "Promise<NativeDeletePlan>")]
    pub fn delete_where_payload(
        &self,
        env: Env,
        collection: String,
        filter: String,
    ) -> napi::Result<AsyncTask<CoreTask<NativeDeletePlan>>> {
        let filter = sync(&env, || parse_filter(Some(&filter), &collection))?;
        let engine = self.engine.clone();
        Ok(task(move || {
            let (payload, deleted) = core(engine.delete_where_payload(&collection, &filter)).map_err(|f| f.in_collection(&collection))?;
            Ok(NativeDeletePlan { payload: Buffer::from(payload), deleted: deleted as u32 })
        }))
    }
}
