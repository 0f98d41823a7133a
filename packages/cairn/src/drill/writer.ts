/**
 * Child process of the process-kill scenario: opens a store, writes single-record upserts from
 * four concurrent writers in `group` mode, and prints `ack <id>` once each write's promise has
 * resolved (so every printed id is an acknowledged write), until it is killed.
 * Usage: writer.js DIR COLLECTION DIM
 */
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { type Collection, open } from '../store.js';

/** Deterministic per id (FNV-1a seeded xorshift), so the parent can check the exact bytes. */
function drillVector(id: string, dim: number): Float32Array {
  let h = 2166136261;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 16777619);
  const v = new Float32Array(dim);
  for (let i = 0; i < dim; i++) {
    h ^= h << 13;
    h ^= h >>> 17;
    h ^= h << 5;
    v[i] = ((h >>> 0) % 20_000) / 10_000 - 1;
  }
  return v;
}

/** The id a writer child gives its `n`th write from writer `w`. */
export function drillWriteId(w: number, n: number): string {
  return `drill-kill-${w}-${n}`;
}

/** What the child stores under `id`, so the parent can check the exact bytes after recovery. */
export function drillWriteRecord(id: string, dim: number): { vector: Float32Array; metadata: { drill: string } } {
  return { vector: drillVector(id, dim), metadata: { drill: id } };
}

/** Whether `col` holds exactly what a drill writer stored under `id`. */
export async function holdsDrillWrite(col: Collection, id: string, dim: number): Promise<boolean> {
  const want = drillWriteRecord(id, dim);
  const got = await col.get(id);
  return (
    got !== undefined &&
    got.vector.length === want.vector.length &&
    got.vector.every((v, i) => v === want.vector[i]) &&
    JSON.stringify(got.metadata) === JSON.stringify(want.metadata)
  );
}

async function main(): Promise<void> {
  const [dir, collection, dimArg] = process.argv.slice(2);
  const dim = Number(dimArg);
  if (!dir || !collection || !(dim > 0)) throw new Error('usage: writer.js DIR COLLECTION DIM');
  const db = await open(dir, { sync: 'group', create: false });
  const col = db.collection(collection);
  process.stdout.write('ready\n');
  const writer = async (w: number) => {
    for (let n = 0; ; n++) {
      const id = drillWriteId(w, n);
      await col.upsert([{ id, ...drillWriteRecord(id, dim) }]);
      process.stdout.write(`ack ${id}\n`);
    }
  };
  await Promise.all([0, 1, 2, 3].map(writer));
}

// Run only as the child's main module (a suffix match would also fire when imported).
if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  main().catch((e) => {
    process.stderr.write(`${e instanceof Error ? e.stack : e}\n`);
    process.exit(1);
  });
}
