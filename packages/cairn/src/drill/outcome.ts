/** The outcome a scenario returns: ok exactly when it recorded no problem, its steps from its
 *  stopwatch; most scenarios recover on their own and lose nothing by design. */
import { type ScenarioContext, type ScenarioOutcome, type Stopwatch, verifyModel } from './context.js';

export interface OutcomeParts {
  rtoMs: number | null;
  rpo: number | null;
  mechanism: string;
  figures: Record<string, number>;
  /** What the scenario loses by design; null (nothing) unless given. */
  declaredLoss?: string | null;
  /** Cairn recovers without an operator; true unless given. */
  automatic?: boolean;
}

export function scenarioOutcome(sw: Stopwatch, problems: string[], parts: OutcomeParts): ScenarioOutcome {
  return {
    ok: problems.length === 0,
    rtoMs: parts.rtoMs,
    rpo: parts.rpo,
    declaredLoss: parts.declaredLoss ?? null,
    automatic: parts.automatic ?? true,
    mechanism: parts.mechanism,
    steps: sw.steps,
    figures: parts.figures,
    problems,
  };
}

/** Compares `store` with the reference model (a difference is a problem named `what`) and
 *  returns the outcome, its RPO the rows lost. */
export async function verifiedOutcome(
  ctx: ScenarioContext,
  sw: Stopwatch,
  store: string,
  problems: string[],
  what: string,
  parts: Omit<OutcomeParts, 'rpo'>,
): Promise<ScenarioOutcome> {
  const { lost } = await verifyModel(ctx, sw, store, problems, what);
  return scenarioOutcome(sw, problems, { ...parts, rpo: lost });
}
