//! The open store: `openStore` and the `NativeStore` class (commit, reads, queries, index
//! state, checkpoint, close). Scrub, snapshot and report methods of the class live with
//! their concepts (`repair.rs`, `snapshot.rs`, `recovery_report.rs`).

use std::path::PathBuf;
use std::sync::Arc;

use cairn_core::engine::{CollectionInfo, Engine, Options, QueryOutput, SyncMode};
use cairn_core::filter::Filter;
use cairn_core::wal::writer::Prealloc;
use cairn_core::RecoveryMode;
use napi::bindgen_prelude::*;
use napi::{Env, JsObject, Task};
use napi_derive::napi;

use crate::completions::Completions;
use crate::errors::{core, guarded, sync, Failure, Outcome};
use crate::task::{task, CoreTask};

#[napi(object)]
pub struct NativeOpenOptions {
    #[napi(ts_type = "'none' | 'group' | 'always'")]
    pub sync: String,
    #[napi(ts_type = "'tolerate-torn-tail' | 'absolute-consistency' | 'skip-corrupt'")]
    pub recovery: String,
    pub segment_bytes: Option<u32>,
    pub archive_max_age_ms: Option<f64>,
    pub archive_max_bytes: Option<f64>,
    /// Open as a replica: local writes are refused with `CAIRN_NOT_PRIMARY`.
    pub replica: Option<bool>,
    /// Keep the engine's counters and histograms (default true).
    pub metrics: Option<bool>,
    /// Share of one core the background indexer may use while writes arrive, in [0, 1].
    pub indexer_write_share: Option<f64>,
}

pub struct OpenTask {
    dir: PathBuf,
    opts: Option<Options>,
    failure: Option<Failure>,
}

impl Task for OpenTask {
    type Output = Engine;
    type JsValue = NativeStore;
    fn compute(&mut self) -> napi::Result<Engine> {
        let opts = self.opts.take();
        let dir = self.dir.clone();
        let r = guarded(move || match opts {
            Some(opts) => core(Engine::open(&dir, opts)),
            None => Err(Failure::internal("open task ran twice")),
        });
        r.map_err(|f| {
            let e = napi::Error::new(Status::GenericFailure, f.message().to_string());
            self.failure = Some(f);
            e
        })
    }
    fn resolve(&mut self, env: Env, engine: Engine) -> napi::Result<NativeStore> {
        NativeStore::new(&env, engine)
    }
    fn reject(&mut self, env: Env, err: napi::Error) -> napi::Result<NativeStore> {
        Err(match self.failure.take() {
            Some(f) => f.into_napi(&env),
            None => err,
        })
    }
}

/// Open (recovering if needed) the store in `dir`. Runs off the event loop.
#[napi(ts_return_type = "Promise<NativeStore>")]
pub fn open_store(env: Env, dir: String, options: NativeOpenOptions) -> napi::Result<AsyncTask<OpenTask>> {
    // Vector blocks and link lists take huge pages exactly when the allocator may (allocator.rs).
    cairn_core::mapped::use_huge_pages(crate::allocator::allocator_huge_pages());
    let opts = sync(&env, || {
        let sync = SyncMode::parse(&options.sync).ok_or_else(|| Failure::invalid("options.sync must be 'none', 'group' or 'always'"))?;
        let recovery = RecoveryMode::parse(&options.recovery)
            .ok_or_else(|| Failure::invalid("options.recovery must be 'tolerate-torn-tail', 'absolute-consistency' or 'skip-corrupt'"))?;
        let mut opts = Options { sync, recovery, prealloc: Prealloc::Background, ..Options::default() };
        if let Some(b) = options.segment_bytes {
            opts.segment_bytes = u64::from(b);
        }
        opts.archive_max_age_ms = options.archive_max_age_ms.map(|v| v as u64);
        opts.archive_max_bytes = options.archive_max_bytes.map(|v| v as u64);
        opts.replica = options.replica.unwrap_or(false);
        opts.metrics = options.metrics.unwrap_or(true);
        if let Some(share) = options.indexer_write_share {
            if !(0.0..=1.0).contains(&share) {
                return Err(Failure::invalid("options.indexerWriteShare must be a number from 0 to 1"));
            }
            opts.index_write_share = share;
        }
        Ok(opts)
    })?;
    Ok(AsyncTask::new(OpenTask { dir: PathBuf::from(dir), opts: Some(opts), failure: None }))
}

