// Backup benchmark: full backup and restore MB/s on file:// and on S3 (moto's server, a separate
// process on loopback), and the bytes a second full backup after a 1% change stores (dedup)
// beside an incremental one after another 1% change. One-shot timings printed with
// console.table; peer: `cp -r` of the snapshot directory and of the backup, alone and with a
// `sync -f` (file), and `tar | zstd -3` (bytes). Also the decode floor: the CPU per raw byte of
// the stages a verified restore cannot skip (zstd, unshuffle, SHA-256), timed on one thread.
//
//   node bench/backup.js
//
// Environment: BACKUP_MB (1024, vector bytes in the store), BACKUP_DIM (1536), BACKUP_S3=0 to
// skip S3. Data under $TMPDIR/cairn-bench-backup (BACKUP_DATA), removed unless KEEP_DATA=1.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { BackupManager, open } from 'cairndb';
import { CHUNK_BYTES, CHUNK_HEADER_BYTES, FLAG_SHUFFLED, OFF_FLAGS } from '../packages/cairn/dist/backup/chunks.js';
import { freePort } from '../packages/cairn/dist/drill/free-port.js';
import { nativeModule } from '../packages/cairn/dist/native.js';
import { randomVector, rng } from './random.js';

// Outside bench/.bench-data: other benches clear that directory while this one runs.
const here = dirname(fileURLToPath(import.meta.url));
const ROOT = process.env.BACKUP_DATA ?? join(tmpdir(), 'cairn-bench-backup');
const MB_TARGET = Number(process.env.BACKUP_MB ?? 1024);
const DIM = Number(process.env.BACKUP_DIM ?? 1536);
const WITH_S3 = process.env.BACKUP_S3 !== '0';
const GRAPH = { m: 8, efConstruction: 32 };

const rand = rng(7);
const vector = (dim) => randomVector(rand, dim);
const rows = (from, n, version) => Array.from({ length: n }, (_, j) => ({ id: `doc-${from + j}`, vector: vector(DIM), metadata: { n: from + j, v: version } }));
const mb = (b) => Number((b / 2 ** 20).toFixed(1));
const rate = (bytes, ms) => Number((bytes / 2 ** 20 / (ms / 1000)).toFixed(1));
async function timed(fn) {
  const t = performance.now();
  const value = await fn();
  return { ms: performance.now() - t, value };
}
function duBytes(dir) {
  let total = 0;
  for (const name of readdirSync(dir, { recursive: true, encoding: 'utf8' })) {
    const st = statSync(join(dir, name));
    if (st.isFile()) total += st.size;
  }
  return total;
}

rmSync(ROOT, { recursive: true, force: true });
mkdirSync(ROOT, { recursive: true });
const store = join(ROOT, 'store');
const total = Math.ceil((MB_TARGET * 2 ** 20) / (DIM * 4));
const BATCH = 500;

console.log(`building ${total} x ${DIM} (${MB_TARGET} MB of vectors)...`);
const build = await timed(async () => {
  const db = await open(store);
  const col = await db.createCollection('docs', { dim: DIM, metric: 'l2', ...GRAPH });
  for (let i = 0; i < total; i += BATCH) await col.upsert(rows(i, Math.min(BATCH, total - i), 0));
  await col.waitForIndex();
  await db.snapshot();
  await db.close();
});
console.log(`built in ${(build.ms / 1000).toFixed(0)} s`);

/** Change `frac` of the rows, then a full snapshot (as `new BackupManager({ source: store })` would). */
async function change(frac, version) {
  const db = await open(store);
  const col = db.collection('docs');
  const n = Math.ceil(total * frac);
  const start = Math.floor(rand() * (total - n));
  for (let i = 0; i < n; i += BATCH) await col.upsert(rows(start + i, Math.min(BATCH, n - i), version));
  await col.waitForIndex();
  await db.snapshot();
  await db.close();
}

