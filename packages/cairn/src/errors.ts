/** Stable error codes. Tests and callers branch on `code`, never on message text. */
export type CairnErrorCode =
  | 'CAIRN_INVALID_ARGUMENT'
  | 'CAIRN_NOT_FOUND'
  /** `open()` of a path that exists but is not a store (a file, or a directory of other files). */
  | 'CAIRN_NOT_A_STORE'
  | 'CAIRN_ALREADY_EXISTS'
  | 'CAIRN_LOCKED'
  | 'CAIRN_POISONED'
  | 'CAIRN_CLOSED'
  | 'CAIRN_CORRUPTION'
  | 'CAIRN_IO'
  | 'CAIRN_INTERNAL'
  /** An operation given an AbortSignal (such as `scrub`) was cancelled through it. */
  | 'CAIRN_ABORTED'
  /** A write on a replica; the message names the primary's address. */
  | 'CAIRN_NOT_PRIMARY'
  /** A write concern was not met in time; `seq` and `durableOn` say what is known. Never undone. */
  | 'CAIRN_REPLICATION_TIMEOUT'
  /** A replica needs records that WAL archive retention removed. */
  | 'CAIRN_WAL_PRUNED'
  /** Replicated records that do not continue the replica's log (a gap or a repeat). */
  | 'CAIRN_SEQUENCE_GAP'
  /** A replication peer failed authentication or broke the protocol (docs/format.md, "Replication protocol"). */
  | 'CAIRN_REPLICATION_PROTOCOL'
  /** The replication connection is down. */
  | 'CAIRN_DISCONNECTED'
  /** A stale leader or epoch: this node may not acknowledge or apply it (failover). */
  | 'CAIRN_FENCED'
  /** Something the operation needs is not installed or not built; the message names the fix. */
  | 'CAIRN_UNAVAILABLE'
  /** A transaction's commit found an id it read or wrote written after its snapshot; `collection`
   *  and `id` name it. Nothing was written. */
  | 'CAIRN_CONFLICT'
  /** A transaction function ran past `timeoutMs`; nothing was written. */
  | 'CAIRN_TIMEOUT'
  /** A transaction (or one of its collections) was used after it committed, aborted or timed out. */
  | 'CAIRN_TRANSACTION_ENDED'
  /** `db.transaction` was called inside a transaction function. */
  | 'CAIRN_NESTED_TRANSACTION'
  /** A write through a read view. */
  | 'CAIRN_READ_ONLY'
  /** A read through a read view after its release (or its expiry at `maxViewAgeMs`). */
  | 'CAIRN_VIEW_RELEASED';

const CODES: ReadonlySet<string> = new Set<CairnErrorCode>([
  'CAIRN_INVALID_ARGUMENT',
  'CAIRN_NOT_FOUND',
  'CAIRN_NOT_A_STORE',
  'CAIRN_ALREADY_EXISTS',
  'CAIRN_LOCKED',
  'CAIRN_POISONED',
  'CAIRN_CLOSED',
  'CAIRN_CORRUPTION',
  'CAIRN_IO',
  'CAIRN_INTERNAL',
  'CAIRN_ABORTED',
  'CAIRN_NOT_PRIMARY',
  'CAIRN_REPLICATION_TIMEOUT',
  'CAIRN_WAL_PRUNED',
  'CAIRN_SEQUENCE_GAP',
  'CAIRN_REPLICATION_PROTOCOL',
  'CAIRN_DISCONNECTED',
  'CAIRN_FENCED',
  'CAIRN_UNAVAILABLE',
  'CAIRN_CONFLICT',
  'CAIRN_TIMEOUT',
  'CAIRN_TRANSACTION_ENDED',
  'CAIRN_NESTED_TRANSACTION',
  'CAIRN_READ_ONLY',
  'CAIRN_VIEW_RELEASED',
]);

/** Whether `code` is one of the stable codes (for codes that arrive over the network). */
export function isCairnErrorCode(code: unknown): code is CairnErrorCode {
  return typeof code === 'string' && CODES.has(code);
}

export class CairnError extends Error {
  readonly code: CairnErrorCode;
  /** For CAIRN_CORRUPTION: the damaged file and the byte offset of the damage (CAIRN_IO: the file). */
  readonly file?: string;
  readonly offset?: number;
  /** The collection, and the record id, the failed call named. */
  readonly collection?: string;
  readonly id?: string;
  /** For CAIRN_CONFLICT: the seq of the write that conflicted (CAIRN_REPLICATION_TIMEOUT: the write's seq). */
  readonly seq?: bigint;

  constructor(
    code: CairnErrorCode,
    message: string,
    details: { file?: string; offset?: number; collection?: string; id?: string; seq?: bigint; cause?: unknown } = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'CairnError';
    this.code = code;
    if (details.file !== undefined) this.file = details.file;
    if (details.offset !== undefined) this.offset = details.offset;
    if (details.collection !== undefined) this.collection = details.collection;
    if (details.id !== undefined) this.id = details.id;
    if (details.seq !== undefined) this.seq = details.seq;
  }
}

export function invalidArgument(message: string): CairnError {
  return new CairnError('CAIRN_INVALID_ARGUMENT', message);
}

/** The fields the native layer sets on its errors (crates/cairn-node/src/errors.rs). */
export interface NativeErrorData {
  message: string;
  code?: unknown;
  file?: unknown;
  offset?: unknown;
  collection?: unknown;
  id?: unknown;
  seq?: unknown;
}

/**
 * A native error as plain data. A worker thread throws this instead of the Error: the structured
 * clone that carries a failure to the main thread keeps an Error's message but drops its own
 * properties, `code` among them.
 */
export function transferableError(e: unknown): unknown {
  if (!(e instanceof Error)) return e;
  const f = e as Error & Omit<NativeErrorData, 'message'>;
  return { message: e.message, code: f.code, file: f.file, offset: f.offset, collection: f.collection, id: f.id, seq: f.seq } satisfies NativeErrorData;
}

/** A native error (or its `transferableError` data) as a CairnError, from its `code`, `file`,
 *  `offset`, `collection` and `id`. */
export function fromNative(e: unknown): CairnError {
  if (e instanceof CairnError) return e;
  if (e === null || typeof e !== 'object' || typeof (e as { message?: unknown }).message !== 'string') {
    return new CairnError('CAIRN_INTERNAL', String(e), { cause: e });
  }
  const f = e as NativeErrorData;
  if (typeof f.code !== 'string' || !CODES.has(f.code)) return new CairnError('CAIRN_INTERNAL', f.message, { cause: e });
  return new CairnError(f.code as CairnErrorCode, f.message, {
    ...(typeof f.file === 'string' ? { file: f.file } : {}),
    ...(typeof f.offset === 'number' ? { offset: f.offset } : {}),
    ...(typeof f.collection === 'string' ? { collection: f.collection } : {}),
    ...(typeof f.id === 'string' ? { id: f.id } : {}),
    ...(typeof f.seq === 'bigint' ? { seq: f.seq } : {}),
    cause: e,
  });
}

/** Run a native call and rethrow its failure as a CairnError. */
export async function native<T>(f: () => T | Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw fromNative(e);
  }
}

export function nativeSync<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw fromNative(e);
  }
}
