/** What every scenario gets from the runner, and the stopwatch it times its steps with. */
import { performance } from 'node:perf_hooks';

import { diffModels, type Model, type ModelCollection, readModel } from './model.js';
import type { ScenarioResult, ScenarioStep } from './types.js';

export interface ScenarioContext {
  /** The reference model, read from a copy of the source before any damage. */
  model: Model;
  /** Its largest collection. */
  main: ModelCollection;
  /** This scenario's own directory in the scratch area (empty). */
  dir: string;
  /** Copy the source store to `dest` (absent). */
  copy(dest: string): Promise<void>;
}

export type ScenarioOutcome = Omit<ScenarioResult, 'scenario' | 'error'>;

/** Named steps on the monotonic clock. */
export class Stopwatch {
  readonly steps: ScenarioStep[] = [];

  async step<T>(name: string, work: () => Promise<T>): Promise<T> {
    const t = performance.now();
    try {
      return await work();
    } finally {
      this.steps.push({ name, ms: round(performance.now() - t) });
    }
  }
}

export function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}

/**
 * Read `store`'s model and compare it with the source's; rows `allowExtra` admits may be new.
 * Each difference becomes a problem headed `what`; the rows lost, and the store's model.
 */
export async function verifyModel(
  ctx: ScenarioContext,
  sw: Stopwatch,
  store: string,
  problems: string[],
  what: string,
  allowExtra?: (collection: string, id: string) => boolean,
): Promise<{ lost: number; model: Model }> {
  const after = await sw.step('verify against the model', () => readModel(store));
  const diff = diffModels(ctx.model, after, allowExtra);
  if (diff.lost + diff.extra > 0) problems.push(`${what}: ${diff.examples.join('; ')}`);
  return { lost: diff.lost, model: after };
}
