//! Thin napi binding of cairn-core: converts types and errors, nothing else.
//! Errors cross as `Error` whose message starts with the stable code (`CAIRN_X: ...`);
//! the TypeScript layer turns that into a `CairnError`. No panic crosses the boundary.

#![deny(clippy::all)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use cairn_core::engine::{Engine, Options, QueryOutput, SyncMode};
use cairn_core::state::Filter;
use cairn_core::wal::writer::Prealloc;
use cairn_core::RecoveryMode;
use napi::bindgen_prelude::*;
use napi::{Env, JsObject, Task};
use napi_derive::napi;

mod completions;
mod scrub;

use completions::Completions;

fn to_napi(e: cairn_core::Error) -> napi::Error {
    napi::Error::new(Status::GenericFailure, format!("{}: {}", e.code(), e))
}

fn invalid(msg: impl Into<String>) -> napi::Error {
    napi::Error::new(Status::InvalidArg, format!("CAIRN_INVALID_ARGUMENT: {}", msg.into()))
}

/// Run engine code, turning a panic into a `CAIRN_INTERNAL` error instead of aborting Node.
fn guarded<T>(f: impl FnOnce() -> cairn_core::Result<T>) -> napi::Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(to_napi),
        Err(_) => Err(napi::Error::new(Status::GenericFailure, "CAIRN_INTERNAL: internal panic in the native engine".to_string())),
    }
}

#[napi(object)]
pub struct OpenOptions {
    pub sync: String,
    pub recovery: String,
    pub segment_bytes: Option<u32>,
    pub archive_max_age_ms: Option<f64>,
    pub archive_max_bytes: Option<f64>,
}

pub struct OpenTask {
    dir: PathBuf,
    opts: Option<Options>,
}

impl Task for OpenTask {
    type Output = Engine;
    type JsValue = NativeStore;
    fn compute(&mut self) -> napi::Result<Engine> {
        let opts = self.opts.take().ok_or_else(|| invalid("open task ran twice"))?;
        let dir = self.dir.clone();
        guarded(move || Engine::open(&dir, opts))
    }
    fn resolve(&mut self, env: Env, engine: Engine) -> napi::Result<NativeStore> {
        Ok(NativeStore { completions: Completions::new(&env)?, engine: Arc::new(engine) })
    }
}

/// Open (recovering if needed) the store in `dir`. Runs off the event loop.
#[napi(ts_return_type = "Promise<NativeStore>")]
pub fn open_store(dir: String, options: OpenOptions) -> napi::Result<AsyncTask<OpenTask>> {
    let sync = SyncMode::parse(&options.sync).ok_or_else(|| invalid("options.sync must be 'none', 'group' or 'always'"))?;
    let recovery = RecoveryMode::parse(&options.recovery)
        .ok_or_else(|| invalid("options.recovery must be 'tolerate-torn-tail', 'absolute-consistency' or 'skip-corrupt'"))?;
    let mut opts = Options { sync, recovery, prealloc: Prealloc::Background, ..Options::default() };
    if let Some(b) = options.segment_bytes {
        opts.segment_bytes = u64::from(b);
    }
    opts.archive_max_age_ms = options.archive_max_age_ms.map(|v| v as u64);
    opts.archive_max_bytes = options.archive_max_bytes.map(|v| v as u64);
    Ok(AsyncTask::new(OpenTask { dir: PathBuf::from(dir), opts: Some(opts) }))
}

#[napi(object)]
pub struct NativeHit {
    pub id: String,
    pub score: f64,
    pub metadata: String,
}

#[napi(object)]
pub struct NativeRow {
    pub vector: Float32Array,
    pub metadata: String,
}

#[napi(object)]
pub struct NativeCollectionInfo {
    pub name: String,
    pub dim: u32,
    pub metric: String,
    pub m: u32,
    pub ef_construction: u32,
    pub count: u32,
}

/// A record a query could not consider (see `QueryOutput::skipped`).
#[napi(object)]
pub struct NativeSkipped {
    pub id: String,
    pub reason: String,
}

