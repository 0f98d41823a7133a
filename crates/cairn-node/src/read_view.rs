//! Read views and transactions on `NativeStore`: `readView()` returns a `NativeReadView` whose
//! reads answer as of its seq; `commitTransaction` submits a transaction's batch with the ids
//! it read, checked for conflicts against its view on the commit thread.

use std::sync::Arc;

use cairn_core::engine::{ConflictCheck, Engine, ReadView};
use napi::bindgen_prelude::*;
use napi::{Env, JsObject};
use napi_derive::napi;

use crate::completions::Completions;
use crate::errors::{core, sync};
use crate::select::{found_rows, parse_filter, scan_page, NativeScanPage};
use crate::store::{query_filter, query_job, query_one, submit_query, NativeCollectionInfo, NativeQueryResult, NativeRow, NativeStore};
use crate::task::{task, CoreTask};

/// One id a transaction read.
#[napi(object)]
pub struct NativeReadKey {
    pub collection: String,
    pub id: String,
}

#[napi(object)]
pub struct NativeViewStats {
    /// Read views open (transactions included: each reads through one).
    pub views: u32,
    /// Prior row versions kept alive for them.
    pub versions: f64,
    /// The oldest seq a view pins; null with none open.
    pub oldest_seq: Option<BigInt>,
}

/// A consistent view at `seq`; the same read methods as `NativeStore`.
#[napi]
pub struct NativeReadView {
    view: Arc<ReadView>,
    /// The store's, so that a view's queries settle like the store's.
    queries: Arc<Completions<Vec<NativeQueryResult>>>,
}

#[napi]
impl NativeStore {
    /// A read view at the last applied seq.
    #[napi]
    pub fn read_view(&self, env: Env) -> napi::Result<NativeReadView> {
        let view = sync(&env, || core(self.engine.read_view()))?;
        Ok(NativeReadView { view: Arc::new(view), queries: self.queries.clone() })
    }

    #[napi]
    pub fn view_stats(&self) -> NativeViewStats {
        let s = self.engine.view_stats();
        NativeViewStats { views: s.views as u32, versions: s.versions as f64, oldest_seq: s.oldest_seq.map(BigInt::from) }
    }

    /// Commit a transaction's writes (an encoded batch) if nothing in `reads` or in the batch
    /// changed after `view`'s seq; rejects with CAIRN_CONFLICT naming the id otherwise.
    #[napi(ts_return_type = "Promise<bigint>")]
    pub fn commit_transaction(
        &self,
        env: Env,
        view: &NativeReadView,
        payload: Buffer,
        reads: Vec<NativeReadKey>,
    ) -> napi::Result<JsObject> {
        let check = ConflictCheck { view: view.view.clone(), reads: reads.into_iter().map(|k| (k.collection, k.id)).collect() };
        self.submit_to_commit_thread(&env, payload.to_vec(), move |engine: &Engine, bytes, done| {
            engine.submit_transaction(bytes, check, done)
        })
    }
}

#[napi]
impl NativeReadView {
    #[napi(getter)]
    pub fn seq(&self) -> BigInt {
        BigInt::from(self.view.seq())
    }

    /// Unpin the view; idempotent. Later reads reject with CAIRN_VIEW_RELEASED.
    #[napi]
    pub fn release(&self) {
        self.view.release();
    }

    /// The collections that existed at the view's seq, with their counts then.
    #[napi]
    pub fn collections(&self, env: Env) -> napi::Result<Vec<NativeCollectionInfo>> {
        let list = sync(&env, || core(self.view.collections()))?;
        Ok(list.into_iter().map(NativeCollectionInfo::from).collect())
    }

    #[napi]
    pub fn get(&self, env: Env, collection: String, id: String) -> napi::Result<Option<NativeRow>> {
        let row = sync(&env, || core(self.view.get(&collection, &id)).map_err(|f| f.in_collection(&collection).for_id(&id)))?;
        Ok(found_rows(vec![row]).pop().flatten())
    }

    #[napi]
    pub fn get_many(&self, env: Env, collection: String, ids: Vec<String>) -> napi::Result<Vec<Option<NativeRow>>> {
        let rows = sync(&env, || core(self.view.get_many(&collection, &ids)).map_err(|f| f.in_collection(&collection)))?;
        Ok(found_rows(rows))
    }

    #[napi]
    pub fn count(&self, env: Env, collection: String) -> napi::Result<u32> {
        let all = cairn_core::filter::Filter::all();
        sync(&env, || core(self.view.count(&collection, &all)).map(|n| n as u32).map_err(|f| f.in_collection(&collection)))
    }

    #[napi(ts_return_type = "Promise<number>")]
    pub fn count_where(&self, env: Env, collection: String, filter: Option<String>) -> napi::Result<AsyncTask<CoreTask<u32>>> {
        let filter = sync(&env, || parse_filter(filter.as_deref(), &collection))?;
        let view = self.view.clone();
        Ok(task(move || core(view.count(&collection, &filter)).map(|n| n as u32).map_err(|f| f.in_collection(&collection))))
    }

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
        let view = self.view.clone();
        Ok(task(move || {
            let rows = core(view.scan(&collection, &filter, after.as_deref(), limit as usize, vectors))
                .map_err(|f| f.in_collection(&collection))?;
            Ok(scan_page(rows, vectors))
        }))
    }

    /// k-NN as of the view's seq; `ef` absent means exact.
    #[allow(
        clippy::too_many_arguments,
        reason = "the positional arguments of a JavaScript function; `expect` is unfulfilled through the napi macro"
    )]
    #[napi(ts_return_type = "Promise<Array<NativeQueryResult>>")]
    pub fn query(
        &self,
        env: Env,
        collection: String,
        vectors: Float32Array,
        count: u32,
        k: u32,
        ef: Option<u32>,
        filter: Option<String>,
    ) -> napi::Result<JsObject> {
        let filter = sync(&env, || query_filter(filter.as_deref(), &collection, vectors.len(), count))?;
        let view = self.view.clone();
        let (k, ef) = (k as usize, ef.map(|e| e as usize));
        let job = query_job(collection, vectors.to_vec(), count, move |collection, q| view.query(collection, q, k, ef, filter.as_ref()));
        submit_query(&env, &self.queries, job)
    }

    /// `query` for one vector on the calling thread (see `NativeStore::query_sync`).
    #[napi]
    pub fn query_sync(
        &self,
        env: Env,
        collection: String,
        vector: Float32Array,
        k: u32,
        ef: Option<u32>,
        filter: Option<String>,
    ) -> napi::Result<NativeQueryResult> {
        sync(&env, || {
            let filter = query_filter(filter.as_deref(), &collection, vector.len(), 1)?;
            let (k, ef) = (k as usize, ef.map(|e| e as usize));
            query_one(&collection, &vector, |collection, q| self.view.query(collection, q, k, ef, filter.as_ref()))
        })
    }
}
