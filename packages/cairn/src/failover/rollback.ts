/**
 * Rejoining past a fork: a node whose log holds records the new primary's log does not (an old
 * primary's local commits that never reached a majority, so were never acknowledged) cuts them
 * from its WAL instead of being fenced. The engine first saves them under `rollback/` (a WAL
 * segment and a note naming the epochs; docs/format.md, "Rollback"), fsynced, and only then
 * truncates the WAL (`truncateWalTo`, crates/cairn-core/src/engine/truncate.rs). The store must
 * be closed; a crash part way is finished by the next attempt, and nothing cut is lost.
 */
import { resolve as resolvePath } from 'node:path';

import { native } from '../errors.js';
import { nativeModule } from '../native.js';

export interface Rollback {
  /** The rollback segment, relative to the store directory (`rollback/<first>-<last>.wal`). */
  file: string;
  firstSeq: bigint;
  lastSeq: bigint;
  records: number;
  bytes: number;
}

/** Cut the closed store at `dir` back to just before `fromSeq`; null when it holds nothing there.
 *  Refuses (CAIRN_INVALID_ARGUMENT) when a checkpoint already covers `fromSeq`. */
export async function cutPastFork(dir: string, fromSeq: bigint, reason: string): Promise<Rollback | null> {
  const r = await native(() => nativeModule.truncateWalTo(resolvePath(dir), fromSeq, reason));
  return r === null ? null : { file: r.file, firstSeq: r.firstSeq, lastSeq: r.lastSeq, records: r.records, bytes: r.bytes };
}