#[napi(object)]
pub struct NativeQueryResult {
    pub hits: Vec<NativeHit>,
    pub skipped: Vec<NativeSkipped>,
}

fn to_result(out: QueryOutput) -> NativeQueryResult {
    NativeQueryResult {
        hits: out.hits.into_iter().map(|(id, score, metadata)| NativeHit { id, score: f64::from(score), metadata }).collect(),
        skipped: out.skipped.into_iter().map(|s| NativeSkipped { id: s.id, reason: s.reason }).collect(),
    }
}

/// One query, or many (`vectors` holds `count` queries back to back) spread over all cores.
pub struct QueryTask {
    engine: Arc<Engine>,
    collection: String,
    vectors: Vec<f32>,
    count: usize,
    k: usize,
    /// None: exact search (the ground truth).
    ef: Option<usize>,
    filter: Option<Filter>,
}

impl QueryTask {
    fn run_one(&self, q: &[f32]) -> cairn_core::Result<QueryOutput> {
        match self.ef {
            Some(ef) => self.engine.query(&self.collection, q, self.k, ef, self.filter.as_ref()),
            None => self.engine.query_exact(&self.collection, q, self.k, self.filter.as_ref()),
        }
    }
}

impl Task for QueryTask {
    type Output = Vec<QueryOutput>;
    type JsValue = Vec<NativeQueryResult>;
    fn compute(&mut self) -> napi::Result<Self::Output> {
        use rayon::prelude::*;
        let dim = self.vectors.len() / self.count.max(1);
        guarded(|| {
            if self.count == 1 {
                return Ok(vec![self.run_one(&self.vectors)?]);
            }
            self.vectors.par_chunks(dim.max(1)).map(|q| self.run_one(q)).collect()
        })
    }
    fn resolve(&mut self, _env: Env, out: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(out.into_iter().map(to_result).collect())
    }
}

#[napi(object)]
pub struct NativeIndexStats {
    pub indexed: u32,
    pub pending: u32,
    pub tombstones: u32,
    pub bytes: f64,
}

pub struct WaitIndexTask {
    engine: Arc<Engine>,
    collection: String,
}

impl Task for WaitIndexTask {
    type Output = ();
    type JsValue = ();
    fn compute(&mut self) -> napi::Result<()> {
        guarded(|| self.engine.wait_for_index(&self.collection))
    }
    fn resolve(&mut self, _env: Env, _out: ()) -> napi::Result<()> {
        Ok(())
    }
}

pub struct EngineTask<T: Send + 'static> {
    engine: Arc<Engine>,
    job: fn(&Engine) -> cairn_core::Result<T>,
}

impl<T: Send + 'static + ToNapiValue + TypeName> Task for EngineTask<T> {
    type Output = T;
    type JsValue = T;
    fn compute(&mut self) -> napi::Result<T> {
        let job = self.job;
        let engine = self.engine.clone();
        guarded(move || job(&engine))
    }
    fn resolve(&mut self, _env: Env, out: T) -> napi::Result<T> {
        Ok(out)
    }
}

pub struct JsonTask {
    job: Option<Box<dyn FnOnce() -> cairn_core::Result<String> + Send>>,
}

impl Task for JsonTask {
    type Output = String;
    type JsValue = String;
    fn compute(&mut self) -> napi::Result<String> {
        let job = self.job.take().ok_or_else(|| invalid("task ran twice"))?;
        guarded(job)
    }
    fn resolve(&mut self, _env: Env, out: String) -> napi::Result<String> {
        Ok(out)
    }
}

fn json_task<T: serde::Serialize>(f: impl FnOnce() -> cairn_core::Result<T> + Send + 'static) -> AsyncTask<JsonTask> {
    AsyncTask::new(JsonTask {
        job: Some(Box::new(move || {
            let v = f()?;
            serde_json::to_string(&v).map_err(|e| cairn_core::Error::InvalidArgument(e.to_string()))
        })),
    })
}

