//! A batch handed to the commit thread in chunks as JavaScript encodes it, so the thread decodes
//! one chunk while the next is encoded (`cairn_core::engine::StagedBatch`). It commits as one
//! record, exactly as `commit` of the whole payload does.

use cairn_core::engine::StagedBatch;
use napi::bindgen_prelude::*;
use napi::{Env, JsObject};
use napi_derive::napi;

use crate::errors::sync;
use crate::store::NativeStore;

/// A batch being staged (`NativeStore.beginBatch`).
#[napi]
pub struct NativeStagedBatch {
    batch: StagedBatch,
}

#[napi]
impl NativeStagedBatch {
    /// Drop what was staged; committing it afterwards is refused.
    #[napi]
    pub fn abort(&self, env: Env) -> napi::Result<()> {
        sync(&env, || {
            self.batch.abort();
            Ok(())
        })
    }
}

#[napi]
impl NativeStore {
    #[napi]
    pub fn begin_batch(&self) -> NativeStagedBatch {
        NativeStagedBatch { batch: self.engine.begin_staged() }
    }

    /// Queue one chunk of `batch`: encoded operations back to back, without the payload's count
    /// field (docs/format.md, "Batch payload"). Copied before this returns; an error in it
    /// rejects the batch's commit.
    #[napi]
    pub fn stage_chunk(&self, env: Env, batch: &NativeStagedBatch, chunk: Buffer) -> napi::Result<()> {
        sync(&env, || {
            self.engine.stage(&batch.batch, chunk.to_vec());
            Ok(())
        })
    }

    /// Commit `batch` as one record. Resolves with its sequence number once durable, as
    /// `commit` does.
    #[napi(ts_return_type = "Promise<bigint>")]
    pub fn commit_staged(&self, env: Env, batch: &NativeStagedBatch) -> napi::Result<JsObject> {
        let staged = batch.batch.clone();
        self.submit_to_commit_thread(&env, Vec::new(), move |engine, _, done| engine.submit_staged(&staged, done))
    }
}
