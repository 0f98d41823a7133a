/**
 * The drill's reference model: every row of every collection as id → content digest (xxh3 of
 * vector and metadata, taken by the engine after checking each row's checksum), read from a
 * copy before any damage; and probes, rows whose own vector must come back as a query's hit.
 */
import { native } from '../errors.js';
import { nativeModule } from '../native.js';
import type { Collection } from '../store.js';

export interface ModelCollection {
  name: string;
  dim: number;
  /** Sorted ids and their digests, index for index. */
  ids: string[];
  digests: string[];
}

export interface Probe {
  collection: string;
  id: string;
  vector: Float32Array;
  /** The stored metadata, as the engine returns it (JSON text). */
  metadata: string;
}

export interface Model {
  collections: ModelCollection[];
  rows: number;
  /** Rows of the main collection whose own vector must be a hit of a correct query. */
  probes: Probe[];
}

/** Probes per model. */
const PROBES = 8;

/** Read the model of the store in `dir` (opened read-only as a replica, fully verified). */
export async function readModel(dir: string): Promise<Model> {
  const h = await native(() => nativeModule.openStore(dir, { sync: 'group', recovery: 'absolute-consistency', replica: true, metrics: false }));
  try {
    const collections: ModelCollection[] = [];
    for (const c of h.collections()) {
      const d = await native(() => h.rowDigests(c.name));
      collections.push({ name: c.name, dim: c.dim, ids: d.ids, digests: d.digests });
    }
    const rows = collections.reduce((n, c) => n + c.ids.length, 0);
    const probes: Probe[] = [];
    const main = rows > 0 ? mainCollection({ collections, rows, probes }) : undefined;
    for (const id of main ? spreadIds(main, PROBES) : []) {
      const r = await native(() => h.get(main!.name, id));
      if (r) probes.push({ collection: main!.name, id, vector: r.vector, metadata: r.metadata });
    }
    return { collections, rows, probes };
  } finally {
    await native(() => h.close());
  }
}

export interface ModelDiff {
  /** Rows of `expected` missing or different in `actual`. */
  lost: number;
  /** Rows in `actual` that `expected` lacks (and `allowExtra` does not admit). */
  extra: number;
  /** Up to 5 examples, for the report. */
  examples: string[];
}

/** Compare a recovered store's model with the reference. `allowExtra(collection, id)` admits
 *  rows the scenario itself wrote after the model was read. */
export function diffModels(expected: Model, actual: Model, allowExtra: (collection: string, id: string) => boolean = () => false): ModelDiff {
  const diff: ModelDiff = { lost: 0, extra: 0, examples: [] };
  const note = (s: string) => {
    if (diff.examples.length < 5) diff.examples.push(s);
  };
  const byName = new Map(actual.collections.map((c) => [c.name, c]));
  for (const e of expected.collections) {
    const a = byName.get(e.name);
    if (!a) {
      diff.lost += e.ids.length;
      note(`collection '${e.name}' is missing`);
      continue;
    }
    byName.delete(e.name);
    const got = new Map(a.ids.map((id, i) => [id, a.digests[i]!]));
    for (let i = 0; i < e.ids.length; i++) {
      const id = e.ids[i]!;
      const d = got.get(id);
      if (d === undefined) {
        diff.lost++;
        note(`'${e.name}'/'${id}' is missing`);
      } else if (d !== e.digests[i]) {
        diff.lost++;
        note(`'${e.name}'/'${id}' differs`);
      }
      got.delete(id);
    }
    for (const id of got.keys()) {
      if (allowExtra(e.name, id)) continue;
      diff.extra++;
      note(`'${e.name}'/'${id}' is not in the reference`);
    }
  }
  for (const a of byName.values()) {
    const extra = a.ids.filter((id) => !allowExtra(a.name, id)).length;
    if (extra > 0) {
      diff.extra += extra;
      note(`collection '${a.name}' is not in the reference`);
    }
  }
  return diff;
}

/** The largest collection: the one scenarios write to, delete from and probe. */
export function mainCollection(model: Model): ModelCollection {
  const c = [...model.collections].sort((a, b) => b.ids.length - a.ids.length)[0];
  if (!c || c.ids.length === 0) throw new Error('unreachable: runDrill refuses a source without rows');
  return c;
}

/** `count` ids spread evenly over the collection (deterministic). */
export function spreadIds(c: ModelCollection, count: number): string[] {
  const n = Math.min(count, c.ids.length);
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(c.ids[Math.floor((i * c.ids.length) / n)]!);
  return out;
}

/** Whether a query with the probe's own vector finds the probe's row, with its metadata. */
export async function answersCorrectly(col: Collection, probe: Probe): Promise<boolean> {
  const hits = await col.query(probe.vector, { k: 10 });
  const want = JSON.stringify(JSON.parse(probe.metadata));
  return hits.some((h) => h.id === probe.id && JSON.stringify(h.metadata) === want);
}
