/**
 * Records as callers pass them (`upsert`, `batch`, a transaction's writes), validated field by
 * field and encoded as batch operations (`encode.ts`). A bad one throws `CAIRN_INVALID_ARGUMENT`
 * naming the field; nothing is encoded past it.
 */
import type { Metadata } from './collection-reader.js';
import type { EncodedOp, UpsertMetadata, UpsertVisitor } from './encode.js';
import { invalidArgument } from './errors.js';
import {
  allFinite,
  checkJson,
  checkKnownKeys,
  checkName,
  checkPlainObject,
  checkVector,
  hasOnlyKeys,
  isFiniteVector,
  isFlatJsonObject,
  isPlainJson,
  isPlainName,
  isPlainObject,
} from './validate.js';

/** `M` is the collection's metadata type (`db.collection<M>(name)`); any JSON object by default. */
export interface VectorRecord<M extends object = Metadata> {
  id: string;
  vector: Float32Array | number[];
  metadata?: M;
}

/**
 * The columnar form of an upsert: `n` ids, their vectors back to back in one `n × dim`
 * Float32Array, and optionally `n` metadata objects (an absent one is `{}`). It avoids a JS
 * object per record; validation and error messages are those of the record form.
 */
export interface ColumnarRecords<M extends object = Metadata> {
  ids: string[];
  vectors: Float32Array;
  metadata?: (M | undefined)[];
}

const RECORD_KEYS = ['id', 'vector', 'metadata'] as const;

const COLUMNAR_KEYS = ['ids', 'vectors', 'metadata'] as const;

/** JSON of an absent metadata object: one shared string, not one per record. */
const EMPTY_METADATA = '{}';

export function encodeUpserts(field: string, collection: string, dim: number, records: unknown, out: EncodedOp[]): void {
  forEachUpsert(field, dim, records, (id, vectors, start, metadata) => {
    const vector = start === 0 && vectors.length === dim ? vectors : vectors.subarray(start, start + dim);
    out.push({ kind: 'upsert', collection, id, vector, metadata: typeof metadata === 'string' ? metadata : JSON.stringify(metadata) });
  });
}

/**
 * Validates `records` (either form) and hands each record to `visit` in order; a bad one throws
 * before it is visited. Returns the number of records.
 */
export function forEachUpsert(field: string, dim: number, records: unknown, visit: UpsertVisitor): number {
  if (isPlainObject(records)) return forEachColumnarUpsert(field, dim, records, visit);
  if (!Array.isArray(records) || records.length === 0) {
    throw invalidArgument(`${field} must be a non-empty array of records or { ids, vectors, metadata? }`);
  }
  const seen = new Set<string>();
  // The is* predicates accept the common valid case without building a field name; when one
  // fails, the check* twin throws the message that names the field (or converts a number[]).
  for (let i = 0; i < records.length; i++) {
    const r: unknown = records[i];
    if (!isPlainObject(r) || !hasOnlyKeys(r, RECORD_KEYS)) {
      checkKnownKeys(`${field}[${i}]`, checkPlainObject(`${field}[${i}]`, r), RECORD_KEYS);
    }
    const rec = r as Record<string, unknown>;
    const id = isPlainName(rec.id) ? rec.id : checkName(`${field}[${i}].id`, rec.id);
    if (seen.has(id)) throw invalidArgument(`${field}[${i}].id '${id}' appears twice in one batch`);
    seen.add(id);
    const vector = isFiniteVector(rec.vector, dim) ? rec.vector : checkVector(`${field}[${i}].vector`, rec.vector, dim);
    visit(id, vector, 0, checkMetadata(rec.metadata, field, i, false));
  }
  return records.length;
}

/** Record `i`'s metadata, checked: a flat object as it is (the payload writer serializes it),
 *  anything else as JSON. The field is named only when it is bad. */
function checkMetadata(meta: unknown, field: string, i: number, columnar: boolean): UpsertMetadata {
  if (meta === undefined || meta === null) return EMPTY_METADATA;
  if (isFlatJsonObject(meta)) return meta;
  if (!isPlainObject(meta) || !isPlainJson(meta)) {
    const name = columnar ? `${field}.metadata[${i}]` : `${field}[${i}].metadata`;
    checkPlainObject(name, meta);
    checkJson(name, meta);
  }
  return JSON.stringify(meta);
}

/** The columnar form: record `i` is `ids[i]`, `vectors[i*dim .. (i+1)*dim)` and `metadata?.[i]`. */
function forEachColumnarUpsert(field: string, dim: number, columns: Record<string, unknown>, visit: UpsertVisitor): number {
  checkKnownKeys(field, columns, COLUMNAR_KEYS);
  const { ids, vectors, metadata } = columns;
  if (!Array.isArray(ids) || ids.length === 0) throw invalidArgument(`${field}.ids must be a non-empty array`);
  if (!(vectors instanceof Float32Array)) throw invalidArgument(`${field}.vectors must be a Float32Array of ids.length × dim values`);
  const n = ids.length;
  if (vectors.length !== n * dim) {
    throw invalidArgument(`${field}.vectors has ${vectors.length} values, expected ${n} ids × dim ${dim} = ${n * dim}`);
  }
  if (metadata !== undefined && (!Array.isArray(metadata) || metadata.length !== n)) {
    throw invalidArgument(`${field}.metadata must be an array with one entry per id (${n})`);
  }
  if (!allFinite(vectors, 0, vectors.length)) {
    const j = vectors.findIndex((x) => !Number.isFinite(x));
    throw invalidArgument(`${field}.vectors[${j}] (record ${Math.floor(j / dim)}, component ${j % dim}) must be a finite number (got ${String(vectors[j])})`);
  }
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) {
    const raw = ids[i];
    const id = isPlainName(raw) ? raw : checkName(`${field}.ids[${i}]`, raw);
    if (seen.has(id)) throw invalidArgument(`${field}.ids[${i}] '${id}' appears twice in one batch`);
    seen.add(id);
    visit(id, vectors, i * dim, checkMetadata((metadata as unknown[] | undefined)?.[i], field, i, true));
  }
  return n;
}

export function encodeDeletes(field: string, collection: string, ids: unknown, out: EncodedOp[]): void {
  if (!Array.isArray(ids) || ids.length === 0) throw invalidArgument(`${field} must be a non-empty array`);
  ids.forEach((id, i) => {
    out.push({ kind: 'delete', collection, id: checkName(`${field}[${i}]`, id) });
  });
}
