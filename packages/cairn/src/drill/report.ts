/** The drill's table as text: the seeds' columns (scenario, RTO, RPO, automatic?) beside the
 *  seeds' claims. The JSON form is the `DrillReport` itself. */
import { type DrillReport, type ScenarioResult, SEED_CLAIMS } from './types.js';

export function formatDuration(ms: number | null): string {
  if (ms === null) return '—';
  if (ms < 1_000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)} s`;
  return `${(ms / 60_000).toFixed(1)} min`;
}

function rpoText(r: ScenarioResult): string {
  if (r.rpo === null) return '—';
  return r.declaredLoss ? `${r.rpo} (+ declared)` : String(r.rpo);
}

/** A plain table; `markdown` draws it with pipes (bench/README.md). */
export function drillTable(report: DrillReport, markdown = false): string {
  const head = ['scenario', 'RTO measured', 'RPO (writes lost)', 'automatic?', "seeds' claim", 'result'];
  const rows = report.scenarios.map((r) => [
    r.scenario,
    formatDuration(r.rtoMs),
    rpoText(r),
    r.automatic ? 'yes' : 'no (operator)',
    SEED_CLAIMS[r.scenario],
    r.ok ? 'ok' : 'FAILED',
  ]);
  if (markdown) {
    const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
    return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n');
  }
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(head), ...rows.map(line)].join('\n');
}

/** The table, then each scenario's mechanism, steps, figures and problems. */
export function drillText(report: DrillReport): string {
  const out = [
    `drill of ${report.source}: ${report.rows} rows in ${report.collections.length} collection(s); load average ${report.loadavg.join(' ')}`,
    '',
    drillTable(report),
    '',
  ];
  for (const r of report.scenarios) {
    out.push(`${r.scenario}: ${r.mechanism || 'did not run to the end'}`);
    if (r.declaredLoss) out.push(`  declared loss: ${r.declaredLoss}`);
    if (r.steps.length > 0) out.push(`  steps: ${r.steps.map((s) => `${s.name} ${formatDuration(s.ms)}`).join(', ')}`);
    const figures = Object.entries(r.figures);
    if (figures.length > 0) out.push(`  ${figures.map(([k, v]) => `${k} ${v}`).join(', ')}`);
    for (const p of r.problems) out.push(`  PROBLEM: ${p}`);
  }
  out.push(
    '',
    'RTO: to the first correct query answer (cluster scenarios: to the first write acknowledged with',
    "w: 'majority' again; replica-loss: until the replica holds every write). RPO: acknowledged",
    'writes missing or different after recovery.',
  );
  return `${out.join('\n')}\n`;
}
