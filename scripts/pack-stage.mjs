// Lays out the published packages under STAGE (called by scripts/pack.sh):
//   STAGE/cairndb/                  dist/ of packages/cairn, native/ (the napi loader and its types)
//   STAGE/cairndb-<platform>/       one addon, as `napi build --platform` named it
// The workspace's private `@cairn/native` becomes the package-relative `../native/native.cjs`.
import { cpSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';

const stage = process.argv[2];
if (!stage) throw new Error('usage: node scripts/pack-stage.mjs STAGE');
const root = new URL('..', import.meta.url).pathname;
const api = JSON.parse(readFileSync(join(root, 'packages/cairn/package.json'), 'utf8'));
const binding = JSON.parse(readFileSync(join(root, 'crates/cairn-node/package.json'), 'utf8'));
const { version } = api;
const binaryName = binding.napi.name;
const platformPrefix = binding.napi.package.name;

// napi-rs's platform triples: package os/cpu/libc fields.
const PLATFORMS = {
  'linux-x64-gnu': { os: ['linux'], cpu: ['x64'], libc: ['glibc'] },
  'linux-x64-musl': { os: ['linux'], cpu: ['x64'], libc: ['musl'] },
  'linux-arm64-gnu': { os: ['linux'], cpu: ['arm64'], libc: ['glibc'] },
  'darwin-x64': { os: ['darwin'], cpu: ['x64'] },
  'darwin-arm64': { os: ['darwin'], cpu: ['arm64'] },
  'win32-x64-msvc': { os: ['win32'], cpu: ['x64'] },
};

const addons = readdirSync(join(root, 'crates/cairn-node')).filter((n) => n.startsWith(`${binaryName}.`) && n.endsWith('.node'));
if (addons.length === 0) throw new Error('no built addon in crates/cairn-node: run pnpm build first');
const optional = {};
for (const file of addons) {
  const platform = file.slice(binaryName.length + 1, -'.node'.length);
  const fields = PLATFORMS[platform];
  if (!fields) throw new Error(`unknown napi platform '${platform}'`);
  const name = `${platformPrefix}-${platform}`;
  const dir = join(stage, name);
  mkdirSync(dir, { recursive: true });
  cpSync(join(root, 'crates/cairn-node', file), join(dir, file));
  const pkg = {
    name,
    version,
    description: `The ${platform} native addon of cairndb.`,
    ...fields,
    main: file,
    files: [file],
    license: api.license ?? 'UNLICENSED',
  };
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
  optional[name] = version;
}

const dir = join(stage, 'cairndb');
cpSync(join(root, 'packages/cairn/dist'), join(dir, 'dist'), { recursive: true, filter: (p) => !p.endsWith('.map') });
mkdirSync(join(dir, 'native'));
cpSync(join(root, 'crates/cairn-node/native.js'), join(dir, 'native/native.cjs'));
cpSync(join(root, 'crates/cairn-node/native.d.ts'), join(dir, 'native/native.d.cts'));
cpSync(join(root, 'README.md'), join(dir, 'README.md'));

/** Every dist file that names the workspace binding names the staged loader instead. */
function relink(d) {
  for (const name of readdirSync(d)) {
    const p = join(d, name);
    if (statSync(p).isDirectory()) {
      relink(p);
      continue;
    }
    if (!/\.(js|d\.ts)$/.test(name)) continue;
    const text = readFileSync(p, 'utf8');
    if (!text.includes("'@cairn/native'")) continue;
    let rel = relative(d, join(dir, 'native/native.cjs'));
    if (!rel.startsWith('.')) rel = `./${rel}`;
    writeFileSync(p, text.split("'@cairn/native'").join(`'${rel}'`));
  }
}
relink(join(dir, 'dist'));

const dependencies = { ...api.dependencies };
delete dependencies['@cairn/native'];
const pkg = {
  name: api.name,
  version,
  description: api.description,
  type: 'module',
  main: api.main,
  types: api.types,
  exports: api.exports,
  bin: api.bin,
  files: ['dist', 'native', 'README.md'],
  engines: api.engines,
  dependencies,
  optionalDependencies: optional,
  license: api.license ?? 'UNLICENSED',
};
writeFileSync(join(dir, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
