/** Stable error codes. Tests and callers branch on `code`, never on message text. */
export type CairnErrorCode =
  | 'CAIRN_INVALID_ARGUMENT'
  | 'CAIRN_NOT_FOUND'
  | 'CAIRN_ALREADY_EXISTS'
  | 'CAIRN_LOCKED'
  | 'CAIRN_POISONED'
  | 'CAIRN_CLOSED'
  | 'CAIRN_CORRUPTION'
  | 'CAIRN_IO'
  | 'CAIRN_INTERNAL'
  /** An operation given an AbortSignal (such as `scrub`) was cancelled through it. */
  | 'CAIRN_ABORTED';

const CODES: ReadonlySet<string> = new Set<CairnErrorCode>([
  'CAIRN_INVALID_ARGUMENT',
  'CAIRN_NOT_FOUND',
  'CAIRN_ALREADY_EXISTS',
  'CAIRN_LOCKED',
  'CAIRN_POISONED',
  'CAIRN_CLOSED',
  'CAIRN_CORRUPTION',
  'CAIRN_IO',
  'CAIRN_INTERNAL',
  'CAIRN_ABORTED',
]);

export class CairnError extends Error {
  readonly code: CairnErrorCode;
  /** For CAIRN_CORRUPTION: the damaged file and the byte offset of the damage. */
  readonly file?: string;
  readonly offset?: number;

  constructor(code: CairnErrorCode, message: string, details: { file?: string; offset?: number; cause?: unknown } = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'CairnError';
    this.code = code;
    if (details.file !== undefined) this.file = details.file;
    if (details.offset !== undefined) this.offset = details.offset;
  }
}

export function invalidArgument(message: string): CairnError {
  return new CairnError('CAIRN_INVALID_ARGUMENT', message);
}

/** The native layer prefixes every message with its code (`CAIRN_X: ...`). */
export function fromNative(e: unknown): CairnError {
  if (e instanceof CairnError) return e;
  const message = e instanceof Error ? e.message : String(e);
  const m = /^(CAIRN_[A-Z_]+): ([\s\S]*)$/.exec(message);
  if (!m || !CODES.has(m[1]!)) return new CairnError('CAIRN_INTERNAL', message, { cause: e });
  const code = m[1] as CairnErrorCode;
  const text = m[2]!;
  const where = /(?:corruption|checksum mismatch) in (.+?) at offset (\d+)/.exec(text);
  return new CairnError(code, text, where ? { file: where[1]!, offset: Number(where[2]), cause: e } : { cause: e });
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
