//! Replication methods of `NativeStore`: read the log as shipped WAL chunks (primary), apply
//! chunks from a primary (replica). Conversion only: the bytes are whole framed WAL records
//! (docs/format.md, "Replication: WAL chunk") that only the engine reads or writes.

use napi::bindgen_prelude::*;
use napi::{Env, JsObject};
use napi_derive::napi;

use crate::errors::{core, sync};
use crate::store::{on_engine, NativeStore};
use crate::task::CoreTask;

/// Consecutive framed WAL records `firstSeq..=lastSeq` (`count` 0 and `lastSeq = firstSeq - 1`
/// when there is none yet).
#[napi(object)]
pub struct NativeWalChunk {
    pub bytes: Buffer,
    pub first_seq: BigInt,
    pub last_seq: BigInt,
    pub count: BigInt,
}

fn seq_arg(name: &str, v: BigInt) -> crate::errors::Outcome<u64> {
    let (negative, value, lossless) = v.get_u64();
    if negative || !lossless {
        return Err(crate::errors::Failure::invalid(format!("{name} must be a non-negative 64-bit integer")));
    }
    Ok(value)
}

#[napi]
impl NativeStore {
    /// Records from `fromSeq`, at most `maxBytes` of them (at least one when any is available)
    /// and none past `throughSeq` when given, read and verified off the event loop. Rejects
    /// `CAIRN_WAL_PRUNED` when retention removed `fromSeq`, `CAIRN_CORRUPTION` when the record
    /// at `fromSeq` fails its checksum.
    #[napi(ts_return_type = "Promise<NativeWalChunk>")]
    pub fn read_wal(
        &self,
        env: Env,
        from_seq: BigInt,
        max_bytes: u32,
        through_seq: Option<BigInt>,
    ) -> napi::Result<AsyncTask<CoreTask<NativeWalChunk>>> {
        let (from, through) = sync(&env, || {
            Ok((seq_arg("fromSeq", from_seq)?, through_seq.map(|t| seq_arg("throughSeq", t)).transpose()?.unwrap_or(u64::MAX)))
        })?;
        Ok(on_engine(self, move |engine| {
            let c = core(engine.read_wal_through(from, through, max_bytes as usize))?;
            Ok(NativeWalChunk {
                bytes: Buffer::from(c.bytes),
                first_seq: BigInt::from(c.first_seq),
                last_seq: BigInt::from(c.last_seq),
                count: BigInt::from(c.count),
            })
        }))
    }

    /// `readWal` on the calling thread, for a replica tailing the log (the records were just
    /// written, so the read is from the page cache and small): no thread-pool round trip per
    /// shipment. `null` when a concurrent checkpoint moved the segment (use `readWal`).
    #[napi]
    pub fn read_wal_sync(&self, env: Env, from_seq: BigInt, max_bytes: u32) -> napi::Result<Option<NativeWalChunk>> {
        sync(&env, || {
            let from = seq_arg("fromSeq", from_seq)?;
            let c = core(self.engine.try_read_wal(from, max_bytes as usize))?;
            Ok(c.map(|c| NativeWalChunk {
                bytes: Buffer::from(c.bytes),
                first_seq: BigInt::from(c.first_seq),
                last_seq: BigInt::from(c.last_seq),
                count: BigInt::from(c.count),
            }))
        })
    }

    /// Replica: apply a chunk from the primary. Resolves with its last sequence number once it
    /// is durable per the sync mode and applied; the whole chunk is refused otherwise
    /// (`CAIRN_CORRUPTION`, `CAIRN_SEQUENCE_GAP`, or the schema's error).
    #[napi(ts_return_type = "Promise<bigint>")]
    pub fn submit_replicated(&self, env: Env, bytes: Buffer) -> napi::Result<JsObject> {
        self.submit_to_commit_thread(&env, bytes.to_vec(), cairn_core::Engine::submit_replicated)
    }

    /// The oldest sequence number `readWal` can still return (`lastSeq + 1` when none).
    #[napi]
    pub fn oldest_retained_seq(&self, env: Env) -> napi::Result<BigInt> {
        sync(&env, || core(self.engine.oldest_retained_seq()).map(BigInt::from))
    }

    /// Resolves true once `lastSeq >= seq`, false after `timeoutMs` or when the store closes.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn wait_for_seq(&self, env: Env, seq: BigInt, timeout_ms: u32) -> napi::Result<AsyncTask<CoreTask<bool>>> {
        let seq = sync(&env, || seq_arg("seq", seq))?;
        Ok(on_engine(self, move |engine| Ok(engine.wait_for_seq(seq, std::time::Duration::from_millis(u64::from(timeout_ms))))))
    }

    #[napi(getter)]
    pub fn is_replica(&self) -> bool {
        self.engine.is_replica()
    }
}
