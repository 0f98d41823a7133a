//! Scrubbing (docs/architecture.md, "Scrub"): verify the files a store depends on, and repair.
//!
//! - `check.rs`: what a check is about and what it found (`FileKind`, `Expected`, `FileCheck`).
//! - `control.rs`: `ScanControl`, the shared rate limit, cancellation, progress and open splits.
//! - `read.rs`: throttled, cancellable chunked reads of one file through `Storage`.
//! - `verify.rs`: the per-format verifiers behind `verify_file`.
//! - `ranges.rs`: one large file hashed by ranges on several threads (`hash_range`).
//! - `install.rs`: a verified copy installed over a damaged file (`install_copy`).
//! - `repair.rs`: a damaged file of an open store rebuilt from memory (`rebuild_live`), `note`.
//! - `wal_rebuild.rs`: a damaged sealed WAL segment rebuilt from the other nodes' records.
//! - `result.rs`: the last scrub's counts, kept in `SCRUB_RESULT` for status readers.
//! - `test_support.rs`: (tests) a directory on each storage, and file bytes of each format.
//!
//! Which files to check, and where a repair comes from, is decided in TypeScript
//! (packages/cairn/src/scrub/); the bytes are read and hashed here, all through `Storage`, and
//! damaged bytes are kept in quarantine (docs/format.md, "Quarantine"), never deleted. A file is
//! read once, in chunks small enough to stay in the CPU cache while they are checked. A file
//! whose size and xxh3 are recorded is hashed whole, and only when they differ read again record
//! by record to locate the damage; a large one can be hashed in ranges by several tasks. A WAL
//! segment is checked record by record as it streams by (`wal::stream_check`), and scanned whole
//! by the recovery reader only when that finds something wrong. Scrub depends on the engine; the
//! engine never depends on scrub.

mod check;
mod control;
mod install;
mod ranges;
mod read;
mod repair;
pub mod result;
#[cfg(test)]
mod test_support;
mod verify;
mod wal_rebuild;

pub use crate::quarantine::{Damage, QuarantineNote};
pub use check::{parse_xxh3, Expected, FileCheck, FileKind, Finding};
pub use control::ScanControl;
pub use install::{install_bytes_on, install_copy, install_copy_live, install_copy_on, Install};
pub use ranges::{hash_range, hash_range_on, ranges, split_finish, split_finish_on};
pub use repair::{note, rebuild_live, Rebuild};
pub use verify::{verify_file, verify_file_on};
pub use wal_rebuild::{rebuild_wal_segment_live, sealed_segment_range};