#[napi(object)]
pub struct NativeRow {
    pub vector: Float32Array,
    /// JSON text of the record's metadata, as stored.
    pub metadata: String,
}

#[napi(object)]
pub struct NativeCollectionInfo {
    pub name: String,
    pub dim: u32,
    #[napi(ts_type = "'cosine' | 'l2' | 'ip'")]
    pub metric: String,
    pub m: u32,
    pub ef_construction: u32,
    pub count: u32,
}

impl From<CollectionInfo> for NativeCollectionInfo {
    fn from(c: CollectionInfo) -> NativeCollectionInfo {
        NativeCollectionInfo {
            name: c.name,
            dim: c.dim,
            metric: c.metric.to_string(),
            m: c.m,
            ef_construction: c.ef_construction,
            count: c.count as u32,
        }
    }
}

/// A record a query could not consider (see `QueryOutput::skipped`).
#[napi(object)]
pub struct NativeSkipped {
    pub id: String,
    pub reason: String,
}

/// One query's hits, best first, column by column: JavaScript builds each hit object itself,
/// which costs a fraction of napi setting three named properties on an object per hit.
#[napi(object)]
pub struct NativeQueryResult {
    pub ids: Vec<String>,
    /// Each hit's score (`Metric::score` of its distance).
    pub scores: Vec<f64>,
    /// A JSON array of the hits' metadata, each element the record's JSON text as stored: one
    /// parse for all hits.
    pub metadata: String,
    pub skipped: Vec<NativeSkipped>,
}

impl From<QueryOutput> for NativeQueryResult {
    fn from(out: QueryOutput) -> NativeQueryResult {
        let n = out.hits.len();
        let (mut ids, mut scores) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut metadata = String::with_capacity(2 + out.hits.iter().map(|h| h.2.len() + 1).sum::<usize>());
        metadata.push('[');
        for (i, (id, score, meta)) in out.hits.into_iter().enumerate() {
            if i > 0 {
                metadata.push(',');
            }
            metadata.push_str(&meta);
            ids.push(id);
            scores.push(f64::from(score));
        }
        metadata.push(']');
        NativeQueryResult {
            ids,
            scores,
            metadata,
            skipped: out.skipped.into_iter().map(|s| NativeSkipped { id: s.id, reason: s.reason }).collect(),
        }
    }
}

#[napi(object)]
pub struct NativeIndexStats {
    pub indexed: u32,
    pub pending: u32,
    pub tombstones: u32,
    pub bytes: f64,
}

#[napi]
pub struct NativeStore {
    pub(crate) engine: Arc<Engine>,
    pub(crate) completions: Arc<Completions<BigInt>>,
    /// Settles `query` promises (see `query_worker.rs`).
    pub(crate) queries: Arc<Completions<Vec<NativeQueryResult>>>,
}

impl Drop for NativeStore {
    fn drop(&mut self) {
        self.completions.release();
        self.queries.release();
    }
}

impl NativeStore {
    fn new(env: &Env, engine: Engine) -> napi::Result<NativeStore> {
        Ok(NativeStore {
            completions: Completions::new(env, "cairnCommit")?,
            queries: Completions::new(env, "cairnQuery")?,
            engine: Arc::new(engine),
        })
    }
}

#[napi]
impl NativeStore {
    /// Commit an encoded batch (docs/format.md, "Batch payload"). Resolves with its sequence
    /// number once durable per the sync mode; concurrent calls share one fsync in `group` mode.
    #[napi(ts_return_type = "Promise<bigint>")]
    pub fn commit(&self, env: Env, payload: Buffer) -> napi::Result<JsObject> {
        self.submit_to_commit_thread(&env, payload.to_vec(), Engine::submit)
    }