const speed = [];
const sizes = [];
async function targetRun(label, url, extra) {
  const backups = new BackupManager({ source: store, target: url, compression: { level: 3 }, ...extra });
  const full = await timed(() => backups.create({ kind: 'full' }));
  const m = full.value;
  speed.push({
    case: `${label}: full backup`,
    s: Number((full.ms / 1000).toFixed(1)),
    'raw MB': mb(m.bytes.raw),
    'stored MB': mb(m.bytes.stored),
    'MB/s (raw)': rate(m.bytes.raw, full.ms),
  });
  const row = (what, ms) => ({
    case: `${label}: ${what}`,
    s: Number((ms / 1000).toFixed(2)),
    'raw MB': mb(m.bytes.raw),
    'stored MB': mb(m.bytes.stored),
    'MB/s (raw)': rate(m.bytes.raw, ms),
  });
  const v = await timed(() => backups.verify(m.id));
  if (!v.value.ok) throw new Error(`verify failed: ${JSON.stringify(v.value.problems)}`);
  speed.push(row('verify (read + decode every chunk)', v.ms));
  const out = join(ROOT, `restore-${label}`);
  // The restore's two phases: chunks read, decoded, verified and written into a temp directory
  // (until the first 'restore' progress), then restore() links those files, checks them and
  // opens the result with absolute-consistency.
  let written = null;
  const t0 = performance.now();
  const r = await timed(() => backups.restore(m.id, out, { onProgress: (p) => (written ??= p.phase === 'restore' ? performance.now() - t0 : null) }));
  speed.push(row('restore (verify + write + restore())', r.ms));
  if (written !== null) {
    speed.push(row('  of which read + decode + write', written));
    speed.push(row('  of which restore(): link, check, open', r.ms - written));
  }
  rmSync(out, { recursive: true, force: true });
  return { backups, full: m };
}

const fileUrl = `file://${join(ROOT, 'target-file')}`;
const { backups: fileBackups, full: full1 } = await targetRun('file://', fileUrl, {});
const snapDir = join(store, 'snapshots');
/** `cp -r` of `dir`, timed, as a peer row. */
async function cpPeer(label, dir, sync = false) {
  spawnSync('sync');
  const cp = await timed(async () => {
    spawnSync('cp', ['-r', dir, join(ROOT, 'cp-peer')]);
    if (sync) spawnSync('sync', ['-f', join(ROOT, 'cp-peer')]);
  });
  const bytes = duBytes(dir);
  speed.push({ case: label, s: Number((cp.ms / 1000).toFixed(2)), 'raw MB': mb(bytes), 'stored MB': mb(bytes), 'MB/s (raw)': rate(bytes, cp.ms) });
  rmSync(join(ROOT, 'cp-peer'), { recursive: true, force: true });
}
await cpPeer('peer: cp -r snapshots/', snapDir);
// The disk-loss peer: a plain copy of the backup itself (what a restore must read), alone and
// until `sync -f` has made the copy durable (a restore fsyncs what it writes).
await cpPeer('peer: cp -r of the file:// backup', join(ROOT, 'target-file'));
await cpPeer('peer: cp -r of the file:// backup + sync -f', join(ROOT, 'target-file'), true);
const floor = decodeFloor(join(ROOT, 'target-file', 'chunks'));
/**
 * The CPU a verified restore cannot avoid: every chunk decompressed, unshuffled and hashed (a
 * chunk's name is its SHA-256), each stage timed on one thread over every chunk of the backup,
 * in the process's reused buffers (no allocation inside a timing).
 */
function decodeFloor(dir) {
  const zstd = createRequire(join(here, '../packages/cairn/package.json'))('zstd-napi/binding.js');
  const dctx = new zstd.DCtx();
  const packed = Buffer.allocUnsafe(CHUNK_BYTES);
  const raw = Buffer.allocUnsafe(CHUNK_BYTES);
  const ns = { zstd: 0n, unshuffle: 0n, sha256: 0n };
  let bytes = 0;
  for (const name of readdirSync(dir)) {
    const object = readFileSync(join(dir, name));
    let t = process.hrtime.bigint();
    const n = dctx.decompress(packed, object.subarray(CHUNK_HEADER_BYTES));
    ns.zstd += process.hrtime.bigint() - t;
    let plain = packed.subarray(0, n);
    if (object[OFF_FLAGS] & FLAG_SHUFFLED) {
      t = process.hrtime.bigint();
      nativeModule.unshuffle4(plain, raw.subarray(0, n));
      ns.unshuffle += process.hrtime.bigint() - t;
      plain = raw.subarray(0, n);
    }
    t = process.hrtime.bigint();
    const digest = createHash('sha256').update(plain).digest('hex');
    ns.sha256 += process.hrtime.bigint() - t;
    if (digest !== name) throw new Error(`chunk ${name} does not decode to its name`);
    bytes += n;
  }
  const perByte = Object.fromEntries(Object.entries(ns).map(([k, v]) => [k, Number(v) / bytes]));
  const cpuMs = Number(ns.zstd + ns.unshuffle + ns.sha256) / 1e6;
  return { bytes, perByte, cpuMs, cores: availableParallelism() };
}

