//! Which clock the engine trusts for what. Wall-clock time is data only (commit timestamps,
//! PITR targets, notes); nothing orders events or expires a deadline by it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
