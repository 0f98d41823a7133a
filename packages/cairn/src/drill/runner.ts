/**
 * `runDrill`: copy the source store once to read the reference model, then run each scenario on
 * its own fresh copy in a scratch directory, and report what recovery took and lost. The source
 * is only ever read (copied); the scratch directory is removed afterwards.
 */
import { mkdir } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';

import { CairnError, invalidArgument } from '../errors.js';
import { checkStoreDir } from '../store-dir.js';
import { checkKnownKeys, checkPlainObject } from '../validate.js';
import { accidentalDelete } from './accidental-delete.js';
import { round, type ScenarioContext, type ScenarioOutcome } from './context.js';
import { diskLoss } from './disk-loss.js';
import { fullOutage } from './full-outage.js';
import { indexLoss } from './index-loss.js';
import { leaderKill } from './leader-kill.js';
import { leaderPause } from './leader-pause.js';
import { mainCollection, readModel } from './model.js';
import { processKill } from './process-kill.js';
import { replicaLoss } from './replica-loss.js';
import { copyStore, makeScratch, removeScratch } from './scratch.js';
import { segmentCorruption } from './segment-corruption.js';
import {
  ALL_SCENARIOS,
  AUTOMATIC,
  CLUSTER_SCENARIOS,
  type DrillOptions,
  type DrillReport,
  type ScenarioName,
  type ScenarioResult,
  SINGLE_NODE_SCENARIOS,
} from './types.js';

const RUN: Readonly<Record<ScenarioName, (ctx: ScenarioContext) => Promise<ScenarioOutcome>>> = {
  'process-kill': processKill,
  'index-loss': indexLoss,
  'segment-corruption': segmentCorruption,
  'accidental-delete': accidentalDelete,
  'disk-loss': diskLoss,
  'replica-loss': replicaLoss,
  'leader-kill': leaderKill,
  'leader-pause': leaderPause,
  'full-outage': fullOutage,
};

function parseScenarios(value: unknown, cluster: boolean): ScenarioName[] {
  if (value === undefined) return cluster ? [...ALL_SCENARIOS] : [...SINGLE_NODE_SCENARIOS];
  if (!Array.isArray(value) || value.length === 0) throw invalidArgument('options.scenarios must be a non-empty array of scenario names');
  for (const s of value) {
    if (!(ALL_SCENARIOS as readonly unknown[]).includes(s))
      throw invalidArgument(`options.scenarios: unknown scenario ${JSON.stringify(s)} (known: ${ALL_SCENARIOS.join(', ')})`);
    if (!cluster && (CLUSTER_SCENARIOS as readonly unknown[]).includes(s))
      throw invalidArgument(`options.scenarios: '${s}' is a cluster scenario; it needs options.cluster: true (etcd and three node processes)`);
  }
  // Single-node ones first, in the canonical order, each once.
  return ALL_SCENARIOS.filter((s) => value.includes(s));
}

/** Run recovery scenarios on copies of `options.source`; never modifies it. */
export async function runDrill(options: DrillOptions): Promise<DrillReport> {
  checkPlainObject('options', options);
  checkKnownKeys('options', options, ['source', 'scenarios', 'cluster', 'scratch', 'onProgress']);
  if (options.cluster !== undefined && typeof options.cluster !== 'boolean') throw invalidArgument('options.cluster must be a boolean');
  if (typeof options.source !== 'string' || options.source === '') throw invalidArgument('options.source must be a store directory path');
  if (options.scratch !== undefined && (typeof options.scratch !== 'string' || options.scratch === ''))
    throw invalidArgument('options.scratch must be a directory path');
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') throw invalidArgument('options.onProgress must be a function');
  const scenarios = parseScenarios(options.scenarios, options.cluster === true);
  const source = resolve(options.source);
  await checkStoreDir(source, false);
  const started = new Date();
  const t0 = performance.now();
  if (options.scratch !== undefined) await mkdir(resolve(options.scratch), { recursive: true });
  const scratch = await makeScratch(options.scratch === undefined ? undefined : resolve(options.scratch));
  try {
    const modelCopy = join(scratch, 'model');
    await copyStore(source, modelCopy);
    const model = await readModel(modelCopy);
    await removeScratch(modelCopy);
    if (model.rows === 0) throw invalidArgument(`options.source: ${source} holds no rows to drill on`);
    const main = mainCollection(model);
    const results: ScenarioResult[] = [];
    for (const name of scenarios) {
      options.onProgress?.({ scenario: name, phase: 'start' });
      const dir = join(scratch, name);
      await mkdir(dir);
      const ctx: ScenarioContext = { model, main, dir, copy: (dest) => copyStore(source, dest) };
      let result: ScenarioResult;
      try {
        result = { scenario: name, ...(await RUN[name](ctx)) };
      } catch (e) {
        const code = e instanceof CairnError ? e.code : 'CAIRN_INTERNAL';
        const message = e instanceof Error ? e.message : String(e);
        result = {
          scenario: name,
          ok: false,
          rtoMs: null,
          rpo: null,
          declaredLoss: null,
          automatic: AUTOMATIC[name],
          mechanism: '',
          steps: [],
          figures: {},
          problems: [`failed: ${code}: ${message}`],
          error: { code, message },
        };
      } finally {
        await removeScratch(dir);
      }
      results.push(result);
      options.onProgress?.({ scenario: name, phase: 'end', result });
    }
    return {
      source,
      collections: model.collections.map((c) => ({ name: c.name, dim: c.dim, rows: c.ids.length })),
      rows: model.rows,
      startedAt: started.toISOString(),
      durationMs: round(performance.now() - t0),
      loadavg: loadavg().map((l) => Math.round(l * 100) / 100),
      scenarios: results,
      ok: results.every((r) => r.ok),
    };
  } finally {
    await removeScratch(scratch);
  }
}
