/**
 * Busy-polling the event loop for query answers. A query worker settles its promise through a
 * threadsafe function, which wakes the JavaScript thread out of `epoll_wait`; on a VM that
 * wake-up costs tens of microseconds, as much as a small search itself. While an answer is due,
 * a chain of `setImmediate` keeps libuv polling with a zero timeout instead, so the answer is
 * seen as soon as it is posted: the same trade the query workers make when they spin after a job.
 *
 * Bounds: the loop polls at most `pollMicros` after the latest query was sent (the store's
 * `queryPollMicros`), only while a query is outstanding, and only while fewer queries are
 * outstanding than there are cores, so that polling never takes a core a query worker needs.
 * Timers and I/O run as usual meanwhile: polling replaces the loop's sleep, not its work.
 */
import { availableParallelism } from 'node:os';
import { invalidArgument } from './errors.js';

/** The default of `OpenOptions.queryPollMicros`: longer than a search at ef <= 128 on 128-d
 *  data here, shorter than a scheduler tick. */
export const DEFAULT_QUERY_POLL_MICROS = 1000;

/** Longest poll an option may ask for: beyond a few milliseconds the wake-up it saves is noise. */
const MAX_QUERY_POLL_MICROS = 100_000;

export function checkQueryPollMicros(value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_QUERY_POLL_MICROS) {
    throw invalidArgument(`options.queryPollMicros must be an integer from 0 to ${MAX_QUERY_POLL_MICROS} (got ${String(value)})`);
  }
  return value;
}

const cores = availableParallelism();
let outstanding = 0;
let deadline = 0;
let polling = false;

/** Count `answer` as outstanding until it settles, polling the loop for it within `pollMicros`. */
export function polled<T>(answer: Promise<T>, pollMicros: number): Promise<T> {
  if (pollMicros === 0) return answer;
  outstanding++;
  deadline = Math.max(deadline, performance.now() + pollMicros / 1000);
  if (!polling && outstanding < cores) {
    polling = true;
    setImmediate(poll);
  }
  return answer.then(
    (value) => {
      outstanding--;
      return value;
    },
    (e: unknown) => {
      outstanding--;
      throw e;
    },
  );
}

function poll(): void {
  if (outstanding > 0 && outstanding < cores && performance.now() < deadline) setImmediate(poll);
  else polling = false;
}
