/**
 * A node's epoch history: which epoch wrote which range of its log, as `[epoch, firstSeq]`
 * pairs in order (like PostgreSQL's timeline history). Kept in `<dir>.failover.json`, beside the
 * store (a snapshot catch-up replaces the store directory whole), written to a temporary file,
 * fsynced, renamed, and the directory fsynced: a node never acknowledges anything of an epoch
 * before that epoch is durable here. Epochs are etcd create revisions, kept as decimal strings.
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

import { CairnError } from '../errors.js';

export type History = ReadonlyArray<readonly [bigint, bigint]>;

export function historyFile(dir: string): string {
  return join(dirname(dir), `${basename(dir)}.failover.json`);
}

export interface Durable {
  history: History;
  /** The highest epoch this node has seen; it refuses anything older. */
  epoch: bigint;
  /** Set when this node found records past a fork: it stays fenced across restarts. */
  fenced?: string;
}

export function loadHistory(dir: string): Durable {
  let text: string;
  try {
    text = readFileSync(historyFile(dir), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { history: [], epoch: 0n };
    throw new CairnError('CAIRN_IO', `cannot read ${historyFile(dir)}: ${(e as Error).message}`, { cause: e });
  }
  const o = JSON.parse(text) as { history: unknown; epoch: string; fenced?: string };
  return { history: decodeHistory(o.history), epoch: BigInt(o.epoch), ...(typeof o.fenced === 'string' ? { fenced: o.fenced } : {}) };
}

export function encodeHistory(h: History): Array<[string, string]> {
  return h.map(([e, s]) => [String(e), String(s)]);
}

export function decodeHistory(v: unknown): History {
  if (!Array.isArray(v)) throw new CairnError('CAIRN_CORRUPTION', 'epoch history is not an array');
  return v.map((p) => {
    if (!Array.isArray(p) || p.length !== 2) throw new CairnError('CAIRN_CORRUPTION', 'epoch history entry is not a pair');
    return [BigInt(p[0] as string), BigInt(p[1] as string)] as const;
  });
}

/** durability: temp file fsynced, renamed over, directory fsynced. */
export function saveHistory(dir: string, d: Durable): void {
  const file = historyFile(dir);
  const tmp = `${file}.tmp`;
  const fd = openSync(tmp, 'w');
  try {
    writeSync(fd, JSON.stringify({ history: encodeHistory(d.history), epoch: String(d.epoch), ...(d.fenced ? { fenced: d.fenced } : {}) }));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  const dfd = openSync(dirname(file), 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/** The entries that describe records up to `last`. */
export function trimHistory(h: History, last: bigint): History {
  return h.filter(([, first]) => first <= last);
}

/** The epoch that wrote `seq` according to `h` (0 before the first entry). */
export function epochAt(h: History, seq: bigint): bigint {
  let e = 0n;
  for (const [epoch, first] of h) if (first <= seq) e = epoch;
  return e;
}

/**
 * The first seq at most `last` where `mine` and `theirs` disagree on the epoch that wrote it,
 * or undefined when this node's log up to `last` is a prefix of the log `theirs` describes.
 */
export function firstDivergence(mine: History, theirs: History, last: bigint): bigint | undefined {
  const points = new Set<bigint>([1n]);
  for (const [, s] of mine) points.add(s);
  for (const [, s] of theirs) points.add(s);
  const sorted = [...points].filter((s) => s >= 1n && s <= last).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (const s of sorted) if (epochAt(mine, s) !== epochAt(theirs, s)) return s;
  return undefined;
}
