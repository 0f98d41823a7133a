/**
 * Five-field cron expressions (minute hour day-of-month month day-of-week), in local time:
 * `*`, `N`, `A-B`, `*\/N`, `A-B/N` and comma lists of these. As in Vixie cron, when both
 * day-of-month and day-of-week are restricted, a day matching either one fires. Day-of-week
 * 0 and 7 are Sunday. Examples: `0 2 * * *` (daily at 02:00), `*\/15 * * * *` (every 15 minutes).
 */
import { invalidArgument } from '../errors.js';

const FIELDS = [
  { name: 'minute', min: 0, max: 59 },
  { name: 'hour', min: 0, max: 23 },
  { name: 'day of month', min: 1, max: 31 },
  { name: 'month', min: 1, max: 12 },
  { name: 'day of week', min: 0, max: 7 },
] as const;

export interface Cron {
  readonly expression: string;
  /** The first matching minute strictly after `after`. */
  next(after: Date): Date;
  matches(at: Date): boolean;
}

function parseField(text: string, index: number): { set: Set<number>; star: boolean } {
  const { name, min, max } = FIELDS[index]!;
  const bad = (why: string) => invalidArgument(`cron ${name} field '${text}': ${why}`);
  const set = new Set<number>();
  const num = (s: string) => {
    if (!/^\d+$/.test(s)) throw bad(`'${s}' is not a number`);
    const n = Number(s);
    if (n < min || n > max) throw bad(`${n} is outside ${min}-${max}`);
    return n;
  };
  for (const part of text.split(',')) {
    if (part === '') throw bad('empty list item');
    const [range, stepText, extra] = part.split('/');
    if (extra !== undefined) throw bad(`'${part}' has more than one '/'`);
    let step = 1;
    if (stepText !== undefined) {
      if (!/^\d+$/.test(stepText) || Number(stepText) === 0) throw bad(`step '${stepText}' must be a positive integer`);
      step = Number(stepText);
    }
    let lo: number;
    let hi: number;
    if (range === '*') [lo, hi] = [min, max];
    else if (range!.includes('-')) {
      const [a, b, more] = range!.split('-');
      if (more !== undefined) throw bad(`'${range}' is not a range`);
      [lo, hi] = [num(a!), num(b!)];
      if (lo > hi) throw bad(`range ${lo}-${hi} is backwards`);
    } else {
      lo = num(range!);
      hi = stepText === undefined ? lo : max;
    }
    for (let v = lo; v <= hi; v += step) set.add(index === 4 && v === 7 ? 0 : v);
  }
  return { set, star: text === '*' || text.startsWith('*/') };
}

export function parseCron(expression: unknown): Cron {
  if (typeof expression !== 'string') throw invalidArgument('cron expression must be a string like "0 2 * * *"');
  const parts = expression.trim().split(/\s+/);
  if (parts.length !== 5)
    throw invalidArgument(`cron expression '${expression}' must have 5 fields (minute hour day-of-month month day-of-week), not ${parts.length}`);
  const [minute, hour, dom, month, dow] = parts.map(parseField);
  const dayMatches = (d: Date) => {
    const byDom = dom!.set.has(d.getDate());
    const byDow = dow!.set.has(d.getDay());
    if (dom!.star && dow!.star) return true;
    if (dom!.star) return byDow;
    if (dow!.star) return byDom;
    return byDom || byDow;
  };
  const matches = (d: Date) => minute!.set.has(d.getMinutes()) && hour!.set.has(d.getHours()) && month!.set.has(d.getMonth() + 1) && dayMatches(d);
  return {
    expression,
    matches,
    next(after: Date): Date {
      const d = new Date(after.getTime());
      d.setSeconds(0, 0);
      d.setMinutes(d.getMinutes() + 1);
      // Skip whole months, days and hours that cannot match; bounded by 8 years (Feb 29 on a Monday).
      const limit = after.getTime() + 8 * 366 * 86_400_000;
      while (d.getTime() <= limit) {
        if (!month!.set.has(d.getMonth() + 1)) {
          d.setMonth(d.getMonth() + 1, 1);
          d.setHours(0, 0, 0, 0);
        } else if (!dayMatches(d)) {
          d.setDate(d.getDate() + 1);
          d.setHours(0, 0, 0, 0);
        } else if (!hour!.set.has(d.getHours())) {
          d.setHours(d.getHours() + 1, 0, 0, 0);
        } else if (!minute!.set.has(d.getMinutes())) {
          d.setMinutes(d.getMinutes() + 1, 0, 0);
        } else return d;
      }
      throw invalidArgument(`cron expression '${expression}' never matches`);
    },
  };
}
