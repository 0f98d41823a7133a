// The recovery drill: every single-node scenario recovers a copy of a real store with no
// acknowledged write lost (RTO is measured, never asserted), and the source directory keeps
// every byte and mtime. PITR links the snapshot's immutable files, and a write to the restored
// store never reaches the source; `copy: true` shares no inode with it. The CLI's contract.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

import { CairnError, open, restore, runDrill } from 'cairndb';
import { beforeAll, describe, expect, test } from 'vitest';

import { tempDir } from './helpers.js';

const CLI = fileURLToPath(new URL('../packages/cairn/dist/cli.js', import.meta.url));
const SCENARIOS = ['process-kill', 'index-loss', 'segment-corruption', 'accidental-delete', 'disk-loss'] as const;
const DIM = 16;
const ROWS = 3_000;

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function vectorOf(i: number): Float32Array {
  const v = new Float32Array(DIM);
  let h = (i + 1) * 2654435761;
  for (let k = 0; k < DIM; k++) {
    h = Math.imul(h ^ (h >>> 15), 2246822507) >>> 0;
    v[k] = (h % 10_000) / 10_000 - 0.5;
  }
  return v;
}

/** id → [vector, metadata]: what the source holds (the reference model of these tests). */
const model = new Map<string, { vector: Float32Array; metadata: Record<string, unknown> }>();

/** Every file under `dir`, recursively (full paths). */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? filesUnder(p) : [p];
  });
}

/** Every file under `dir`: relative path → bytes (base64), size and mtime. */
function fingerprint(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const p of filesUnder(dir)) {
    const s = statSync(p);
    out.set(relative(dir, p), `${s.size}:${s.mtimeMs}:${readFileSync(p).toString('base64')}`);
  }
  return out;
}

function inodes(dir: string): Set<string> {
  return new Set(
    filesUnder(dir).map((p) => {
      const s = statSync(p);
      return `${s.dev}:${s.ino}`;
    }),
  );
}

async function expectEqualsModel(dir: string): Promise<void> {
  const db = await open(dir, { create: false });
  try {
    const col = db.collection('docs');
    expect(await col.count()).toBe(model.size);
    for (const [id, want] of model) {
      const got = await col.get(id);
      expect(got, id).toBeDefined();
      expect(Array.from(got!.vector)).toEqual(Array.from(want.vector));
      expect(got!.metadata).toEqual(want.metadata);
    }
  } finally {
    await db.close();
  }
}

let source = '';

beforeAll(async () => {
  source = join(tempDir('drill-src-'), 'store');
  const db = await open(source);
  const docs = await db.createCollection('docs', { dim: DIM, metric: 'l2' });
  const small = await db.createCollection('notes', { dim: 4, metric: 'cosine' });
  for (let i = 0; i < ROWS; i += 500) {
    const records = [];
    for (let j = i; j < i + 500; j++) {
      const r = { vector: vectorOf(j), metadata: { n: j, even: j % 2 === 0 } };
      model.set(`r${j}`, r);
      records.push({ id: `r${j}`, ...r });
    }
    await docs.upsert(records);
  }
  await small.upsert([{ id: 'a', vector: new Float32Array([1, 0, 0, 0]), metadata: {} }]);
  await docs.waitForIndex();
  // A snapshot (hard links into data/) and a WAL tail after the checkpoint.
  await db.snapshot();
  await docs.upsert([{ id: 'tail', vector: vectorOf(-1), metadata: { tail: true } }]);
  model.set('tail', { vector: vectorOf(-1), metadata: { tail: true } });
  await db.close();
});

describe('runDrill', () => {
  test.each(SCENARIOS)('%s_recovers_with_rpo_0_and_leaves_the_source_untouched', async (scenario) => {
    const before = fingerprint(source);
    const report = await runDrill({ source, scenarios: [scenario], scratch: tempDir('drill-scratch-') });
    const r = report.scenarios[0]!;
    expect(report.scenarios.map((s) => s.scenario)).toEqual([scenario]);
    expect(r.problems).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.rpo).toBe(0);
    expect(r.rtoMs).not.toBeNull();
    expect(report.rows).toBe(ROWS + 2);
    expect(fingerprint(source)).toEqual(before);
  });

  test('process_kill_counts_acknowledged_writes_of_a_real_child', async () => {
    const report = await runDrill({ source, scenarios: ['process-kill'] });
    const r = report.scenarios[0]!;
    expect(r.figures.acknowledgedWrites).toBeGreaterThan(0);
    // Every acknowledged write is in the recovered store (a prefix of history, maybe more).
    expect(r.figures.recoveredRows).toBeGreaterThanOrEqual(ROWS + 2 + r.figures.acknowledgedWrites!);
    expect(r.rpo).toBe(0);
  });

  test('bad_options_are_refused_naming_the_field', async () => {
    await expect(runDrill({ source, scenarios: ['meteor' as never] })).rejects.toMatchObject({
      code: 'CAIRN_INVALID_ARGUMENT',
      message: expect.stringContaining('options.scenarios'),
    });
    await expect(runDrill({ source, bogus: 1 } as never)).rejects.toMatchObject({ code: 'CAIRN_INVALID_ARGUMENT', message: expect.stringContaining('bogus') });
    await expect(runDrill({ source: join(source, 'nope') })).rejects.toBeInstanceOf(CairnError);
    const empty = join(tempDir('drill-empty-'), 'store');
    await (await open(empty)).close();
    await expect(runDrill({ source: empty })).rejects.toMatchObject({ code: 'CAIRN_INVALID_ARGUMENT', message: expect.stringContaining('no rows') });
  });
});

