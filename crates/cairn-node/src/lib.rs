//! Thin napi binding of cairn-core: converts types and errors. Every export returns typed
//! objects (`native.d.ts` is generated from them), runs engine code under `catch_unwind`, and
//! fails with the error object of `errors.rs`. Beyond conversion it holds only the registry of
//! scan controls that piscina worker threads share (`scrub.rs`), the promise settling of
//! commits and queries (`completions.rs`), the query workers (`query_worker.rs`) and the
//! float32 byte shuffle of archives (`bytes.rs`).
//!
//! - `store.rs`: `openStore` and the `NativeStore` class (commit, reads, queries, checkpoint)
//! - `allocator.rs`: mimalloc as the global allocator, and its huge-page setting
//! - `read_view.rs`: read views (reads as of a seq) and transaction commits
//! - `staged_batch.rs`: a large upsert handed to the commit thread in chunks as it is encoded
//! - `select.rs`: count, scan, getMany and deleteWhere by filter; `payload_index.rs`: payload indexes
//! - `completions.rs`: settles commit and query promises on the JS thread; `query_worker.rs`:
//!   the threads that run queries
//! - `digest.rs`: content digests of a collection's rows (the recovery drill's model)
//! - `recovery_report.rs`: what recovery found on open
//! - `snapshot.rs`, `restore.rs`: snapshots, point-in-time restore
//! - `scrub.rs`: scan controls and file verification; `repair.rs`: install, rebuild, quarantine
//! - `manifest.rs`, `wal_segment.rs`, `quarantine_note.rs`: on-disk formats, decoded here so
//!   that TypeScript never parses them (snapshot manifests: `snapshot.rs`)
//! - `replication.rs`: WAL chunks read for replicas and applied on a replica; `row_repair.rs`:
//!   a record's verified copy for another node, and installing one from another node
//! - `truncate.rs`: cutting a closed store's WAL back to a fork point (failover rollback)
//! - `stats.rs`: the engine's counters and histograms, for metrics
//! - `layout.rs`: the names of a store's files; `bytes.rs`: checksum and shuffle helpers
//! - `errors.rs`: the error mapping; `task.rs`: the async task every promise runs on

#![deny(clippy::all)]
// The napi macros register exports only outside `cfg(test)`: in the unit-test build they look unused.
#![cfg_attr(test, allow(dead_code))]

mod allocator;
mod bytes;
mod completions;
mod digest;
mod errors;
mod layout;
mod live_view;
mod manifest;
mod payload_index;
mod quarantine_note;
mod query_worker;
mod read_view;
mod recovery_report;
mod repair;
mod replication;
mod restore;
mod restore_progress;
mod row_repair;
mod scrub;
mod scrub_result;
mod select;
mod snapshot;
mod staged_batch;
mod stats;
mod store;
mod task;
mod truncate;
mod wal_segment;
