//! Cairn's storage engine: WAL, checkpointed segment files, manifest, exact and HNSW search.
//! Pure Rust with no napi; `cairn-node` wraps it.

pub mod checksum;
pub mod datafile;
pub mod clock;
pub mod distance;
pub mod durable;
pub mod error;
pub mod hnsw;
pub mod index;

pub use distance::Metric;
pub use error::{Error, Result};
pub mod batch;
pub mod engine;
pub mod fault;
pub mod keyed_hash;
pub mod layout;
pub mod manifest;
pub mod state;
pub mod storage;
pub mod sync;
pub mod wal;

pub use engine::{Engine, Options, SyncMode};
pub use wal::recovery::{RecoveryMode, RecoveryReport};
pub mod pitr;
pub mod quarantine;
pub mod scrub;
pub mod snapshot;
