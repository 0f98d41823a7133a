//! The engine's one error type. `code()` gives the stable string that crosses into TypeScript.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("corruption in {file} at offset {offset}: {reason}")]
    Corruption { file: PathBuf, offset: u64, reason: String },
    #[error("checksum mismatch in {file} at offset {offset}: expected {expected:#018x}, got {got:#018x}")]
    ChecksumMismatch { file: PathBuf, offset: u64, expected: u64, got: u64 },
    #[error("store is poisoned by an earlier write or fsync failure ({0}); reopen it to recover")]
    Poisoned(String),
    #[error("store is closed")]
    Closed,
    #[error("store directory {0} is locked by another writer")]
    Locked(PathBuf),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A write reached a store that is not the primary (a replica takes records only through
    /// `submit_replicated`). The binding adds the primary's address when it knows it.
    #[error("{0}")]
    NotPrimary(String),
    /// `read_wal` was asked for records that archive retention has deleted: the replica must be
    /// reseeded from a snapshot.
    #[error("WAL records from seq {requested} are no longer retained; the oldest retained is seq {oldest}")]
    WalPruned { requested: u64, oldest: u64 },
    /// Replicated records that do not continue the replica's log: a gap or a repeat.
    #[error("replicated records must continue at seq {expected}, got seq {got}")]
    SequenceGap { expected: u64, got: u64 },
    /// A transaction's commit found an id it read or wrote changed after its snapshot.
    #[error("transaction conflict: id '{id}' of collection '{collection}' was written at seq {seq}, after the transaction's snapshot at seq {snapshot}")]
    Conflict { collection: String, id: String, seq: u64, snapshot: u64 },
    /// A read through a view (or a transaction's snapshot) that was already released.
    #[error("read view at seq {0} was released")]
    ViewReleased(u64),
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Error::Io { .. } => "CAIRN_IO",
            Error::Corruption { .. } | Error::ChecksumMismatch { .. } => "CAIRN_CORRUPTION",
            Error::Poisoned(_) => "CAIRN_POISONED",
            Error::Closed => "CAIRN_CLOSED",
            Error::Locked(_) => "CAIRN_LOCKED",
            Error::InvalidArgument(_) => "CAIRN_INVALID_ARGUMENT",
            Error::NotFound(_) => "CAIRN_NOT_FOUND",
            Error::AlreadyExists(_) => "CAIRN_ALREADY_EXISTS",
            Error::NotPrimary(_) => "CAIRN_NOT_PRIMARY",
            Error::WalPruned { .. } => "CAIRN_WAL_PRUNED",
            Error::SequenceGap { .. } => "CAIRN_SEQUENCE_GAP",
            Error::Conflict { .. } => "CAIRN_CONFLICT",
            Error::ViewReleased(_) => "CAIRN_VIEW_RELEASED",
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }

    pub fn corruption(file: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Error {
        Error::Corruption { file: file.into(), offset, reason: reason.into() }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
