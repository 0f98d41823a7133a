// Piscina worker of bench/scrub.js's peer rows: the whole-file xxh3 of one file with
// @node-rs/xxhash's streaming hasher, reading into one reused buffer.
import { closeSync, openSync, readSync } from 'node:fs';

import { xxh3 } from '@node-rs/xxhash';

let buf = Buffer.alloc(0);

export default function hashFile({ path, chunk }) {
  if (buf.length !== chunk) buf = Buffer.allocUnsafe(chunk);
  const h = xxh3.Xxh3.withSeed();
  const fd = openSync(path, 'r');
  try {
    for (let n = readSync(fd, buf, 0, buf.length, null); n > 0; n = readSync(fd, buf, 0, buf.length, null))
      h.update(n === buf.length ? buf : buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return h.digest().toString(16);
}
