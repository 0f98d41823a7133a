// Entry point of `pnpm bench`: runs benchmark scripts one after another, each in its own `node`
// process so that one's memory and background threads never skew the next.
//
//   node bench/run.js                 # the write path (bench/write.js, about 1.5 min)
//   node bench/run.js write hnsw      # the named scripts, bench/<name>.js
//   node bench/run.js all             # every bench/*.js script (the HNSW and snapshot ones take minutes)
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const available = readdirSync(here)
  .filter((f) => f.endsWith('.js') && f !== 'run.js')
  .map((f) => f.slice(0, -3))
  .sort();

const args = process.argv.slice(2);
const names = args.length === 0 ? ['write'] : args.includes('all') ? available : args;
const unknown = names.filter((n) => !available.includes(n));
if (unknown.length > 0) {
  console.error(`unknown benchmark ${unknown.join(', ')}; available: ${available.join(', ')}, all`);
  process.exit(2);
}

let failed = 0;
for (const name of names) {
  console.log(`\n=== bench/${name}.js ===`);
  const r = spawnSync(process.execPath, [join(here, `${name}.js`)], { stdio: 'inherit' });
  if (r.status !== 0) {
    failed++;
    console.error(`bench/${name}.js exited with ${r.status ?? r.signal}`);
  }
}
process.exit(failed === 0 ? 0 : 1);