describe.runIf(existsSync('/usr/bin/etcd'))('runDrill --cluster', () => {
  test('cluster_scenarios_lose_no_write_acknowledged_with_w_majority', async () => {
    const before = fingerprint(source);
    const report = await runDrill({ source, cluster: true, scenarios: ['replica-loss', 'leader-kill', 'leader-pause', 'full-outage'] });
    for (const r of report.scenarios) {
      expect(r.problems, r.scenario).toEqual([]);
      expect(r.rpo, r.scenario).toBe(0);
      expect(r.figures.acknowledgedWrites, r.scenario).toBeGreaterThan(0);
    }
    expect(report.scenarios.map((r) => r.scenario)).toEqual(['replica-loss', 'leader-kill', 'leader-pause', 'full-outage']);
    expect(fingerprint(source)).toEqual(before);
  }, 600_000);

  test('cluster_scenarios_need_the_cluster_option', async () => {
    await expect(runDrill({ source, scenarios: ['leader-kill'] })).rejects.toMatchObject({
      code: 'CAIRN_INVALID_ARGUMENT',
      message: expect.stringContaining('options.cluster'),
    });
    const r = cli('drill', source, '--scenarios', 'leader-kill', '--json');
    expect(r.status).toBe(2);
    expect(JSON.parse(r.stdout).error.message).toContain('--cluster');
  });
});

describe('restore placement', () => {
  test('restore_links_snapshot_files_equals_model_and_later_writes_do_not_reach_the_source', async () => {
    const target = join(tempDir('drill-pitr-'), 'restored');
    const r = await restore({ source, target });
    expect(r.files.linked + r.files.cloned).toBeGreaterThan(0);
    expect(r.files.copied).toBe(0);
    if (r.files.linked > 0) {
      const shared = [...inodes(target)].filter((i) => inodes(source).has(i));
      expect(shared.length).toBeGreaterThan(0);
    }
    await expectEqualsModel(target);
    const before = fingerprint(source);
    // Writes, deletes and a checkpoint on the restored store (which replaces and removes files).
    const db = await open(target, { create: false });
    const docs = db.collection('docs');
    await docs.upsert([{ id: 'r1', vector: vectorOf(99_999), metadata: { changed: true } }]);
    await docs.delete(['r2', 'r3']);
    await db.checkpoint();
    expect((await db.scrub({ repair: false })).corrupt).toEqual([]);
    await db.close();
    expect(fingerprint(source)).toEqual(before);
    await expectEqualsModel(source);
  });

  test('copy_true_shares_no_inode_with_the_source', async () => {
    const target = join(tempDir('drill-copy-'), 'restored');
    const r = await restore({ source, target, copy: true });
    expect(r.files.linked + r.files.cloned).toBe(0);
    expect(r.files.copied).toBeGreaterThan(0);
    const src = inodes(source);
    expect([...inodes(target)].filter((i) => src.has(i))).toEqual([]);
    await expectEqualsModel(target);
    await expect(restore({ source, target: join(target, 'x'), copy: 'yes' as never })).rejects.toMatchObject({
      code: 'CAIRN_INVALID_ARGUMENT',
      message: expect.stringContaining('options.copy'),
    });
  });
});

describe('cairn drill', () => {
  test('help_json_and_bad_flags', () => {
    const help = cli('drill', '--help');
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('usage: cairn drill DIR');
    for (const s of SCENARIOS) expect(help.stdout).toContain(s);
    const bad = cli('drill', source, '--bogus', '--json');
    expect(bad.status).toBe(2);
    expect(JSON.parse(bad.stdout).error.code).toBe('CAIRN_INVALID_ARGUMENT');
    const unknown = cli('drill', source, '--scenarios', 'index-loss,meteor', '--json');
    expect(unknown.status).toBe(2);
    expect(JSON.parse(unknown.stdout).error.message).toContain('meteor');
    const missing = cli('drill', join(source, 'nope'), '--json');
    expect(missing.status).toBe(1);
    expect(JSON.parse(missing.stdout).error.code).toBe('CAIRN_NOT_FOUND');
  });

  test('json_report_of_one_scenario_and_text_table', () => {
    const before = fingerprint(source);
    const j = cli('drill', source, '--scenarios', 'index-loss', '--json');
    expect(j.status).toBe(0);
    const report = JSON.parse(j.stdout);
    expect(report.ok).toBe(true);
    expect(report.scenarios).toHaveLength(1);
    expect(report.scenarios[0]).toMatchObject({ scenario: 'index-loss', rpo: 0, automatic: true });
    expect(report.loadavg).toHaveLength(3);
    const t = cli('drill', source, '--scenarios', 'segment-corruption');
    expect(t.status).toBe(0);
    expect(t.stdout).toMatch(/segment-corruption\s+\S+ m?s\s+0\s+yes\s+data corruption: "immediate"\s+ok/);
    expect(fingerprint(source)).toEqual(before);
  });
});
