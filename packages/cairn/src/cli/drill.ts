/** `cairn drill`: run recovery scenarios on copies of a store and print RTO and RPO; exit 1 if any failed. */
import { drillText } from '../drill/report.js';
import { runDrill } from '../drill/runner.js';
import { ALL_SCENARIOS, CLUSTER_SCENARIOS, type ScenarioName } from '../drill/types.js';
import { type Command, existingStore, UsageError } from './command.js';
import { json } from './output.js';

export const drill: Command = {
  name: 'drill',
  help:
    '  drill DIR [--scenarios a,b,...] [--cluster] [--scratch DIR] [--json]\n' +
    '                           run recovery scenarios on copies of the store (DIR is only read)\n' +
    '                           and report RTO and RPO beside the published claims\n',
  details:
    '  --scenarios a,b,...      single node: process-kill, index-loss, segment-corruption,\n' +
    '                           accidental-delete, disk-loss (default: all of them)\n' +
    '  --cluster                also replica-loss, leader-kill, leader-pause, full-outage: three\n' +
    '                           local node processes and an etcd (/usr/bin/etcd) on 127.0.0.1\n' +
    '  --scratch DIR            where the copies are made (default: the OS temp directory)\n',
  options: {
    scenarios: { type: 'string' },
    cluster: { type: 'boolean', default: false },
    scratch: { type: 'string' },
  },
  async run(args) {
    const dir = args.positionals[0];
    if (!dir) throw new UsageError('drill needs a store directory');
    if (args.positionals.length > 1) throw new UsageError(`drill takes one store directory, got ${args.positionals.length}`);
    const list = args.string('scenarios');
    let scenarios: ScenarioName[] | undefined;
    if (list !== undefined) {
      const names = list.split(',').map((s) => s.trim());
      for (const n of names) {
        if (!(ALL_SCENARIOS as readonly string[]).includes(n))
          throw new UsageError(`--scenarios: unknown scenario '${n}' (known: ${ALL_SCENARIOS.join(', ')})`);
        if (!args.flag('cluster') && (CLUSTER_SCENARIOS as readonly string[]).includes(n))
          throw new UsageError(`--scenarios: '${n}' is a cluster scenario; add --cluster`);
      }
      scenarios = names as ScenarioName[];
    }
    const scratch = args.string('scratch');
    const tty = !args.json && process.stderr.isTTY;
    const report = await runDrill({
      source: await existingStore(dir),
      cluster: args.flag('cluster'),
      ...(scenarios ? { scenarios } : {}),
      ...(scratch !== undefined ? { scratch } : {}),
      ...(tty ? { onProgress: (e) => process.stderr.write(e.phase === 'start' ? `${e.scenario} ...` : ` ${e.result?.ok ? 'ok' : 'FAILED'}\n`) } : {}),
    });
    process.stdout.write(args.json ? `${json(report)}\n` : drillText(report));
    return report.ok ? 0 : 1;
  },
};