    #[napi]
    pub fn get(&self, env: Env, collection: String, id: String) -> napi::Result<Option<NativeRow>> {
        let row = sync(&env, || core(self.engine.get(&collection, &id)).map_err(|f| f.in_collection(&collection).for_id(&id)))?;
        Ok(row.map(|(vector, metadata)| NativeRow { vector: Float32Array::new(vector), metadata }))
    }

    #[napi]
    pub fn count(&self, env: Env, collection: String) -> napi::Result<u32> {
        sync(&env, || core(self.engine.count(&collection)).map(|n| n as u32).map_err(|f| f.in_collection(&collection)))
    }

    #[napi]
    pub fn collections(&self, env: Env) -> napi::Result<Vec<NativeCollectionInfo>> {
        let list = sync(&env, || core(self.engine.collections()))?;
        Ok(list.into_iter().map(NativeCollectionInfo::from).collect())
    }

    /// k-NN search off the event loop, on a query worker: `count` queries packed in `vectors`,
    /// searched in parallel on all cores. `ef` absent means exact search (the ground truth).
    /// `filter` is a JSON object of field: value.
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
        let engine = self.engine.clone();
        let job = query_job(collection, vectors.to_vec(), count, move |collection, q| {
            engine_query(&engine, collection, q, k, ef, filter.as_ref())
        });
        submit_query(&env, &self.queries, job)
    }

    /// One k-NN search on the calling (JavaScript) thread: `query` without the hop to a query
    /// worker, for searches short enough that the hop would dominate. Blocks the event loop meanwhile.
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
            query_one(&collection, &vector, |collection, q| engine_query(&self.engine, collection, q, k, ef, filter.as_ref()))
        })
    }

    #[napi]
    pub fn index_stats(&self, env: Env, collection: String) -> napi::Result<NativeIndexStats> {
        let s = sync(&env, || core(self.engine.index_stats(&collection)).map_err(|f| f.in_collection(&collection)))?;
        Ok(NativeIndexStats {
            indexed: s.indexed as u32,
            pending: s.pending as u32,
            tombstones: s.tombstones as u32,
            bytes: s.bytes as f64,
        })
    }

    /// Resolves once every row applied so far is in the collection's HNSW graph.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn wait_for_index(&self, collection: String) -> AsyncTask<CoreTask<()>> {
        let engine = self.engine.clone();
        task(move || core(engine.wait_for_index(&collection)).map_err(|f| f.in_collection(&collection)))
    }

    #[napi(ts_return_type = "Promise<bigint>")]
    pub fn checkpoint(&self) -> AsyncTask<CoreTask<BigInt>> {
        let engine = self.engine.clone();
        task(move || core(engine.checkpoint()).map(BigInt::from))
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn close(&self) -> AsyncTask<CoreTask<()>> {
        let engine = self.engine.clone();
        task(move || {
            let closed = core(engine.close());
            // The close dropped the rows and graphs on this thread; hand their pages back to the
            // OS now rather than when this pool thread next allocates.
            // SAFETY: mi_collect only walks this thread's heap and the abandoned segments.
            unsafe { libmimalloc_sys::mi_collect(true) };
            closed
        })
    }

    #[napi(getter)]
    pub fn last_seq(&self) -> BigInt {
        BigInt::from(self.engine.last_seq())
    }

    /// Why writes are refused, if an fsync or write failed.
    #[napi(getter)]
    pub fn poisoned(&self) -> Option<String> {
        self.engine.poisoned()
    }
}

/// A query's filter, after checking that `len` values hold `count` queries.
pub(crate) fn query_filter(filter: Option<&str>, collection: &str, len: usize, count: u32) -> Outcome<Option<Filter>> {
    let filter = filter.map(|f| core(Filter::parse(f))).transpose().map_err(|f| f.in_collection(collection))?;
    if count == 0 || !len.is_multiple_of(count as usize) {
        return Err(Failure::invalid("vectors must hold count queries of equal dimension"));
    }
    Ok(filter)
}

