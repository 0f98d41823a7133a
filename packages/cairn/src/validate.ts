import { invalidArgument } from './errors.js';

export const MAX_NAME_BYTES = 256;
export const MAX_DIM = 65_536;

/** Names of collections and ids: non-empty, at most 256 UTF-8 bytes, never path-like. */
export function checkName(field: string, value: unknown): string {
  if (isPlainName(value)) return value;
  if (typeof value !== 'string') throw invalidArgument(`${field} must be a string`);
  if (value.length === 0) throw invalidArgument(`${field} must not be empty`);
  if (Buffer.byteLength(value, 'utf8') > MAX_NAME_BYTES) throw invalidArgument(`${field} must be at most ${MAX_NAME_BYTES} bytes`);
  if (value === '.' || value === '..' || /[/\\\0]/.test(value)) {
    throw invalidArgument(`${field} must not contain '/', '\\' or NUL, nor be '.' or '..'`);
  }
  if (value.isWellFormed && !value.isWellFormed()) throw invalidArgument(`${field} must be well-formed Unicode`);
  return value;
}

/**
 * The common case of a valid name, checked without building a field name or calling into
 * native code: ASCII (so one byte per unit, and well-formed), 1 to 256 units, no '/', '\\' or NUL.
 */
export function isPlainName(value: unknown): value is string {
  if (typeof value !== 'string') return false;
  const n = value.length;
  if (n === 0 || n > MAX_NAME_BYTES || value === '.' || value === '..') return false;
  for (let i = 0; i < n; i++) {
    const c = value.charCodeAt(i);
    if (c >= 0x80 || c === 0x2f || c === 0x5c || c === 0) return false;
  }
  return true;
}

/** Reject keys the caller did not mean: a typo must not silently fall back to a default. */
export function checkKnownKeys(field: string, value: object, known: readonly string[]): void {
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) throw invalidArgument(`${field}.${key} is not a known option (expected one of: ${known.join(', ')})`);
  }
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

export function checkPlainObject(field: string, value: unknown): Record<string, unknown> {
  if (isPlainObject(value)) return value;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw invalidArgument(`${field} must be an object`);
  throw invalidArgument(`${field} must be a plain object`);
}

/**
 * Whether every own enumerable key of `value` is in `known` (see `checkKnownKeys`), without
 * allocating a key array. `for...in` also visits inherited enumerable keys, so an object false
 * here only because of such a key goes to `checkKnownKeys`, which decides on own keys alone.
 */
export function hasOnlyKeys(value: object, known: readonly string[]): boolean {
  for (const key in value) {
    if (!known.includes(key)) return false;
  }
  return true;
}

export function checkPositiveInt(field: string, value: unknown, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0 || value > max) {
    throw invalidArgument(`${field} must be a positive integer${max < Number.MAX_SAFE_INTEGER ? ` at most ${max}` : ''}`);
  }
  return value;
}

export function checkOneOf<T extends string>(field: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw invalidArgument(`${field} must be one of ${allowed.map((a) => `'${a}'`).join(', ')}`);
  }
  return value as T;
}

/** A vector of exactly `dim` finite float32 values; returns the Float32Array to store. */
export function checkVector(field: string, value: unknown, dim: number): Float32Array {
  if (isFiniteVector(value, dim)) return value;
  let vec: Float32Array;
  if (value instanceof Float32Array) vec = value;
  else if (Array.isArray(value)) {
    vec = new Float32Array(value.length);
    for (let i = 0; i < value.length; i++) {
      const x = value[i];
      if (typeof x !== 'number') throw invalidArgument(`${field}[${i}] must be a number`);
      vec[i] = x;
    }
  } else throw invalidArgument(`${field} must be a Float32Array or an array of numbers`);
  if (vec.length !== dim) throw invalidArgument(`${field} has dimension ${vec.length}, expected ${dim}`);
  for (let i = 0; i < vec.length; i++) {
    // Also catches finite doubles that overflow float32.
    if (!Number.isFinite(vec[i]!)) throw invalidArgument(`${field}[${i}] must be a finite number (got ${String(vec[i])})`);
  }
  return vec;
}

