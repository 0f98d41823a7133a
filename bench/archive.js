// zstd ratio and throughput of snapshot archives, with and without the float32 byte shuffle,
// at levels 1, 3 and 9, on a store of real-valued vectors (clustered 128-d floats).
// Run: node bench/archive.js [rows]   (default 100,000 rows x 128 dims)
import { mkdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { exportSnapshot, open } from 'cairndb';

const rows = Number(process.argv[2] ?? 100_000);
const dim = 128;
const root = join(fileURLToPath(new URL('.', import.meta.url)), '.bench-data', 'archive');
rmSync(root, { recursive: true, force: true });
mkdirSync(root, { recursive: true });

let s = 42;
const rnd = () => {
  s = (Math.imul(s, 1103515245) + 12345) >>> 0;
  return s / 4294967296;
};
const gauss = () => Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd());
const centres = Array.from({ length: 100 }, () => Float32Array.from({ length: dim }, () => gauss()));

const db = await open(join(root, 'store'));
const col = await db.createCollection('v', { dim, metric: 'cosine' });
for (let at = 0; at < rows; at += 10_000) {
  const batch = [];
  for (let i = at; i < Math.min(rows, at + 10_000); i++) {
    const c = centres[i % centres.length];
    batch.push({ id: `v${i}`, vector: Float32Array.from(c, (x) => x + 0.3 * gauss()), metadata: { i } });
  }
  await col.upsert(batch);
}
await col.waitForIndex();
const snap = await db.snapshot();
await db.close();

const table = [];
for (const level of [1, 3, 9]) {
  for (const shuffle of [false, true]) {
    const file = join(root, `l${level}-${shuffle ? 's' : 'n'}.carc`);
    const t0 = performance.now();
    const r = await exportSnapshot({ dir: join(root, 'store'), id: snap.id, file, level, shuffle });
    const ms = performance.now() - t0;
    table.push({
      level,
      shuffle,
      'raw MB': +(r.rawBytes / 1e6).toFixed(1),
      'stored MB': +(statSync(file).size / 1e6).toFixed(1),
      ratio: +(r.rawBytes / r.storedBytes).toFixed(3),
      'MB/s': +(r.rawBytes / 1e6 / (ms / 1000)).toFixed(0),
    });
  }
}
console.table(table);
for (const level of [1, 3, 9]) {
  const [plain, shuffled] = table.filter((t) => t.level === level);
  console.log(`level ${level}: byte shuffle stores ${(100 * (1 - shuffled['stored MB'] / plain['stored MB'])).toFixed(1)}% fewer bytes`);
}