/// Restore `source` into `target` as of `seq` or `timeMs` (neither: the latest state).
/// Never takes the source's writer lock. Resolves with a JSON `RestoreResult`.
#[napi(ts_return_type = "Promise<string>")]
pub fn restore_store(source: String, target: String, seq: Option<BigInt>, time_ms: Option<f64>) -> napi::Result<AsyncTask<JsonTask>> {
    use cairn_core::pitr::{restore, RestoreTarget};
    let to = match (seq, time_ms) {
        (Some(_), Some(_)) => return Err(invalid("to must give either seq or time, not both")),
        (Some(s), None) => {
            let (negative, value, lossless) = s.get_u64();
            if negative || !lossless {
                return Err(invalid("to.seq must be a non-negative 64-bit integer"));
            }
            RestoreTarget::Seq(value)
        }
        (None, Some(t)) if t.is_finite() && t >= 0.0 => RestoreTarget::Time(t as u64),
        (None, Some(_)) => return Err(invalid("to.time must be a valid date")),
        (None, None) => RestoreTarget::Latest,
    };
    Ok(json_task(move || restore(std::path::Path::new(&source), std::path::Path::new(&target), to)))
}

/// The seqs and times that `restore` can reach, as JSON.
#[napi(ts_return_type = "Promise<string>")]
pub fn recoverable_range(source: String) -> AsyncTask<JsonTask> {
    json_task(move || cairn_core::pitr::recoverable_range(std::path::Path::new(&source)))
}

/// Complete snapshots of the store in `dir`, as JSON.
#[napi(ts_return_type = "Promise<string>")]
pub fn list_snapshots(dir: String) -> AsyncTask<JsonTask> {
    json_task(move || cairn_core::snapshot::list(std::path::Path::new(&dir)))
}

/// xxh3-64 of a buffer as 16 hex digits, the form used in manifests.
#[napi]
pub fn xxh3_hex(data: Buffer) -> String {
    format!("{:016x}", cairn_core::checksum::xxh3(&data))
}

/// Byte-shuffle with 4-byte lanes (all first bytes, then all second bytes, ...): float32 data
/// compresses better this way. A tail shorter than a lane is kept as is.
#[napi]
pub fn shuffle4(data: Buffer) -> Buffer {
    let n = data.len() / 4;
    let mut out = vec![0u8; data.len()];
    for lane in 0..4 {
        let dst = &mut out[lane * n..(lane + 1) * n];
        for (i, d) in dst.iter_mut().enumerate() {
            *d = data[i * 4 + lane];
        }
    }
    out[4 * n..].copy_from_slice(&data[4 * n..]);
    out.into()
}

/// Inverse of `shuffle4`.
#[napi]
pub fn unshuffle4(data: Buffer) -> Buffer {
    let n = data.len() / 4;
    let mut out = vec![0u8; data.len()];
    for lane in 0..4 {
        let src = &data[lane * n..(lane + 1) * n];
        for (i, s) in src.iter().enumerate() {
            out[i * 4 + lane] = *s;
        }
    }
    out[4 * n..].copy_from_slice(&data[4 * n..]);
    out.into()
}

#[napi]
pub struct NativeStore {
    engine: Arc<Engine>,
    completions: Arc<Completions>,
}

impl Drop for NativeStore {
    fn drop(&mut self) {
        self.completions.release();
    }
}

#[napi]
impl NativeStore {
    /// Commit an encoded batch (docs/format.md, "Batch payload"). Resolves with its sequence
    /// number once durable per the sync mode; concurrent calls share one fsync in `group` mode.
    #[napi(ts_return_type = "Promise<bigint>")]
    pub fn commit(&self, env: Env, payload: Buffer) -> napi::Result<JsObject> {
        let (deferred, promise) = self.completions.begin(&env)?;
        let bytes = payload.to_vec();
        let engine = self.engine.clone();
        let completions = self.completions.clone();
        let submitted = catch_unwind(AssertUnwindSafe(move || engine.submit(bytes, Box::new(move |r| completions.complete(deferred, r)))));
        if submitted.is_err() {
            self.completions.abandon(&env);
            return Err(napi::Error::new(Status::GenericFailure, "CAIRN_INTERNAL: internal panic in commit".to_string()));
        }
        Ok(promise)
    }

