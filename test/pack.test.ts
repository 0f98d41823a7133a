// The installable package: scripts/pack.sh writes tarballs; a fresh app with Node and npm only
// (cargo and pnpm hidden from PATH, no repository on its module path) installs them, imports
// `cairndb`, runs `npx cairn`, and a strict TypeScript app type-checks against the package.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, test } from 'vitest';

import { tempDir } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');
const HIDDEN = new Set(['cargo', 'rustc', 'rustup', 'pnpm', 'pnpx']);

/** A bin directory with every command on PATH except the build tools. */
function pathWithoutBuildTools(): string {
  const bin = tempDir('pack-bin');
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir || dir.includes('.cargo') || dir.includes('node_modules')) continue;
    let names: string[] = [];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      if (HIDDEN.has(name) || existsSync(join(bin, name))) continue;
      symlinkSync(join(dir, name), join(bin, name));
    }
  }
  return bin;
}

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv) {
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout: 600_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('installable package', () => {
  test('packed_tarballs_install_and_run_in_a_fresh_app_without_cargo_or_pnpm', { timeout: 900_000 }, () => {
    const out = join(tempDir('pack-out'), 'out');
    const packed = run('bash', [join(ROOT, 'scripts/pack.sh'), out], ROOT, process.env);
    expect(packed.status, packed.stderr).toBe(0);
    const tarballs = readdirSync(out).sort();
    expect(tarballs).toEqual(['cairndb-0.1.0.tgz', 'cairndb-linux-x64-gnu-0.1.0.tgz']);

    const app = tempDir('pack-app');
    const env: NodeJS.ProcessEnv = { HOME: process.env.HOME, PATH: pathWithoutBuildTools(), npm_config_update_notifier: 'false' };
    for (const tool of ['cargo', 'pnpm']) expect(run('sh', ['-c', `command -v ${tool}`], app, env).status, tool).not.toBe(0);
    expect(run('npm', ['init', '-y'], app, env).status).toBe(0);
    const installed = run('npm', ['install', '--no-audit', '--no-fund', ...tarballs.map((t) => join(out, t))], app, env);
    expect(installed.status, installed.stderr).toBe(0);
    const pkg = JSON.parse(readFileSync(join(app, 'node_modules/cairndb/package.json'), 'utf8'));
    expect(JSON.stringify(pkg)).not.toContain('@cairn/native');
    expect(pkg.optionalDependencies).toEqual({ 'cairndb-linux-x64-gnu': '0.1.0' });

    const script =
      "const { open } = await import('cairndb'); const db = await open('./store'); const c = await db.createCollection('docs', { dim: 2 });" +
      "await c.upsert([{ id: 'a', vector: [1, 0] }]); console.log(await c.count(), String(db.lastSeq)); await db.close();";
    const used = run('node', ['--input-type=module', '-e', script], app, env);
    expect(used.status, used.stderr).toBe(0);
    expect(used.stdout).toBe('1 2\n');
    expect(used.stderr).toBe('');

    // Backups compress with zstd-napi, whose binding its install script builds (npm 11 runs it
    // with a warning until approved). Without the binding, the package still imports and a backup
    // fails with CAIRN_UNAVAILABLE naming the fix; with it, the backup completes.
    const backupScript =
      "const { BackupManager } = await import('cairndb'); const b = new BackupManager({ source: './store', target: 'file://' + process.cwd() + '/bk' });" +
      'const r = await b.create().catch((e) => ({ thrown: e })); const e = r.thrown ?? (r.targets.find((t) => !t.ok) ?? {}).error;' +
      "console.log(e ? e.code + ': ' + e.message : r.status);";
    const zstdBuild = join(app, 'node_modules/zstd-napi/build');
    expect(existsSync(join(zstdBuild, 'Release')), 'npm 11 ran the zstd-napi install script').toBe(true);
    renameSync(zstdBuild, `${zstdBuild}.off`);
    const without = run('node', ['--input-type=module', '-e', backupScript], app, env);
    renameSync(`${zstdBuild}.off`, zstdBuild);
    expect(without.status, without.stderr).toBe(0);
    expect(without.stdout).toMatch(/^CAIRN_UNAVAILABLE: zstd-napi, .* has no built binding .*npm install-scripts approve zstd-napi && npm rebuild zstd-napi/);
    const withZstd = run('node', ['--input-type=module', '-e', backupScript], app, env);
    expect([withZstd.stdout, withZstd.stderr]).toEqual(['completed\n', '']);

    // Without a platform package that fits, the import fails with one message naming the
    // platform and the package to install.
    const platformPkg = join(app, 'node_modules/cairndb-linux-x64-gnu');
    renameSync(platformPkg, `${platformPkg}.off`);
    const noAddon = run('node', ['--input-type=module', '-e', "await import('cairndb')"], app, env);
    renameSync(`${platformPkg}.off`, platformPkg);
    expect(noAddon.status).not.toBe(0);
    expect(noAddon.stderr).toContain(`cairndb: no native addon loads on ${process.platform}-${process.arch}`);
    expect(noAddon.stderr).toContain('cairndb-linux-x64-gnu');

    const help = run('npx', ['cairn', '--help'], app, env);
    expect(help.status, help.stderr).toBe(0);
    expect(help.stdout.startsWith('usage: cairn <command> [options]\n')).toBe(true);
    const status = run('npx', ['cairn', 'status', 'store', '--json'], app, env);
    expect(status.status, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ lastSeq: '2', openElsewhere: false });

    // A strict TypeScript app, with nothing installed besides the tarballs (tsc from outside).
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true },
        include: ['app.ts'],
      }),
    );
    const pkgJson = JSON.parse(readFileSync(join(app, 'package.json'), 'utf8'));
    writeFileSync(join(app, 'package.json'), JSON.stringify({ ...pkgJson, type: 'module' }));
    writeFileSync(
      join(app, 'app.ts'),
      [
        "import { open, CairnError, type QueryHit, type StoreInspection } from 'cairndb';",
        "const db = await open('./store', { sync: 'group', create: false });",
        "const docs = db.collection('docs');",
        'const hits: QueryHit[] = await docs.query([1, 0], { k: 1 });',
        'const id: string | undefined = hits[0]?.id;',
        'const seq: bigint = db.lastSeq;',
        "db.on('scrub', (r) => void r.corrupt.length);",
        '// @ts-expect-error a scrub report is not a string (events are typed)',
        "db.on('scrub', (r: string) => void r);",
        'const closeness: number = hits[0]?.distance ?? 0;',
        'void closeness;',
        '// Collection<M>: metadata typed on the way in and out.',
        'interface Doc { title: string; year: number }',
        "const typed = db.collection<Doc>('docs');",
        "await typed.upsert([{ id: 'b', vector: [0, 1], metadata: { title: 'x', year: 2026 } }]);",
        "const year: number | undefined = (await typed.get('b'))?.metadata.year;",
        'const title: string | undefined = (await typed.query([0, 1], { k: 1 }))[0]?.metadata.title;',
        "const made = await db.createCollection<Doc>('made', { dim: 2 });",
        "// @ts-expect-error metadata must have the collection's type",
        "await made.upsert([{ id: 'c', vector: [0, 1], metadata: { title: 1, year: 2026 } }]);",
        "db.on('index-rebuild', (r) => void r.collection.toUpperCase());",
        "db.on('snapshot', (info) => void (info.seq + 1n));",
        '// @ts-expect-error internal members are not in the published types',
        'db.commit([]);',
        'void [year, title];',
        'export const seen: [string | undefined, bigint, string, StoreInspection | null] = [id, seq, CairnError.name, null];',
        'await db.close();',
      ].join('\n'),
    );
    const typed = run('node', [TSC, '-p', '.'], app, env);
    expect(typed.status, typed.stdout).toBe(0);
    // The check is real: a wrong type in the app is reported.
    writeFileSync(join(app, 'app.ts'), "import { open } from 'cairndb';\nconst db = await open('./store');\nconst n: string = db.lastSeq;\nexport { n };\n");
    const wrong = run('node', [TSC, '-p', '.'], app, env);
    expect(wrong.status).not.toBe(0);
    expect(wrong.stdout).toContain("Type 'bigint' is not assignable to type 'string'");
  });
});
