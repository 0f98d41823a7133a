import { invalidArgument } from './errors.js';

export const MAX_NAME_BYTES = 256;
export const MAX_DIM = 65_536;

/** Names of collections and ids: non-empty, at most 256 UTF-8 bytes, never path-like. */
export function checkName(field: string, value: unknown): string {
  if (typeof value !== 'string') throw invalidArgument(`${field} must be a string`);
  if (value.length === 0) throw invalidArgument(`${field} must not be empty`);
  if (Buffer.byteLength(value, 'utf8') > MAX_NAME_BYTES) throw invalidArgument(`${field} must be at most ${MAX_NAME_BYTES} bytes`);
  if (value === '.' || value === '..' || /[/\\\0]/.test(value)) {
    throw invalidArgument(`${field} must not contain '/', '\\' or NUL, nor be '.' or '..'`);
  }
  if (value.isWellFormed && !value.isWellFormed()) throw invalidArgument(`${field} must be well-formed Unicode`);
  return value;
}

/** Reject keys the caller did not mean: a typo must not silently fall back to a default. */
export function checkKnownKeys(field: string, value: object, known: readonly string[]): void {
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) throw invalidArgument(`${field}.${key} is not a known option (expected one of: ${known.join(', ')})`);
  }
}

export function checkPlainObject(field: string, value: unknown): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw invalidArgument(`${field} must be an object`);
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) throw invalidArgument(`${field} must be a plain object`);
  return value as Record<string, unknown>;
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

/** Plain JSON only: objects with the plain prototype, arrays, strings, finite numbers, booleans, null. */
export function checkJson(field: string, value: unknown, seen: Set<object> = new Set()): void {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw invalidArgument(`${field} must be a finite number`);
    return;
  }
  if (typeof value !== 'object') throw invalidArgument(`${field} is not plain JSON (got ${typeof value})`);
  if (seen.has(value)) throw invalidArgument(`${field} contains a cycle`);
  seen.add(value);
  if (Array.isArray(value)) {
    value.forEach((v, i) => checkJson(`${field}[${i}]`, v, seen));
  } else {
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) throw invalidArgument(`${field} is not plain JSON (a ${proto?.constructor?.name ?? 'non-plain'} object)`);
    for (const [k, v] of Object.entries(value)) checkJson(`${field}.${k}`, v, seen);
  }
  seen.delete(value);
}
