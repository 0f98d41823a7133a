//! Payload indexes on `NativeStore`: `createIndex`, `indexes`, `dropIndex`.

use cairn_core::payload::IndexKind;
use napi::bindgen_prelude::*;
use napi::Env;
use napi_derive::napi;

use crate::errors::{core, sync, Failure};
use crate::store::NativeStore;
use crate::task::{task, CoreTask};

#[napi(object)]
pub struct NativePayloadIndex {
    pub field: String,
    #[napi(ts_type = "'keyword' | 'number' | 'bool'")]
    pub r#type: String,
    pub entries: f64,
}

#[napi]
impl NativeStore {
    /// Build the index over every row, then checkpoint so it is persisted.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn create_index(&self, env: Env, collection: String, field: String, kind: String) -> napi::Result<AsyncTask<CoreTask<()>>> {
        let kind =
            sync(&env, || IndexKind::parse(&kind).ok_or_else(|| Failure::invalid("options.type must be 'keyword', 'number' or 'bool'")))?;
        let engine = self.engine.clone();
        Ok(task(move || core(engine.create_index(&collection, &field, kind)).map_err(|f| f.in_collection(&collection))))
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn drop_index(&self, collection: String, field: String) -> AsyncTask<CoreTask<()>> {
        let engine = self.engine.clone();
        task(move || core(engine.drop_index(&collection, &field)).map_err(|f| f.in_collection(&collection)))
    }

    #[napi]
    pub fn indexes(&self, env: Env, collection: String) -> napi::Result<Vec<NativePayloadIndex>> {
        let list = sync(&env, || core(self.engine.indexes(&collection)).map_err(|f| f.in_collection(&collection)))?;
        Ok(list
            .into_iter()
            .map(|i| NativePayloadIndex { field: i.field, r#type: i.kind.as_str().to_string(), entries: i.entries as f64 })
            .collect())
    }
}
