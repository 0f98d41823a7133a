//! One async task type for every promise-returning export: the job runs on the libuv pool
//! under `guarded`, and a failure rejects with the error object of `errors.rs` (built in
//! `reject`, the first point that has an `Env` again).

use napi::bindgen_prelude::{AsyncTask, ToNapiValue, TypeName};
use napi::{Env, Status, Task};

use crate::errors::{guarded, Failure, Outcome};

type Job<V> = Box<dyn FnOnce() -> Outcome<V> + Send>;

pub struct CoreTask<V: Send + 'static> {
    job: Option<Job<V>>,
    failure: Option<Failure>,
}

/// A promise of `job`'s value.
pub fn task<V: ToNapiValue + TypeName + Send + 'static>(job: impl FnOnce() -> Outcome<V> + Send + 'static) -> AsyncTask<CoreTask<V>> {
    AsyncTask::new(CoreTask { job: Some(Box::new(job)), failure: None })
}

impl<V: ToNapiValue + TypeName + Send + 'static> Task for CoreTask<V> {
    type Output = V;
    type JsValue = V;

    fn compute(&mut self) -> napi::Result<V> {
        let r = match self.job.take() {
            Some(job) => guarded(job),
            None => Err(Failure::internal("task ran twice")),
        };
        r.map_err(|f| {
            let e = napi::Error::new(Status::GenericFailure, f.message().to_string());
            self.failure = Some(f);
            e
        })
    }

    fn resolve(&mut self, _env: Env, out: V) -> napi::Result<V> {
        Ok(out)
    }

    fn reject(&mut self, env: Env, err: napi::Error) -> napi::Result<V> {
        Err(match self.failure.take() {
            Some(f) => f.into_napi(&env),
            None => err,
        })
    }
}
