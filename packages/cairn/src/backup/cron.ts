/**
 * Five-field cron expressions (minute hour day-of-month month day-of-week), in local time, parsed
 * and evaluated by `croner`. As in Vixie cron, when both day-of-month and day-of-week are
 * restricted, a day matching either one fires; day-of-week 0 and 7 are Sunday. Examples:
 * `0 2 * * *` (daily at 02:00), `*\/15 * * * *` (every 15 minutes). croner is used only to
 * compute times: the schedule's timers run on the manager's injectable clock.
 */
import type { Cron as Croner } from 'croner';
import { invalidArgument } from '../errors.js';
import { lazyRequire } from '../lazy-require.js';

const croner = lazyRequire<typeof import('croner')>('croner');

export interface Cron {
  readonly expression: string;
  /** The first matching minute strictly after `after`. */
  next(after: Date): Date;
  matches(at: Date): boolean;
}

export function parseCron(expression: unknown): Cron {
  if (typeof expression !== 'string') throw invalidArgument('cron expression must be a string like "0 2 * * *"');
  const fields = expression.trim().split(/\s+/).length;
  if (fields !== 5) throw invalidArgument(`cron expression '${expression}' must have 5 fields (minute hour day-of-month month day-of-week), not ${fields}`);
  let spec: Croner;
  try {
    // `paused` and no callback: croner starts no timer of its own.
    spec = new (croner().Cron)(expression.trim(), { mode: '5-part', domAndDow: false, paused: true });
  } catch (e) {
    throw invalidArgument(`cron expression '${expression}': ${(e as Error).message}`);
  }
  const matches = (at: Date) => {
    const minute = new Date(at.getTime());
    minute.setSeconds(0, 0);
    return spec.match(minute);
  };
  // Fail at parse time, not at the first run, when nothing ever matches (e.g. `0 0 31 2 *`).
  if (spec.nextRun(new Date()) === null) throw invalidArgument(`cron expression '${expression}' never matches`);
  return {
    expression,
    matches,
    next(after: Date): Date {
      // croner's resolution is the second; a 5-part pattern only matches second 0, so this is
      // the first matching minute after `after`.
      const at = spec.nextRun(after);
      if (at === null) throw invalidArgument(`cron expression '${expression}' never matches`);
      return at;
    },
  };
}
