// `import { open } from 'cairndb'` loads only what opening, writing and querying need: the
// packages behind metrics (prom-client), scrub and backup worker pools (piscina), replication
// frames (@node-rs/crc32) and backup schedules (croner) load on first use (`lazy-require.ts`).
// A fresh process imports the package, writes and queries, and lists the CommonJS modules it
// holds (an ESM import of any of these packages would list them too); then it uses each
// feature and lists again.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { expect, test } from 'vitest';

import { tempDir } from './helpers.js';

const CAIRN = fileURLToPath(new URL('../packages/cairn/dist/index.js', import.meta.url));
const FRAME = fileURLToPath(new URL('../packages/cairn/dist/replication/frame.js', import.meta.url));
const DEPS = ['prom-client', 'piscina', '@node-rs/crc32', 'croner'];

const CHILD = `
import { createRequire } from 'node:module';
const cairn = await import(${JSON.stringify(CAIRN)});
const deps = ${JSON.stringify(DEPS)};
const loaded = () => {
  const files = Object.keys(createRequire(import.meta.url).cache);
  return deps.filter((d) => files.some((f) => f.includes('/node_modules/' + d + '/')));
};
const db = await cairn.open(process.argv[1]);
const col = await db.createCollection('c', { dim: 4, metric: 'l2' });
await col.upsert([{ id: 'a', vector: [1, 0, 0, 0], metadata: { n: 1 } }]);
const hits = await col.query([1, 0, 0, 0], { k: 1 });
const afterQuery = loaded();
const text = await db.metrics();
const afterMetrics = loaded();
cairn.parseCron('0 2 * * *');
const afterCron = loaded();
const { encodeFrame, FrameType } = await import(${JSON.stringify(FRAME)});
encodeFrame(FrameType.ACK, Buffer.alloc(8), 1n);
const afterFrame = loaded();
await db.close();
console.log(JSON.stringify({ hit: hits[0]?.id, afterQuery, afterMetrics, afterCron, afterFrame, scraped: text.includes('cairn_commits_total') }));
`;

test('heavy_dependencies_load_on_first_use_not_at_import', async () => {
  const out = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', CHILD, tempDir()], { timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`child failed: ${err.message}\n${stderr}`));
      resolve(stdout.trim().split('\n').at(-1) ?? '{}');
    });
  });
  const r = JSON.parse(out);
  expect(r.hit).toBe('a');
  expect(r.afterQuery).toEqual([]);
  expect(r.scraped).toBe(true);
  expect(r.afterMetrics).toEqual(['prom-client']);
  expect(r.afterCron).toEqual(['prom-client', 'croner']);
  expect(r.afterFrame).toEqual(['prom-client', '@node-rs/crc32', 'croner']);
}, 90_000);
