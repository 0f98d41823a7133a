/**
 * Scheduled backups: run a backup (then prune) whenever a cron expression matches (minute
 * resolution, local time, the manager's clock). A run still going when the next one is due
 * makes that one skip.
 */
import { checkKnownKeys, checkPlainObject } from '../validate.js';
import { type Cron, parseCron } from './cron.js';
import type { BackupKind } from './metadata.js';
import { checkKind } from './settings.js';
import type { BackupClock, CreateResult, PruneResult, ScheduleHandle, ScheduleOptions } from './types.js';

/** What a scheduled run calls: the manager's own create and prune, so runs queue like any other. */
export interface ScheduledWork {
  create(kind: BackupKind): Promise<CreateResult>;
  prune(): Promise<PruneResult[]>;
}

export function scheduleBackups(clock: BackupClock, cron: string, options: ScheduleOptions, work: ScheduledWork): ScheduleHandle {
  const spec: Cron = parseCron(cron);
  const o = checkPlainObject('options', options);
  checkKnownKeys('options', o, ['kind', 'prune', 'onBackup', 'onError']);
  const kind = checkKind(o.kind);
  let timer: unknown;
  let next: Date | null = null;
  let running = false;
  let stopped = false;
  const arm = (after: number) => {
    if (stopped) return;
    next = spec.next(new Date(after));
    const at = next.getTime();
    timer = clock.setTimeout(() => fire(at), Math.max(0, at - clock.now()));
  };
  const fire = (at: number) => {
    if (stopped) return;
    arm(Math.max(at, clock.now()));
    if (running) return;
    running = true;
    void (async () => {
      try {
        const result = await work.create(kind);
        if (o.prune !== false) await work.prune();
        (o.onBackup as ScheduleOptions['onBackup'])?.(result);
      } catch (e) {
        (o.onError as ScheduleOptions['onError'])?.(e);
      } finally {
        running = false;
      }
    })();
  };
  arm(clock.now());
  return {
    stop() {
      stopped = true;
      next = null;
      if (timer !== undefined) clock.clearTimeout(timer);
    },
    get next() {
      return next;
    },
  };
}
