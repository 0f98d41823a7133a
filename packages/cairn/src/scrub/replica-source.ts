/**
 * (c) The other nodes of a replicated store, reached over its replication connection.
 * - A damaged record is fetched from them, each copy verified by its checksum, the verified
 *   copies vote and the majority is installed (`replication/record-repair.ts`). Checkpoint
 *   files are not byte-identical across nodes (each checkpoints on its own schedule), so a
 *   damaged data file is rebuilt here from memory once its damaged records have been repaired.
 * - A damaged sealed WAL segment is rebuilt from their records, which are byte-identical on
 *   every node (`replication/segment-repair.ts`): verified per piece, voted, checked record by
 *   record by the engine and installed like a copy.
 * Snapshot files are this node's own; they are repaired from local copies only.
 */
import { fromNative } from '../errors.js';
import type { NativeQuarantineNote } from '../native.js';
import type { SegmentRepair } from '../replication/segment-repair.js';
import type { DamagedFile, RecordRepairs, RepairAttempt, RepairContext, RepairSource } from './sources.js';

export class ReplicaSource implements RepairSource {
  readonly name = 'replicas';
  readonly #heal: () => Promise<RecordRepairs>;
  readonly #segment: (rel: string, expected: DamagedFile['expected'], note: NativeQuarantineNote) => Promise<SegmentRepair>;

  /** `heal` repairs every damaged record of the open store from the other nodes; `segment`
   *  rebuilds one damaged sealed WAL segment from their records. */
  constructor(
    heal: () => Promise<RecordRepairs>,
    segment: (rel: string, expected: DamagedFile['expected'], note: NativeQuarantineNote) => Promise<SegmentRepair>,
  ) {
    this.#heal = heal;
    this.#segment = segment;
  }

  async repair(file: DamagedFile, ctx: RepairContext): Promise<RepairAttempt> {
    if (!ctx.native) return { outcome: 'failed', reason: 'the store is not open, so it has no replication connection' };
    if (file.area === 'archive' || file.area === 'wal') {
      const r = await this.#segment(file.rel, file.expected, ctx.note(file, 'replicas'));
      return r.outcome === 'repaired' ? { outcome: 'repaired', from: 'replicas', quarantined: r.quarantined } : r;
    }
    if (file.area !== 'data') {
      return { outcome: 'failed', reason: "replicas repair records and WAL segments, not snapshot or manifest files (those are this node's own)" };
    }
    const healed = await this.#heal();
    if (healed.failed.length > 0) {
      const f = healed.failed[0]!;
      return { outcome: 'failed', reason: `records could not be repaired from the replicas (${healed.failed.length}; first: '${f.id}': ${f.error})` };
    }
    try {
      const r = await ctx.native.rebuildFile(file.rel, ctx.note(file, 'replicas'));
      return r.outcome === 'moot' ? { outcome: 'moot' } : { outcome: 'repaired', from: 'replicas', quarantined: r.quarantined };
    } catch (e) {
      return { outcome: 'failed', reason: `rebuild after repairing from the replicas failed: ${fromNative(e).message}` };
    }
  }

  repairRecords(): Promise<RecordRepairs> {
    return this.#heal();
  }
}
