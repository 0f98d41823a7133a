//! Replication's engine side. A primary ships its log as `WalChunk`s (`read_wal`): whole framed
//! records as on disk, verified, consecutive, never past `last_seq`, so never a record that is
//! not acknowledged. A replica (`Options::replica`) refuses local writes and takes chunks through
//! `submit_replicated`: the commit thread verifies every record, requires it to continue the
//! log exactly, validates it against the schema as a local commit would, writes the same bytes
//! to its own WAL (group commit, rolls, sync mode), applies them and only then acknowledges. So
//! after applying seq N a replica's state and WAL records equal the primary's at N.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{CommitCallback, Engine, Request};
use crate::error::{Error, Result};
use crate::sync::{lock, wait_timeout};
use crate::wal::ship::{self, Attempt, ShipCursor, WalChunk};

/// Cursors kept for `read_wal`: one per replica tailing the log is plenty.
const MAX_SHIP_CURSORS: usize = 8;

impl Engine {
    /// Records `from_seq..` as they are on disk, at most `max_bytes` of them but at least one
    /// when any is available, never past `last_seq()`. Reads `wal-archive/` then `wal/`; a
    /// concurrent checkpoint moving segments is tolerated. An empty chunk when
    /// `from_seq > last_seq()`; `Error::WalPruned` when archive retention has removed
    /// `from_seq`; `Error::Corruption` naming the file and offset of a record that fails its
    /// checksum (nothing is returned then).
    pub fn read_wal(&self, from_seq: u64, max_bytes: usize) -> Result<WalChunk> {
        self.read_wal_through(from_seq, u64::MAX, max_bytes)
    }

    /// `read_wal`, never past `through_seq` either (a peer rebuilding a damaged segment asks
    /// for exactly its range).
    pub fn read_wal_through(&self, from_seq: u64, through_seq: u64, max_bytes: usize) -> Result<WalChunk> {
        for attempt in 0..ship::MAX_ATTEMPTS {
            // The last attempt holds the checkpoint lock, so no segment can move under it.
            let _still = (attempt + 1 == ship::MAX_ATTEMPTS).then(|| lock(&self.shared.checkpoint_lock));
            if let Some(chunk) = self.read_wal_once(from_seq, through_seq, max_bytes, attempt == 0)? {
                return Ok(chunk);
            }
        }
        Err(Error::io(self.shared.dir.join(crate::layout::WAL_DIR), std::io::Error::other("WAL segments kept moving while they were read")))
    }

    /// `read_wal` for a replica tailing the log: one attempt, never waiting for the checkpoint
    /// lock, so that it may run on a caller's event loop. `None` when a concurrent checkpoint
    /// moved the segment it was reading (call `read_wal` then).
    pub fn try_read_wal(&self, from_seq: u64, max_bytes: usize) -> Result<Option<WalChunk>> {
        self.read_wal_once(from_seq, u64::MAX, max_bytes, true)
    }

    /// One read attempt (`None`: a segment moved under it); `use_hint` starts from the cursor a
    /// previous read left at `from_seq`, if any.
    fn read_wal_once(&self, from_seq: u64, through_seq: u64, max_bytes: usize, use_hint: bool) -> Result<Option<WalChunk>> {
        self.check_open()?;
        if from_seq == 0 {
            return Err(Error::InvalidArgument("from_seq must be at least 1 (sequence numbers start at 1)".into()));
        }
        // Loaded first: every record up to it is completely written (see `wal/ship.rs`).
        let through = self.last_seq().min(through_seq);
        let hint = if use_hint { lock(&self.shared.ship_cursors).iter().find(|c| c.next_seq == from_seq).copied() } else { None };
        match ship::read_chunk(self.shared.opts.storage.as_ref(), &self.shared.dir, from_seq, through, max_bytes, hint)? {
            Attempt::Done(chunk, cursor) => {
                if let Some(c) = cursor {
                    remember_cursor(&mut lock(&self.shared.ship_cursors), c);
                }
                Ok(Some(chunk))
            }
            Attempt::Moved => Ok(None),
        }
    }

    /// The sequence number of the oldest record `read_wal` can still return (`last_seq() + 1`
    /// when the log holds none). Older ones must come from a snapshot.
    pub fn oldest_retained_seq(&self) -> Result<u64> {
        self.check_open()?;
        let through = self.last_seq();
        let segments = ship::list_segments(self.shared.opts.storage.as_ref(), &self.shared.dir)?;
        Ok(ship::oldest_retained(&segments, through).min(through + 1))
    }

    /// Wait until `last_seq() >= seq` (true) or `timeout` passes or the store closes (false).
    /// A condition variable the commit thread signals after each group: no polling.
    pub fn wait_for_seq(&self, seq: u64, timeout: Duration) -> bool {
        let sh = &self.shared;
        if sh.last_seq.load(Ordering::Acquire) >= seq {
            return true;
        }
        let deadline = Instant::now() + timeout;
        sh.seq_waiters.fetch_add(1, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        let mut guard = lock(&sh.seq_lock);
        let reached = loop {
            if sh.last_seq.load(Ordering::SeqCst) >= seq {
                break true;
            }
            let now = Instant::now();
            if now >= deadline || sh.closed.load(Ordering::Acquire) {
                break false;
            }
            guard = wait_timeout(&sh.seq_cv, guard, deadline - now);
        };
        drop(guard);
        sh.seq_waiters.fetch_sub(1, Ordering::SeqCst);
        reached
    }

    /// Replica: queue a chunk of framed records from the primary (as `read_wal` returned them).
    /// `done` runs on the commit thread with the chunk's last sequence number once every record
    /// is durable per the sync mode and applied, or with the error that refused the whole chunk:
    /// a record failing its checksum (`Corruption`, offset within the chunk), one that does not
    /// continue the log (`SequenceGap`), or one the schema refuses. An empty chunk completes
    /// with the current last sequence number.
    pub fn submit_replicated(&self, bytes: Vec<u8>, done: CommitCallback) {
        if !self.shared.opts.replica {
            return done(Err(Error::InvalidArgument(
                "this store is a primary: replicated records are applied only by a store opened as a replica".into(),
            )));
        }
        self.enqueue(Request::Replicated { bytes, done });
    }

    /// Blocking form of `submit_replicated`.
    pub fn apply_replicated(&self, bytes: Vec<u8>) -> Result<u64> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.submit_replicated(
            bytes,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(Error::Closed))
    }

    pub fn is_replica(&self) -> bool {
        self.shared.opts.replica
    }
}

fn remember_cursor(cursors: &mut std::collections::VecDeque<ShipCursor>, c: ShipCursor) {
    cursors.retain(|old| old.next_seq != c.next_seq);
    if cursors.len() == MAX_SHIP_CURSORS {
        cursors.pop_front();
    }
    cursors.push_back(c);
}