/** The common case of a valid vector: a Float32Array of `dim` finite values. */
export function isFiniteVector(value: unknown, dim: number): value is Float32Array {
  return value instanceof Float32Array && value.length === dim && allFinite(value, 0, dim);
}

/**
 * Whether `values[start .. end)` are all finite. x * 0 is ±0 for a finite x and NaN for NaN and
 * ±Infinity, so the sums stay 0 exactly when every value is finite; four independent sums run
 * about twice as fast as a compare and branch per value (this runs over every component written).
 */
export function allFinite(values: Float32Array, start: number, end: number): boolean {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let i = start;
  for (; i + 4 <= end; i += 4) {
    s0 += values[i]! * 0;
    s1 += values[i + 1]! * 0;
    s2 += values[i + 2]! * 0;
    s3 += values[i + 3]! * 0;
  }
  for (; i < end; i++) s0 += values[i]! * 0;
  return s0 + s1 + s2 + s3 === 0;
}

/** Plain JSON only: objects with the plain prototype, arrays, strings, finite numbers, booleans, null. */
export function checkJson(field: string, value: unknown): void {
  const problem = jsonProblem(value, undefined);
  if (problem !== undefined) throw invalidArgument(`${field}${problem[0]} ${problem[1]}`);
}

export function isPlainJson(value: unknown): boolean {
  return isFlatJsonObject(value) || jsonProblem(value, undefined) === undefined;
}

/**
 * A plain object whose values are all strings, booleans, finite numbers or null (the usual
 * metadata), accepted without allocating. `for...in` visits the own enumerable keys JSON takes
 * and any inherited enumerable ones too, so passing here implies passing `jsonProblem`; an
 * object that fails here gets the full check.
 */
export function isFlatJsonObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return false;
  const rec = value as Record<string, unknown>;
  for (const k in rec) {
    const v = rec[k];
    const type = typeof v;
    if (type === 'string' || type === 'boolean' || v === null) continue;
    // NaN and ±Infinity are the numbers for which v - v is not 0.
    if (type === 'number' && (v as number) - (v as number) === 0) continue;
    return false;
  }
  return true;
}

/**
 * Why `value` is not plain JSON, as [path below the field, reason], or undefined. The path is
 * built only on failure, and the cycle-detection set (the objects on the current path) only
 * once a nested object is met, so a flat object is checked without allocating.
 */
function jsonProblem(value: unknown, seen: Set<object> | undefined): [string, string] | undefined {
  if (value === null) return undefined;
  const type = typeof value;
  if (type === 'string' || type === 'boolean') return undefined;
  if (type === 'number') return Number.isFinite(value) ? undefined : ['', 'must be a finite number'];
  if (type !== 'object') return ['', `is not plain JSON (got ${type})`];
  const obj = value as object;
  if (seen?.has(obj)) return ['', 'contains a cycle'];
  const isArray = Array.isArray(obj);
  if (!isArray) {
    const proto = Object.getPrototypeOf(obj);
    if (proto !== Object.prototype && proto !== null) return ['', `is not plain JSON (a ${proto?.constructor?.name ?? 'non-plain'} object)`];
  }
  let path: Set<object> | undefined;
  const inner = (v: unknown): [string, string] | undefined => {
    if (v === null || typeof v !== 'object') return jsonProblem(v, undefined);
    path ??= (seen ?? new Set<object>()).add(obj);
    return jsonProblem(v, path);
  };
  let problem: [string, string] | undefined;
  if (isArray) {
    const arr = obj as unknown[];
    for (let i = 0; i < arr.length; i++) {
      if (!(i in arr)) continue; // holes are skipped, as forEach does
      const p = inner(arr[i]);
      if (p !== undefined) {
        problem = [`[${i}]${p[0]}`, p[1]];
        break;
      }
    }
  } else {
    const rec = obj as Record<string, unknown>;
    for (const k of Object.keys(rec)) {
      const p = inner(rec[k]);
      if (p !== undefined) {
        problem = [`.${k}${p[0]}`, p[1]];
        break;
      }
    }
  }
  path?.delete(obj);
  return problem;
}
