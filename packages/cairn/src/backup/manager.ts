/**
 * BackupManager: verified, compressed, optionally encrypted backups of a store to one or more
 * targets, with retention, schedules and restore (docs/format.md, "Backups"). The class is the
 * API and the queue; each operation lives in the file named after it:
 * `create.ts`, `catalog.ts` (list, status), `verify.ts`, `restore.ts`, `retention.ts` (prune),
 * `schedule.ts`; options are validated in `settings.ts`.
 */
import { invalidArgument } from '../errors.js';
import { reportBackupOutcome } from '../ops/backup-results.js';
import type { RestoreResult, RestoreTo } from '../restore.js';
import { checkKnownKeys, checkPlainObject } from '../validate.js';
import { backupStatus, listBackups } from './catalog.js';
import { createBackup } from './create.js';
import type { BackupKind, BackupMetadata } from './metadata.js';
import { type RestoreProgress, restoreBackup } from './restore.js';
import { pruneTargets } from './retention.js';
import { scheduleBackups } from './schedule.js';
import { type BackupSettings, checkKind, isBackupId, parseSettings, sourceDirOf } from './settings.js';
import type { BackupManagerOptions, BackupProgress, CreateResult, PruneResult, ScheduleHandle, ScheduleOptions, VerifyReport } from './types.js';
import { type ByteProgress, verifyBackup } from './verify.js';

export class BackupManager {
  readonly #settings: BackupSettings;
  /** create and prune run one at a time per manager. */
  #queue: Promise<unknown> = Promise.resolve();
  #pending = new Set<string>();

  constructor(options: BackupManagerOptions) {
    this.#settings = parseSettings(options);
  }

  get targets(): string[] {
    return this.#settings.targets.map((t) => t.url);
  }

  #exclusive<T>(f: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(f, f);
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Back up the source to every target. Rejects only when every target failed. */
  async create(options: { kind?: BackupKind; id?: string; onProgress?: (p: BackupProgress) => void } = {}): Promise<CreateResult> {
    const o = checkPlainObject('options', options);
    checkKnownKeys('options', o, ['kind', 'id', 'onProgress']);
    if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw invalidArgument('options.onProgress must be a function');
    const kind = checkKind(o.kind);
    if (o.id !== undefined && !isBackupId(o.id)) {
      throw invalidArgument('options.id must be 1-128 characters of letters, digits, ".", "_" or "-", starting with a letter or digit');
    }
    const pendingKey = (o.id as string | undefined) ?? `#${this.#pending.size}-${this.#settings.clock.now()}`;
    this.#pending.add(pendingKey);
    return this.#exclusive(async () => {
      this.#pending.delete(pendingKey);
      const source = sourceDirOf(this.#settings);
      try {
        const result = await createBackup(this.#settings, kind, o.id as string | undefined, o.onProgress as ((p: BackupProgress) => void) | undefined);
        for (const t of result.targets) {
          reportBackupOutcome({
            source,
            target: t.target,
            ok: t.ok,
            id: t.metadata.id,
            kind: t.metadata.kind,
            time: new Date(),
            ...(t.ok ? {} : { error: t.error.message }),
          });
        }
        return result;
      } catch (e) {
        for (const target of this.targets) {
          reportBackupOutcome({ source, target, ok: false, id: null, kind, time: new Date(), error: e instanceof Error ? e.message : String(e) });
        }
        throw e;
      }
    });
  }

  /** Every listed backup on every target, oldest first. A backup without a manifest is not listed. */
  async list(): Promise<BackupMetadata[]> {
    return listBackups(this.#settings);
  }

  /** The backup's metadata on the first target that knows it: completed, corrupted, in progress or failed. */
  async status(id: string): Promise<BackupMetadata> {
    return backupStatus(this.#settings, id, (x) => this.#pending.has(x));
  }

  /** Read back every chunk of the backup on every target holding it; report each problem.
   *  `onProgress` gets the bytes of files reassembled on each target (never past its total). */
  async verify(id: string, options: { onProgress?: ByteProgress } = {}): Promise<VerifyReport> {
    const o = checkPlainObject('options', options);
    checkKnownKeys('options', o, ['onProgress']);
    if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw invalidArgument('options.onProgress must be a function');
    return verifyBackup(this.#settings, id, o.onProgress as ByteProgress | undefined);
  }

  /**
   * Restore backup `id` as of `to` (default: the newest record it holds) into `targetDir`, which
   * must not exist or be empty. Everything is verified before anything is written; a damaged
   * copy on one target falls back to the next target that holds the backup.
   */
  async restore(
    id: string,
    targetDir: string,
    options: { to?: RestoreTo; onProgress?: RestoreProgress } = {},
  ): Promise<RestoreResult & { backup: string; from: string }> {
    return restoreBackup(this.#settings, id, targetDir, options);
  }

  /**
   * Apply the retention policy on every target: keep a backup while it is among the newest
   * `count` or younger than `days` (by the clock), always the newest, and every base a kept
   * backup names (transitively). A deleted backup loses its manifest; then chunks that no
   * remaining manifest names are deleted.
   */
  async prune(): Promise<PruneResult[]> {
    return this.#exclusive(() => pruneTargets(this.#settings));
  }

  /**
   * Run a backup (then prune) whenever the cron expression matches (minute resolution, local
   * time, the manager's clock). A run still going when the next one is due makes that one skip.
   */
  schedule(cron: string, options: ScheduleOptions = {}): ScheduleHandle {
    return scheduleBackups(this.#settings.clock, cron, options, { create: (kind) => this.create({ kind }), prune: () => this.prune() });
  }

  /** Release target clients (S3 sockets). */
  async close(): Promise<void> {
    await Promise.all(this.#settings.targets.map((t) => t.close()));
  }
}