const tarz = spawnSync('sh', ['-c', `tar -C ${store} -cf - snapshots | zstd -3 -q -c | wc -c`], { encoding: 'utf8' });
const tarBytes = Number(tarz.stdout.trim()) || null;

if (WITH_S3 && spawnSync('python3', ['-c', 'import moto.server'], { stdio: 'ignore' }).status === 0) {
  const port = await freePort();
  const moto = spawn('python3', ['-m', 'moto.server', '-H', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
  try {
    const endpoint = `http://127.0.0.1:${port}`;
    for (let i = 0; i < 100; i++) {
      try {
        await fetch(endpoint);
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await fetch(`${endpoint}/cairn-bench`, { method: 'PUT' });
    process.env.AWS_ACCESS_KEY_ID ??= 'bench';
    process.env.AWS_SECRET_ACCESS_KEY ??= 'bench';
    const { backups } = await targetRun('s3:// (moto)', 's3://cairn-bench/b', { s3: { endpoint } });
    await backups.close();
  } finally {
    moto.kill('SIGTERM');
  }
}

sizes.push({
  case: 'first full backup',
  'raw MB': mb(full1.bytes.raw),
  'read MB': mb(full1.bytes.read),
  'written MB': mb(full1.bytes.written),
  'vs first full': '100%',
});
if (tarBytes)
  sizes.push({
    case: 'peer: tar | zstd -3 of snapshots/',
    'raw MB': mb(full1.bytes.raw),
    'read MB': mb(full1.bytes.raw),
    'written MB': mb(tarBytes),
    'vs first full': `${((100 * tarBytes) / full1.bytes.written).toFixed(1)}%`,
  });
await change(0.01, 1);
const full2 = (await timed(() => fileBackups.create({ kind: 'full' }))).value;
sizes.push({
  case: 'second full after a 1% change (dedup)',
  'raw MB': mb(full2.bytes.raw),
  'read MB': mb(full2.bytes.read),
  'written MB': mb(full2.bytes.written),
  'vs first full': `${((100 * full2.bytes.written) / full1.bytes.written).toFixed(1)}%`,
});
await change(0.01, 2);
const inc = (await timed(() => fileBackups.create({ kind: 'incremental' }))).value;
sizes.push({
  case: 'incremental after another 1% change',
  'raw MB': mb(inc.bytes.raw),
  'read MB': mb(inc.bytes.read),
  'written MB': mb(inc.bytes.written),
  'vs first full': `${((100 * inc.bytes.written) / full1.bytes.written).toFixed(1)}%`,
});

console.log(
  `\nstore: ${total} x ${DIM}, build ${(build.ms / 1000).toFixed(0)} s; load average ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`,
);
console.table(speed);
console.log(
  `decode floor of a verified restore, one thread, ${mb(floor.bytes)} raw MB: zstd ${floor.perByte.zstd.toFixed(2)} ns/B, ` +
    `unshuffle ${floor.perByte.unshuffle.toFixed(2)} ns/B, SHA-256 ${floor.perByte.sha256.toFixed(2)} ns/B; ` +
    `${(floor.cpuMs / 1000).toFixed(2)} s of CPU, ${(floor.cpuMs / floor.cores / 1000).toFixed(2)} s on all ${floor.cores} cores`,
);
console.table(sizes);
if (process.env.KEEP_DATA !== '1') rmSync(ROOT, { recursive: true, force: true });
