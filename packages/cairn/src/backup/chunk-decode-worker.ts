/**
 * Piscina worker of the chunk decoder pool (compiled to dist/backup/chunk-decode-worker.js):
 * decodes one chunk and moves its raw bytes back without a copy.
 */
import { Piscina } from 'piscina';

import { transferableError } from '../errors.js';
import { type DecodeTask, decodeTask, ownBuffer } from './chunk-decoder.js';

export default function run(task: DecodeTask): unknown {
  try {
    const r = decodeTask(task);
    if (!('raw' in r)) return r;
    return Piscina.move(ownBuffer(r.raw));
  } catch (e) {
    throw transferableError(e);
  }
}
