/**
 * (c) The other nodes of a replicated store, reached over its replication connection: a
 * damaged record is fetched from them, each copy verified by its checksum, the verified copies
 * vote and the majority is installed (`replication/record-repair.ts`). Checkpoint files are
 * not byte-identical across nodes (each checkpoints on its own schedule), so a damaged file is
 * rebuilt here from memory once its damaged records have been repaired from the replicas.
 */
import { fromNative } from '../errors.js';
import type { DamagedFile, RecordRepairs, RepairAttempt, RepairContext, RepairSource } from './sources.js';

export class ReplicaSource implements RepairSource {
  readonly name = 'replicas';
  readonly #heal: () => Promise<RecordRepairs>;

  /** `heal` repairs every damaged record of the open store from the other nodes. */
  constructor(heal: () => Promise<RecordRepairs>) {
    this.#heal = heal;
  }

  async repair(file: DamagedFile, ctx: RepairContext): Promise<RepairAttempt> {
    if (!ctx.native) return { outcome: 'failed', reason: 'the store is not open, so it has no replication connection' };
    if (file.area !== 'data') {
      return { outcome: 'failed', reason: 'replicas repair records, not WAL or snapshot files (their segment and checkpoint boundaries differ per node)' };
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
