//! Write-ahead log: segment files named by their first sequence number, each holding framed,
//! checksummed, 8-byte-aligned records (docs/format.md).

pub mod reader;
pub mod record;
pub mod recovery;
pub mod ship;
pub mod stream_check;
pub mod writer;