/// The store's search: through the graph with beam `ef`, or exact when `ef` is absent.
fn engine_query(
    engine: &Engine,
    collection: &str,
    q: &[f32],
    k: u32,
    ef: Option<u32>,
    filter: Option<&Filter>,
) -> cairn_core::Result<QueryOutput> {
    match ef {
        Some(ef) => engine.query(collection, q, k as usize, ef as usize, filter),
        None => engine.query_exact(collection, q, k as usize, filter),
    }
}

/// `count` queries packed in `vectors`, each answered by `one`, in parallel on all cores.
pub(crate) fn query_job(
    collection: String,
    vectors: Vec<f32>,
    count: u32,
    one: impl Fn(&str, &[f32]) -> cairn_core::Result<QueryOutput> + Send + Sync + 'static,
) -> impl FnOnce() -> Outcome<Vec<NativeQueryResult>> + Send + 'static {
    move || {
        use rayon::prelude::*;
        if count == 1 {
            return query_one(&collection, &vectors, one).map(|r| vec![r]);
        }
        let dim = (vectors.len() / count as usize).max(1);
        let out: cairn_core::Result<Vec<QueryOutput>> = vectors.par_chunks(dim).map(|q| one(&collection, q)).collect();
        Ok(core(out).map_err(|f| f.in_collection(&collection))?.into_iter().map(NativeQueryResult::from).collect())
    }
}

/// A promise of `job`'s results, run on a query worker and settled through `queries`.
pub(crate) fn submit_query(
    env: &Env,
    queries: &Arc<Completions<Vec<NativeQueryResult>>>,
    job: impl FnOnce() -> Outcome<Vec<NativeQueryResult>> + Send + 'static,
) -> napi::Result<JsObject> {
    let (deferred, promise) = queries.begin(env)?;
    let settle = queries.clone();
    if let Err(f) = crate::query_worker::run(job, move |r| settle.complete(deferred, r)) {
        queries.abandon(env);
        return Err(f.into_napi(env));
    }
    Ok(promise)
}

/// One query answered by `one`, on this thread; a failure names the collection.
pub(crate) fn query_one(
    collection: &str,
    vector: &[f32],
    one: impl Fn(&str, &[f32]) -> cairn_core::Result<QueryOutput>,
) -> Outcome<NativeQueryResult> {
    core(one(collection, vector)).map(NativeQueryResult::from).map_err(|f| f.in_collection(collection))
}

/// A job on the open engine, for the other concepts' methods of `NativeStore`.
impl NativeStore {
    /// Hand `bytes` to the commit thread through `submit` and return a promise settled on the JS
    /// thread when the commit thread completes it (see `completions.rs`).
    pub(crate) fn submit_to_commit_thread(
        &self,
        env: &Env,
        bytes: Vec<u8>,
        submit: impl FnOnce(&Engine, Vec<u8>, cairn_core::engine::CommitCallback),
    ) -> napi::Result<JsObject> {
        let (deferred, promise) = self.completions.begin(env)?;
        let engine = self.engine.clone();
        let completions = self.completions.clone();
        let submitted = guarded(move || {
            submit(&engine, bytes, Box::new(move |r| completions.complete(deferred, r.map(BigInt::from).map_err(Failure::from))));
            Ok(())
        });
        if let Err(f) = submitted {
            self.completions.abandon(env);
            return Err(f.into_napi(env));
        }
        Ok(promise)
    }
}

pub(crate) fn on_engine<V: ToNapiValue + TypeName + Send + 'static>(
    store: &NativeStore,
    job: impl FnOnce(&Engine) -> Outcome<V> + Send + 'static,
) -> AsyncTask<CoreTask<V>> {
    let engine = store.engine.clone();
    task(move || job(&engine))
}
