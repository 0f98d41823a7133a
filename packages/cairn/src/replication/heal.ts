/**
 * Open-time repair from the other nodes, one pass at a time: a pass repairs every record this
 * node holds damaged (`healDamaged`), and remembers what it did for `replicationStatus().lastHeal`. The primary and
 * the replicas each own one `HealPasses` and start a pass once their link has caught up (a
 * lagging peer holds older versions, so asking earlier repairs nothing).
 */
import { CairnError, fromNative } from '../errors.js';
import type { NativeStore } from '../native.js';
import { type HealReport, healDamaged, type RecordPeers } from './record-repair.js';
import type { RecordHealStatus } from './types.js';

export class HealPasses {
  readonly #native: () => NativeStore;
  readonly #nodeId: string;
  readonly #peers: RecordPeers;
  #running: Promise<void> | null = null;
  /** A pass was asked for while one ran. */
  #again = false;
  #last: RecordHealStatus | null = null;
  #stopped = false;

  /** `native` is read at each pass: a replica's store is replaced by a snapshot install. */
  constructor(native: () => NativeStore, nodeId: string, peers: RecordPeers) {
    this.#native = native;
    this.#nodeId = nodeId;
    this.#peers = peers;
  }

  /** What the last pass did (null before the first). */
  get last(): RecordHealStatus | null {
    return this.#last;
  }

  /** One pass now (`db.healDamaged()` and the background pass share it). */
  async run(): Promise<HealReport> {
    const report = await healDamaged(this.#native(), this.#nodeId, this.#peers);
    this.#last = { at: new Date(), repaired: report.repaired.length, failed: report.failed };
    return report;
  }

  /** Start a pass in the background unless the owner is closing; a failure is recorded in
   *  `last`, never thrown. Asked while a pass runs, one more pass follows it: the peer that
   *  has just caught up may hold the copy the running pass found missing. */
  start(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#again = false;
    this.#running = this.run()
      .then(
        () => {},
        (e: unknown) => {
          const err = e instanceof CairnError ? e : fromNative(e);
          this.#last = { at: new Date(), repaired: 0, failed: [{ collection: '', id: '', error: `${err.code}: ${err.message}` }] };
        },
      )
      .finally(() => {
        this.#running = null;
        if (this.#again) this.start();
      });
  }

  /** No pass starts from now on; resolves when the running one (if any) has ended. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#running;
  }
}
