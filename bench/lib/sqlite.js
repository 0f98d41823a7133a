// SQLite as the benchmarks' durable peer: better-sqlite3 in WAL mode with synchronous = FULL, so
// every commit is fsynced before it returns, as Cairn acknowledges a durable write.
import Database from 'better-sqlite3';

/** A SQLite database at `path` that syncs every commit (WAL, synchronous = FULL). */
export function durableSqlite(path) {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  return db;
}
