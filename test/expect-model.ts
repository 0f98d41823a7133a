// Compare the 'docs' collection of a store with a reference model: id -> the version whose
// record (fixtures/records.mjs) it must hold, to the byte; an id not in the model must be absent.
import type { Store } from 'cairndb';
import { expect } from 'vitest';

import { metadataFor, vectorFor } from './fixtures/records.mjs';

const bytes = (v: Float32Array) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);

/** Every id of `ids` as `model` says (present with its exact vector and metadata, or absent), and no other row. */
export async function expectModel(db: Store, model: Map<string, string>, ids: Iterable<string>, dim: number): Promise<void> {
  const docs = db.collection('docs');
  for (const id of ids) {
    const row = await docs.get(id);
    const v = model.get(id);
    if (v === undefined) {
      expect(row, `${id} must be absent`).toBeUndefined();
      continue;
    }
    expect(row, `${id} must be present`).toBeDefined();
    expect(row!.metadata, `${id} metadata`).toEqual(metadataFor(id, v));
    expect(bytes(row!.vector).equals(bytes(vectorFor(id, v, dim))), `${id} bytes`).toBe(true);
  }
  expect(await docs.count()).toBe(model.size);
}
