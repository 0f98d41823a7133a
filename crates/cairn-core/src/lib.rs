//! Cairn's storage engine: WAL, checkpointed data files, manifest, exact and HNSW search.
//! Pure Rust with no napi; `cairn-node` wraps it.

pub mod batch;
pub mod checksum;
pub mod clock;
pub mod datafile;
pub mod distance;
pub mod durable;
pub mod engine;
pub mod error;
pub mod fault;
pub mod filter;
pub mod hnsw;
pub mod index;
pub mod inspect;
pub mod keyed_hash;
pub mod layout;
pub mod live_labels;
pub mod manifest;
pub mod mapped;
pub mod metrics;
pub mod payload;
pub mod pitr;
pub mod placement;
pub mod progress;
pub mod quarantine;
pub mod scrub;
pub mod shared_vector;
pub mod shuffle;
pub mod snapshot;
pub mod state;
pub mod storage;
pub mod sync;
pub mod versions;
pub mod wal;

pub use distance::Metric;
pub use engine::{Engine, Options, SyncMode};
pub use error::{Error, Result};
pub use wal::recovery::{RecoveryMode, RecoveryReport};
pub use wal::ship::WalChunk;