    #[napi]
    pub fn get(&self, collection: String, id: String) -> napi::Result<Option<NativeRow>> {
        let row = guarded(|| self.engine.get(&collection, &id))?;
        Ok(row.map(|(vector, metadata)| NativeRow { vector: Float32Array::new(vector), metadata }))
    }

    #[napi]
    pub fn count(&self, collection: String) -> napi::Result<u32> {
        guarded(|| self.engine.count(&collection)).map(|n| n as u32)
    }

    #[napi]
    pub fn collections(&self) -> napi::Result<Vec<NativeCollectionInfo>> {
        let list = guarded(|| self.engine.collections())?;
        Ok(list
            .into_iter()
            .map(|c| NativeCollectionInfo {
                name: c.name,
                dim: c.dim,
                metric: c.metric.to_string(),
                m: c.m,
                ef_construction: c.ef_construction,
                count: c.count as u32,
            })
            .collect())
    }

    /// k-NN search off the event loop: `count` queries packed in `vectors`, searched in parallel.
    /// `ef` absent means exact search. `filter` is a JSON object of field: value.
    #[napi(ts_return_type = "Promise<NativeQueryResult[]>")]
    pub fn query(
        &self,
        collection: String,
        vectors: Float32Array,
        count: u32,
        k: u32,
        ef: Option<u32>,
        filter: Option<String>,
    ) -> napi::Result<AsyncTask<QueryTask>> {
        let filter = match filter {
            Some(f) => Some(Filter::parse(&f).map_err(to_napi)?),
            None => None,
        };
        if count == 0 || !vectors.len().is_multiple_of(count as usize) {
            return Err(invalid("vectors must hold count queries of equal dimension"));
        }
        Ok(AsyncTask::new(QueryTask {
            engine: self.engine.clone(),
            collection,
            vectors: vectors.to_vec(),
            count: count as usize,
            k: k as usize,
            ef: ef.map(|e| e as usize),
            filter,
        }))
    }

    #[napi]
    pub fn index_stats(&self, collection: String) -> napi::Result<NativeIndexStats> {
        let s = guarded(|| self.engine.index_stats(&collection))?;
        Ok(NativeIndexStats {
            indexed: s.indexed as u32,
            pending: s.pending as u32,
            tombstones: s.tombstones as u32,
            bytes: s.bytes as f64,
        })
    }

    /// Resolves once every row applied so far is in the collection's HNSW graph.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn wait_for_index(&self, collection: String) -> AsyncTask<WaitIndexTask> {
        AsyncTask::new(WaitIndexTask { engine: self.engine.clone(), collection })
    }

    #[napi(ts_return_type = "Promise<bigint>")]
    pub fn checkpoint(&self) -> AsyncTask<EngineTask<BigInt>> {
        AsyncTask::new(EngineTask { engine: self.engine.clone(), job: |e| e.checkpoint().map(BigInt::from) })
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn close(&self) -> AsyncTask<EngineTask<()>> {
        AsyncTask::new(EngineTask { engine: self.engine.clone(), job: |e| e.close() })
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

    /// Checkpoint, then snapshot; resolves with the JSON `SnapshotInfo`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn snapshot(&self, incremental: bool) -> AsyncTask<JsonTask> {
        let engine = self.engine.clone();
        json_task(move || cairn_core::snapshot::take(&engine, incremental))
    }

    /// What recovery found on open, as JSON (see `RecoveryReport`).
    #[napi]
    pub fn recovery_report(&self) -> String {
        serde_json::to_string(self.engine.recovery_report()).unwrap_or_else(|_| "{}".to_string())
    }
}
