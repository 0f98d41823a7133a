/** How a failed backup step is reported: as a CairnError (CAIRN_IO for a system error). */
import { CairnError } from '../errors.js';

export function errorOf(e: unknown): CairnError {
  if (e instanceof CairnError) return e;
  const err = e as NodeJS.ErrnoException;
  return new CairnError(err?.code ? 'CAIRN_IO' : 'CAIRN_INTERNAL', err instanceof Error ? err.message : String(e), { cause: e });
}
