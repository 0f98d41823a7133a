/**
 * What a store remembers about its own operation while it is open, for status, health, metrics
 * and the dashboard: recent scrubs, the latest backup outcome per target, and a sample of the
 * engine's counters every few seconds (commit rate and fsync latency over recent minutes).
 * Nothing here is persisted: a reopened store starts with an empty history.
 */
import type { NativeEngineStats } from '../native.js';
import type { ScrubReport } from '../scrub/index.js';
import { type BackupOutcome, onBackupOutcome } from './backup-results.js';
import { type ScrubRecord, scrubRecord } from './types.js';

/** Scrubs kept. */
const SCRUBS_KEPT = 50;
/** Samples kept: 10 minutes at the default interval. */
const SAMPLES_KEPT = 300;
export const SAMPLE_INTERVAL_MS = 2_000;

/** Engine counters at one instant; rates come from the difference of two samples. */
export interface Sample {
  time: number;
  commits: number;
  records: number;
  fsyncCount: number;
  fsyncSeconds: number;
}

export interface BackupTally {
  target: string;
  ok: number;
  failed: number;
  last: BackupOutcome;
  lastGood: BackupOutcome | null;
}

export class OpsHistory {
  readonly scrubs: ScrubRecord[] = [];
  readonly backups = new Map<string, BackupTally>();
  readonly samples: Sample[] = [];
  /** Totals over every scrub since open (the records above are only the recent ones). */
  readonly scrubTotals = { runs: 0, bytes: 0, corrupt: 0, repaired: 0 };
  readonly #stopListening: () => void;

  constructor(dir: string) {
    this.#stopListening = onBackupOutcome(dir, (o) => this.recordBackup(o));
  }

  recordScrub(report: ScrubReport, time = new Date()): ScrubRecord {
    const r = scrubRecord(report, time);
    this.scrubs.push(r);
    if (this.scrubs.length > SCRUBS_KEPT) this.scrubs.shift();
    this.scrubTotals.runs += 1;
    this.scrubTotals.bytes += r.bytes;
    this.scrubTotals.corrupt += r.corrupt;
    this.scrubTotals.repaired += r.repaired;
    return r;
  }

  get lastScrub(): ScrubRecord | null {
    return this.scrubs.at(-1) ?? null;
  }

  recordBackup(o: BackupOutcome): void {
    const t = this.backups.get(o.target) ?? { target: o.target, ok: 0, failed: 0, last: o, lastGood: null };
    if (o.ok) {
      t.ok += 1;
      t.lastGood = o;
    } else {
      t.failed += 1;
    }
    t.last = o;
    this.backups.set(o.target, t);
  }

  recordSample(stats: NativeEngineStats, time = Date.now()): void {
    this.samples.push({ time, commits: stats.commits, records: stats.records, fsyncCount: stats.fsync.count, fsyncSeconds: stats.fsync.sum });
    if (this.samples.length > SAMPLES_KEPT) this.samples.shift();
  }

  close(): void {
    this.#stopListening();
  }
}
