/** The recovery drill: `runDrill`, its report shapes and its text table. */
export { drillTable, drillText } from './report.js';
export { runDrill } from './runner.js';
export type { DrillOptions, DrillReport, ScenarioName, ScenarioResult, ScenarioStep } from './types.js';
export { ALL_SCENARIOS, CLUSTER_SCENARIOS, SEED_CLAIMS, SINGLE_NODE_SCENARIOS } from './types.js';
