/**
 * Child process of `cairn demo`: writes records from several concurrent writers in `group`
 * mode and prints `ack <id> <seq>` for each acknowledged write, until it is killed.
 */
import { open } from './store.js';

export function demoVector(id: string, dim: number): Float32Array {
  // Deterministic per id, so the parent can check the exact bytes after recovery.
  let h = 2166136261;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 16777619);
  const v = new Float32Array(dim);
  for (let i = 0; i < dim; i++) {
    h = Math.imul(h ^ (h >>> 15), 2246822507) ^ i;
    v[i] = ((h >>> 0) % 10_000) / 10_000 - 0.5;
  }
  return v;
}

async function main(): Promise<void> {
  const dir = process.argv[2];
  const dim = Number(process.argv[3] ?? 64);
  if (!dir) throw new Error('usage: demo-writer DIR [DIM]');
  const db = await open(dir, { sync: 'group' });
  const col = db.collection('docs');
  let n = 0;
  const writer = async (w: number) => {
    for (;;) {
      const id = `live-${w}-${n++}`;
      const { seq } = await col.upsert([{ id, vector: demoVector(id, dim), metadata: { writer: w } }]);
      process.stdout.write(`ack ${id} ${seq}\n`);
    }
  };
  await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map(writer));
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  main().catch((e) => {
    process.stderr.write(`${e instanceof Error ? e.stack : e}\n`);
    process.exit(1);
  });
}
