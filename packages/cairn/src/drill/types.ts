/** Shapes of a recovery drill: options, one scenario's result, the whole report (a leaf). */

export const SINGLE_NODE_SCENARIOS = ['process-kill', 'index-loss', 'segment-corruption', 'accidental-delete', 'disk-loss'] as const;
/** Run only with `cluster: true`: three local `startNode` processes and an etcd. */
export const CLUSTER_SCENARIOS = ['replica-loss', 'leader-kill', 'leader-pause', 'full-outage'] as const;
export type ScenarioName = (typeof SINGLE_NODE_SCENARIOS)[number] | (typeof CLUSTER_SCENARIOS)[number];
export const ALL_SCENARIOS: readonly ScenarioName[] = [...SINGLE_NODE_SCENARIOS, ...CLUSTER_SCENARIOS];

export interface DrillOptions {
  /** The store to drill on. It is only read: every scenario runs on its own copy. */
  source: string;
  /** Default: every single-node scenario, then (with `cluster`) every cluster one. */
  scenarios?: ScenarioName[];
  /** Allow the cluster scenarios: an etcd (/usr/bin/etcd) and three node processes on 127.0.0.1. */
  cluster?: boolean;
  /** Where the copies are made (default: the OS temp directory); removed afterwards. */
  scratch?: string;
  /** Called as each scenario starts and ends (the CLI prints it on a terminal). */
  onProgress?: (event: { scenario: ScenarioName; phase: 'start' | 'end'; result?: ScenarioResult }) => void;
}

export interface ScenarioStep {
  name: string;
  ms: number;
}

export interface ScenarioResult {
  scenario: ScenarioName;
  /** Recovered, and the recovered store equals the reference model. */
  ok: boolean;
  /** From the failure (or the start of recovery, where noted) to the first correct query answer. */
  rtoMs: number | null;
  /** Acknowledged writes lost: missing or different after recovery. */
  rpo: number | null;
  /** What the scenario loses by design (null: nothing). */
  declaredLoss: string | null;
  /** Cairn recovers without an operator (true), or an operator runs the recovery (false). */
  automatic: boolean;
  /** How recovery was done, in one line. */
  mechanism: string;
  steps: ScenarioStep[];
  /** Scenario-specific figures (rows written, files linked, graph rebuild time, ...). */
  figures: Record<string, number>;
  /** Why `ok` is false. */
  problems: string[];
  error?: { code: string; message: string };
}

export interface DrillReport {
  source: string;
  collections: Array<{ name: string; dim: number; rows: number }>;
  rows: number;
  startedAt: string;
  durationMs: number;
  loadavg: number[];
  scenarios: ScenarioResult[];
  ok: boolean;
}

/** Whether Cairn recovers without an operator: the scenario's own answer, also reported when
 *  it fails. Restarting a killed process counts as automatic (a supervisor's job). */
export const AUTOMATIC: Readonly<Record<ScenarioName, boolean>> = {
  'process-kill': true,
  'index-loss': true,
  'segment-corruption': true,
  'accidental-delete': false,
  'disk-loss': false,
  'replica-loss': true,
  'leader-kill': true,
  'leader-pause': true,
  'full-outage': true,
};

/** The recovery table the seeds publish, by the scenario that measures each line. */
export const SEED_CLAIMS: Readonly<Record<ScenarioName, string>> = {
  'process-kill': 'single-node failure: 2–5 min',
  'index-loss': 'single-node failure: 2–5 min',
  'segment-corruption': 'data corruption: "immediate"',
  'accidental-delete': 'accidental delete: 1–5 min (PITR)',
  'disk-loss': 'single-node failure: 2–5 min',
  'replica-loss': 'single-node failure: 2–5 min',
  'leader-kill': 'leader failure: 30–60 s',
  'leader-pause': 'leader failure: 30–60 s',
  'full-outage': 'cluster failure: 5–10 min',
};
