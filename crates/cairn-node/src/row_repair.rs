//! Record-level repair methods of `NativeStore` (read-repair and scrub from replicas): this
//! node's verified copy of a record, the records it cannot serve, and installing a copy fetched
//! from another node. Conversion only; the rules are in cairn-core's `engine/row_repair.rs`.

use cairn_core::engine::{RowCopy, RowRepairOutcome};
use napi::bindgen_prelude::*;
use napi::Env;
use napi_derive::napi;

use crate::errors::{core, sync};
use crate::store::{on_engine, NativeStore};
use crate::task::CoreTask;

/// This node's copy of a record: `found` (verified here), `absent`, or `damaged` (with the
/// label of the damaged version, `seq << 24 | op index`).
#[napi(object)]
pub struct NativeRowCopy {
    #[napi(ts_type = "'found' | 'absent' | 'damaged'")]
    pub state: String,
    pub label: BigInt,
    pub vector: Option<Float32Array>,
    pub metadata: Option<String>,
}

#[napi(object)]
pub struct NativeDamagedRow {
    pub collection: String,
    pub id: String,
    pub label: BigInt,
    pub reason: String,
}

#[napi(object)]
pub struct NativeRowRepairOutcome {
    #[napi(ts_type = "'installed' | 'moot'")]
    pub outcome: String,
    pub checkpoint_seq: Option<BigInt>,
}

#[napi]
impl NativeStore {
    #[napi]
    pub fn row_copy(&self, env: Env, collection: String, id: String) -> napi::Result<NativeRowCopy> {
        let copy = sync(&env, || core(self.engine.row_copy(&collection, &id)).map_err(|f| f.in_collection(&collection).for_id(&id)))?;
        Ok(match copy {
            RowCopy::Found { label, vector, metadata } => NativeRowCopy {
                state: "found".into(),
                label: BigInt::from(label),
                vector: Some(Float32Array::new(vector)),
                metadata: Some(metadata),
            },
            RowCopy::Absent => NativeRowCopy { state: "absent".into(), label: BigInt::from(0u64), vector: None, metadata: None },
            RowCopy::Damaged { label } => {
                NativeRowCopy { state: "damaged".into(), label: BigInt::from(label), vector: None, metadata: None }
            }
        })
    }

    /// Records this node cannot serve (unreadable, or failing their in-memory checksum), at
    /// most `limit`; checks every row, off the event loop.
    #[napi(ts_return_type = "Promise<NativeDamagedRow[]>")]
    pub fn damaged_rows(&self, limit: u32) -> AsyncTask<CoreTask<Vec<NativeDamagedRow>>> {
        on_engine(self, move |engine| {
            let rows = core(engine.damaged_rows(limit as usize))?;
            Ok(rows
                .into_iter()
                .map(|r| NativeDamagedRow { collection: r.collection, id: r.id, label: BigInt::from(r.label), reason: r.reason })
                .collect())
        })
    }

    /// Install a verified copy from another node in place of the same damaged version here,
    /// durably (a rewrite of the collection's checkpoint files), off the event loop.
    #[napi(ts_return_type = "Promise<NativeRowRepairOutcome>")]
    pub fn install_row_repair(
        &self,
        env: Env,
        collection: String,
        id: String,
        label: BigInt,
        vector: Float32Array,
        metadata: String,
    ) -> napi::Result<AsyncTask<CoreTask<NativeRowRepairOutcome>>> {
        let label = sync(&env, || {
            let (negative, value, lossless) = label.get_u64();
            if negative || !lossless {
                return Err(crate::errors::Failure::invalid("label must be a non-negative 64-bit integer".to_string()));
            }
            Ok(value)
        })?;
        let vector = vector.to_vec();
        Ok(on_engine(self, move |engine| {
            let r = core(engine.install_row_repair(&collection, &id, label, vector, metadata))
                .map_err(|f| f.in_collection(&collection).for_id(&id))?;
            Ok(match r {
                RowRepairOutcome::Installed { checkpoint_seq } => {
                    NativeRowRepairOutcome { outcome: "installed".into(), checkpoint_seq: Some(BigInt::from(checkpoint_seq)) }
                }
                RowRepairOutcome::Moot => NativeRowRepairOutcome { outcome: "moot".into(), checkpoint_seq: None },
            })
        }))
    }
}
