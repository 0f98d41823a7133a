/**
 * The filter language of `query`, `count`, `scan` and `deleteWhere`. TypeScript only checks
 * that a filter is a plain JSON object (so `undefined`, NaN or a Date never vanish silently in
 * `JSON.stringify`); the native core validates everything else and rejects a bad filter with
 * `CAIRN_INVALID_ARGUMENT` naming the path and the operator. It crosses as JSON text: the check
 * walks the object anyway, and serialising a small filter costs microseconds.
 */
import { checkJson, checkPlainObject } from './validate.js';

export type FilterScalar = string | number | boolean | null;

export interface FieldOperators {
  $eq?: FilterScalar;
  $ne?: FilterScalar;
  $gt?: number | string;
  $gte?: number | string;
  $lt?: number | string;
  $lte?: number | string;
  $in?: FilterScalar[];
  $nin?: FilterScalar[];
  $exists?: boolean;
}

/** `{ 'meta.year': { $gte: 2020 }, lang: 'en', $or: [...], $not: {...} }`; see README "Filters". */
export type Filter = {
  $and?: Filter[];
  $or?: Filter[];
  $not?: Filter;
} & { [path: string]: FilterScalar | FieldOperators | Filter[] | Filter | undefined };

/** The filter as JSON text for the binding. */
export function encodeFilter(field: string, filter: unknown): string {
  checkPlainObject(field, filter);
  checkJson(field, filter);
  return JSON.stringify(filter);
}
