/**
 * Scrub: verify every file the store depends on, in a piscina pool of worker threads that run
 * the native verifier (crates/cairn-core/src/scrub.rs), throttled and cancellable; then, with
 * `repair`, quarantine each damaged file and replace it from a `RepairSource`.
 *
 * Files checked: MANIFEST; each checkpoint and graph file the manifest names (record by record
 * and by whole-file size and xxh3); sealed WAL segments and the WAL archive (record by record,
 * and for continuity of sequence numbers across segments); each snapshot's SNAPSHOT and every
 * file it lists (size and xxh3, plus the framing of its kind). The active WAL segment of an
 * open store is being written and is skipped. Hard links (snapshots link their files) are
 * read once and reported under every name. Tasks go to the pool largest first; when whole
 * files would leave the workers unbalanced, the largest files with a recorded size and xxh3 are
 * hashed in ranges by several tasks, whose results the native core folds into the whole-file
 * xxh3.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

import type { Piscina } from 'piscina';

import { CairnError, fromNative } from '../errors.js';
import { LAYOUT } from '../layout.js';
import { lazyRequire } from '../lazy-require.js';
import { type NativeFileCheck, type NativeManifest, type NativeSnapshotInfo, type NativeStore, nativeModule } from '../native.js';
import { checkKnownKeys, checkPlainObject, checkPositiveInt } from '../validate.js';
import { writeLastScrub } from './result.js';
import {
  type DamagedFile,
  defaultSources,
  type Expected,
  type FileArea,
  type FileCheck,
  type FileKindName,
  type QuarantineNote,
  type RepairContext,
  type RepairSource,
} from './sources.js';
import type { ScrubTask } from './worker.js';

export type { DamagedFile, QuarantineNote, RepairAttempt, RepairContext, RepairSource } from './sources.js';
export { CopySource, EngineSource } from './sources.js';

export type DamageKind = 'checksum' | 'truncated' | 'missing' | 'unreadable';

export interface ScrubOptions {
  /** Worker threads verifying files, or ranges of large files, in parallel (default 2); scrubs
   *  running at the same time with the same concurrency share them. 0 verifies on the calling
   *  thread, one file at a time, blocking the event loop: for benchmarks and tools only. */
  concurrency?: number;
  /** Aggregate read rate of all workers, in MB/s (1 MB = 1,000,000 bytes). Default: unthrottled. */
  throttleMBps?: number;
  /** Quarantine damaged files and replace them from a repair source (default false: report only). */
  repair?: boolean;
  /** Hash every checkpoint record even when the file's size and xxh3 match the manifest (which
   *  already proves it is the file the engine wrote). Default false: records are checked
   *  one by one only to locate damage, or when no checksum is recorded. */
  deep?: boolean;
  /** Cancels the scrub: it stops within one read chunk and rejects with `CAIRN_ABORTED`. */
  signal?: AbortSignal;
  /** Called about every 200 ms while files are read, and once at the end of reading. */
  onProgress?: (progress: ScrubProgress) => void;
  /** Where repairs come from, tried in order. Default: `[new CopySource(), new EngineSource()]`
   *  (an identical copy in a snapshot, then a rebuild from the open store's memory). */
  sources?: RepairSource[];
}

export interface ScrubProgress {
  bytes: number;
  totalBytes: number;
  files: number;
  totalFiles: number;
}

export interface ScrubFinding {
  /** Relative to the store directory, with '/' separators. */
  file: string;
  offset: number;
  kind: DamageKind;
  /** The collection a checkpoint or graph file belongs to. */
  collection?: string;
  /** The id of a damaged checkpoint record, when its id field is still readable. */
  id?: string;
  detail: string;
}

export interface ScrubRepair {
  file: string;
  /** `engine` (rebuilt from the open store's memory) or the file it was copied from. */
  from: string;
  /** Where the damaged bytes were kept, under `quarantine/`. */
  quarantined?: string;
}

export interface ScrubUnrepaired {
  file: string;
  reason: string;
  /** A hard link to the damaged bytes under `quarantine/`, with a note; the file itself stays
   *  in place (skip-corrupt can still salvage its intact records). */
  quarantined?: string;
}

export interface ScrubReport {
  /** Names checked (a file hard-linked under several names counts once per name). */
  files: number;
  /** Bytes read and verified. */
  bytes: number;
  durationMs: number;
  corrupt: ScrubFinding[];
  repaired: ScrubRepair[];
  unrepaired: ScrubUnrepaired[];
  /** Records known to be damaged beyond repair (found by an earlier open, kept in the manifest):
   *  reads of them fail with `CAIRN_CORRUPTION` until they are written or deleted again. */
  unreadableRecords: Array<{ collection: string; id: string; file: string; offset: number; reason: string }>;
  /** Damaged records repaired from another node (a replicated store's `replicas` source). */
  repairedRecords?: Array<{ collection: string; id: string; from: string[] }>;
  /** Damaged records no source could repair, and why. */
  unrepairedRecords?: Array<{ collection: string; id: string; error: string }>;
}

interface Target {
  rel: string;
  kind: FileKindName;
  area: FileArea;
  expected?: Expected;
  collection?: string;
}

const SCRUB_KEYS = ['concurrency', 'throttleMBps', 'repair', 'deep', 'signal', 'onProgress', 'sources'] as const;
/** A WAL segment's name: its first sequence number in 20 digits (crates/cairn-core/src/layout.rs). */
const WAL_NAME = new RegExp(`^(\\d{20})${LAYOUT.walExt.replace('.', '\\.')}$`);
const AREA_ORDER: FileArea[] = ['manifest', 'data', 'archive', 'wal', 'snapshot'];

export interface ParsedScrubOptions {
  concurrency: number;
  /** Bytes per range task when a file is hashed by ranges (tests set it small); default `RANGE_BYTES`. */
  rangeBytes?: number;
  bytesPerSec: number | null;
  repair: boolean;
  deep: boolean;
  signal?: AbortSignal;
  onProgress?: (p: ScrubProgress) => void;
  sources?: RepairSource[];
}

/** Validate scrub options, naming the field (`prefix` is how the caller spells the object). */
export function parseScrubOptions(options: unknown, prefix = 'options'): ParsedScrubOptions {
  const o = checkPlainObject(prefix, options);
  checkKnownKeys(prefix, o, SCRUB_KEYS);
  let concurrency = 2;
  if (o.concurrency !== undefined) {
    if (o.concurrency !== 0) concurrency = checkPositiveInt(`${prefix}.concurrency`, o.concurrency, 64);
    else concurrency = 0;
  }
  let bytesPerSec: number | null = null;
  if (o.throttleMBps !== undefined) {
    const t = o.throttleMBps;
    if (typeof t !== 'number' || !Number.isFinite(t) || t <= 0)
      throw new CairnError('CAIRN_INVALID_ARGUMENT', `${prefix}.throttleMBps must be a positive number`);
    bytesPerSec = t * 1e6;
  }
  if (o.repair !== undefined && typeof o.repair !== 'boolean') throw new CairnError('CAIRN_INVALID_ARGUMENT', `${prefix}.repair must be a boolean`);
  if (o.deep !== undefined && typeof o.deep !== 'boolean') throw new CairnError('CAIRN_INVALID_ARGUMENT', `${prefix}.deep must be a boolean`);
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw new CairnError('CAIRN_INVALID_ARGUMENT', `${prefix}.signal must be an AbortSignal`);
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function')
    throw new CairnError('CAIRN_INVALID_ARGUMENT', `${prefix}.onProgress must be a function`);
  if (
    o.sources !== undefined &&
    (!Array.isArray(o.sources) || !o.sources.every((s) => s !== null && typeof s === 'object' && typeof (s as RepairSource).repair === 'function'))
  ) {
    throw new CairnError('CAIRN_INVALID_ARGUMENT', `${prefix}.sources must be an array of repair sources (objects with a repair method)`);
  }
  return {
    concurrency,
    bytesPerSec,
    repair: o.repair === true,
    deep: o.deep === true,
    ...(o.signal ? { signal: o.signal as AbortSignal } : {}),
    ...(o.onProgress ? { onProgress: o.onProgress as (p: ScrubProgress) => void } : {}),
    ...(o.sources ? { sources: o.sources as RepairSource[] } : {}),
  };
}

function list(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

function manifestTargets(m: NativeManifest): Target[] {
  const out: Target[] = [];
  for (const c of m.collections) {
    for (const s of c.segments)
      out.push({ rel: `${LAYOUT.data}/${s.file}`, kind: 'segment', area: 'data', expected: { bytes: s.bytes, xxh3: s.xxh3 }, collection: c.name });
    if (c.index)
      out.push({
        rel: `${LAYOUT.data}/${c.index.file}`,
        kind: 'blob',
        area: 'data',
        expected: { bytes: c.index.bytes, xxh3: c.index.xxh3 },
        collection: c.name,
      });
    if (c.payloadIndex)
      out.push({
        rel: `${LAYOUT.data}/${c.payloadIndex.file}`,
        kind: 'payload-index',
        area: 'data',
        expected: { bytes: c.payloadIndex.bytes, xxh3: c.payloadIndex.xxh3 },
        collection: c.name,
      });
  }
  return out;
}

function kindOfSnapshotFile(path: string): FileKindName {
  if (path === LAYOUT.manifest) return 'manifest';
  if (path.endsWith(LAYOUT.dataExt)) return 'segment';
  if (path.endsWith(LAYOUT.walExt)) return 'wal';
  return 'blob';
}

/** Kinds whose intact files are proven by their size and whole-file xxh3 alone: ranges of them
 *  can be hashed by separate tasks. */
const SPLITTABLE: ReadonlySet<string> = new Set(['segment', 'blob']);
/** Bytes per range task: small enough to balance the workers, large enough that a task's fixed
 *  cost (about 0.3 ms here) does not show. */
const RANGE_BYTES = 32 << 20;

/** When `workers` take `tasks` (sizes in bytes) largest first, each the next free one: when the
 *  last worker finishes. */
export function makespan(tasks: number[], workers: number): number {
  const load: number[] = new Array<number>(Math.max(1, workers)).fill(0);
  for (const t of [...tasks].sort((a, b) => b - a)) {
    let min = 0;
    for (let i = 1; i < load.length; i++) if (load[i]! < load[min]!) min = i;
    load[min]! += t;
  }
  return Math.max(...load);
}

/**
 * Which files to hash by ranges, given each file's size and, for a file that can be split, its
 * range sizes. Ranges cost about a tenth more CPU per byte than a whole-file hash (each 1 KiB
 * block's terms are stored and folded later), so a file is split only while whole files,
 * handed out largest first, would leave one worker finishing more than a range after the
 * ideal: then the largest splittable file is split, and so on.
 */
export function planSplits(files: Array<{ bytes: number; ranges: number[] | null }>, workers: number, rangeBytes: number): Set<number> {
  const split = new Set<number>();
  if (workers < 2) return split;
  const ideal = files.reduce((s, f) => s + f.bytes, 0) / workers;
  const bySize = files
    .map((f, i) => ({ f, i }))
    .filter(({ f }) => f.ranges !== null && f.ranges.length > 1)
    .sort((a, b) => b.f.bytes - a.f.bytes);
  for (const { i } of bySize) {
    const tasks = files.flatMap((f, j) => (split.has(j) ? f.ranges! : [f.bytes]));
    if (makespan(tasks, workers) <= ideal + rangeBytes) break;
    split.add(i);
  }
  return split;
}

/** Idle pool threads exit after this long; a scrub within it skips their start-up. */
const POOL_IDLE_MS = 10_000;
const pools = new Map<number, Piscina>();
const piscina = lazyRequire<typeof import('piscina')>('piscina');

/**
 * The worker pool of a given size, shared by every scrub of this process (concurrent scrubs
 * share its threads). Starting two threads costs about 150 ms of CPU here, as much as reading
 * 1 GB, so a pool outlives one scrub. Piscina unrefs idle threads: they never keep the
 * process alive.
 */
function scrubPool(concurrency: number): Piscina {
  let pool = pools.get(concurrency);
  if (!pool) {
    // stricterFIFO: tasks run in the order given (by default piscina requeues a task it could not
    // hand out at the tail), so a file's ranges complete about in order and fold as they come.
    pool = new (piscina().Piscina)({
      filename: new URL('./worker.js', import.meta.url).href,
      minThreads: 0,
      maxThreads: concurrency,
      idleTimeout: POOL_IDLE_MS,
      stricterFIFO: true,
    });
    pools.set(concurrency, pool);
  }
  return pool;
}

/** Runs file checks on worker threads (or inline), reading each inode once. */
class Verifier {
  readonly #pool: Piscina | null;
  readonly #scan: number;
  readonly #dir: string;
  readonly #deep: boolean;
  readonly #rangeBytes: number;
  readonly #workers: number;

  constructor(dir: string, scan: number, opts: ParsedScrubOptions) {
    this.#deep = opts.deep;
    this.#dir = dir;
    this.#scan = scan;
    this.#rangeBytes = opts.rangeBytes ?? RANGE_BYTES;
    this.#workers = opts.concurrency;
    this.#pool = opts.concurrency === 0 ? null : scrubPool(opts.concurrency);
  }

  async verify(t: Target): Promise<FileCheck> {
    return (await this.verifyAll([t], () => {})).get(t.rel)!;
  }

  /**
   * Verify every target; names of one inode (hard links) with the same expectations share one
   * read. Pool tasks are queued first and submitted largest first, so that the pool's last
   * tasks are small and the workers finish together.
   */
  async verifyAll(targets: Target[], onDone: (n: number) => void): Promise<Map<string, FileCheck>> {
    const groups = new Map<string, { targets: Target[]; size: number | null }>();
    for (const t of targets) {
      let key = `name:${t.rel}`;
      let size: number | null = null;
      try {
        const st = statSync(join(this.#dir, t.rel), { bigint: true });
        key = `${st.dev}:${st.ino}:${t.kind}:${t.expected?.bytes ?? ''}:${t.expected?.xxh3 ?? ''}`;
        size = Number(st.size);
      } catch {
        // Missing: verified on its own, and reported so.
      }
      const g = groups.get(key);
      if (g) g.targets.push(t);
      else groups.set(key, { targets: [t], size });
    }
    const out = new Map<string, FileCheck>();
    const queued: Array<{ bytes: number; submit: () => void }> = [];
    let submitted = false;
    const pool = this.#pool;
    const run = (bytes: number, task: ScrubTask): Promise<unknown> => {
      if (!pool) throw new Error('no pool');
      if (submitted) return pool.run(task);
      return new Promise((resolve, reject) => queued.push({ bytes, submit: () => pool.run(task).then(resolve, reject) }));
    };
    const list = [...groups.values()];
    const rangeBytes = this.#rangeBytes;
    const cuts = list.map((g) => (this.#splittable(g.targets[0]!, g.size) ? nativeModule.scanRanges(g.size!, rangeBytes) : null));
    const pieces = (c: number[]) => c.slice(1).map((end, i) => end - c[i]!);
    const split = pool
      ? planSplits(
          list.map((g, i) => ({ bytes: g.size ?? 0, ranges: cuts[i] ? pieces(cuts[i]!) : null })),
          this.#workers,
          rangeBytes,
        )
      : new Set<number>();
    const check = async (g: { targets: Target[]; size: number | null }, i: number) => {
      const [first, ...others] = g.targets;
      const c = await this.#check(first!, g.size, run, split.has(i) ? cuts[i]! : null);
      out.set(first!.rel, c);
      // One read stands for every name of the inode only when it found nothing: a name may have
      // gone since the plan (a checkpoint sweeps a live file that a snapshot still links), so
      // after a finding each other name is checked on its own.
      for (const t of others) out.set(t.rel, c.findings.length === 0 ? { ...c, read: 0, findings: [] } : await this.#check(t, this.#size(t), run, null));
      onDone(g.targets.length);
    };
    if (pool) {
      // Each check queues its tasks before its first await.
      const all = Promise.all(list.map(check));
      submitted = true;
      queued.sort((a, b) => b.bytes - a.bytes);
      for (const q of queued) q.submit();
      await all;
    } else for (const [i, g] of list.entries()) await check(g, i);
    return out;
  }

  #kind(t: Target): string {
    return t.kind === 'segment' && this.#deep ? 'segment-deep' : t.kind;
  }

  #splittable(t: Target, size: number | null): boolean {
    return this.#pool !== null && t.expected !== undefined && SPLITTABLE.has(this.#kind(t)) && size === t.expected.bytes;
  }

  #size(t: Target): number | null {
    try {
      return statSync(join(this.#dir, t.rel)).size;
    } catch {
      return null;
    }
  }

  /** Verify one file: by the ranges `cuts` when given, and whole when they do not prove it intact. */
  async #check(t: Target, size: number | null, run: (bytes: number, task: ScrubTask) => Promise<unknown>, cuts: number[] | null): Promise<FileCheck> {
    const kind = this.#kind(t);
    const path = join(this.#dir, t.rel);
    const exp = t.expected;
    if (cuts && exp) {
      const split = nativeModule.scanSplitOpen(this.#scan, exp.bytes);
      const ranges: Promise<unknown>[] = [];
      for (let i = 0; i + 1 < cuts.length; i++) {
        ranges.push(run(cuts[i + 1]! - cuts[i]!, { op: 'range', scan: this.#scan, split, path, start: cuts[i]!, end: cuts[i + 1]! }));
      }
      await Promise.all(ranges);
      const proven = nativeModule.scanSplitFinish(this.#scan, split, path, kind, exp.bytes, exp.xxh3);
      if (proven !== null) return proven;
      // Not proven intact: the whole-file check says what is wrong (or that nothing is: the
      // file was replaced by an identical one meanwhile).
    }
    const task: ScrubTask = { op: 'file', scan: this.#scan, path, kind, bytes: exp?.bytes ?? null, xxh3: exp?.xxh3 ?? null };
    return this.#pool ? ((await run(size ?? 0, task)) as NativeFileCheck) : nativeModule.verifyFile(task.scan, task.path, task.kind, task.bytes, task.xxh3);
  }
}

function aborted(): CairnError {
  return new CairnError('CAIRN_ABORTED', 'scrub was cancelled');
}

export interface ScrubContext {
  dir: string;
  /** The open store's engine; absent for a store that is not open in this process. */
  native?: NativeStore;
  /** Another process has the store open: its last WAL segment is being written, and files
   *  may be replaced meanwhile (checked as for an open store). */
  writerElsewhere?: boolean;
  sources?: RepairSource[];
}

/** The files to check, as of now. */
function planFiles(
  ctx: ScrubContext,
  snapshotManifests: Map<string, NativeSnapshotInfo | null>,
  manifest: NativeManifest | null,
): { targets: Target[]; activeWal: bigint | null; walSums: Map<string, Expected> } {
  const { dir } = ctx;
  const targets: Target[] = [{ rel: LAYOUT.manifest, kind: 'manifest', area: 'manifest' }];
  // Its second copy (docs/format.md, "Manifest"), which every open writes: a missing one is damage.
  targets.push({ rel: LAYOUT.manifestCopy, kind: 'manifest', area: 'manifest' });
  if (manifest) targets.push(...manifestTargets(manifest));
  else {
    // No trustworthy manifest: check the checkpoint files that are there by their own framing.
    for (const n of list(join(dir, LAYOUT.data))) if (n.endsWith(LAYOUT.dataExt)) targets.push({ rel: `${LAYOUT.data}/${n}`, kind: 'segment', area: 'data' });
  }
  // Archived segments have no recorded checksum in the store; a snapshot that links one has.
  const walSums = new Map<string, Expected>();
  for (const snap of snapshotManifests.values()) {
    for (const f of snap?.files ?? [])
      if (f.path.startsWith(`${LAYOUT.wal}/`)) walSums.set(f.path.slice(LAYOUT.wal.length + 1), { bytes: f.bytes, xxh3: f.xxh3 });
  }
  const wal = list(join(dir, LAYOUT.wal)).filter((n) => WAL_NAME.test(n));
  let activeWal: bigint | null = null;
  wal.forEach((n, i) => {
    const last = i === wal.length - 1;
    if (last && (ctx.native || ctx.writerElsewhere)) activeWal = walSeq(n);
    else targets.push({ rel: `${LAYOUT.wal}/${n}`, kind: last ? 'wal-tail' : 'wal', area: 'wal' });
  });
  for (const n of list(join(dir, LAYOUT.archive))) {
    if (!WAL_NAME.test(n)) continue;
    const exp = walSums.get(n);
    targets.push({ rel: `${LAYOUT.archive}/${n}`, kind: 'wal', area: 'archive', ...(exp ? { expected: exp } : {}) });
  }
  for (const [id, snap] of snapshotManifests) {
    for (const f of snap?.files ?? []) {
      targets.push({
        rel: `${LAYOUT.snapshots}/${id}/${f.path}`,
        kind: kindOfSnapshotFile(f.path),
        area: 'snapshot',
        expected: { bytes: f.bytes, xxh3: f.xxh3 },
      });
    }
  }
  return { targets, activeWal, walSums };
}

/** The first sequence number of the WAL segment `rel` names. */
function walSeq(rel: string): bigint {
  return BigInt(WAL_NAME.exec(rel.split('/').pop()!)![1]!);
}

/**
 * Sequence numbers run on from one sealed segment to the next. A gap means a segment is gone
 * (reported as missing under the name it must have had) or one lost records at its end.
 */
function checkContinuity(dir: string, targets: Target[], checks: Map<string, FileCheck>, activeWal: bigint | null, extra: Map<string, FileCheck>): void {
  const finding = (kind: 'missing' | 'checksum', offset: number, detail: string): FileCheck => ({
    bytes: 0,
    read: 0,
    xxh3: null,
    firstSeq: null,
    lastSeq: null,
    end: null,
    records: 0,
    cancelled: false,
    findings: [{ offset, kind, detail }],
  });
  const segs = targets
    .filter((t) => t.area === 'wal' || t.area === 'archive')
    .map((t) => ({ t, seq: walSeq(t.rel), c: checks.get(t.rel) }))
    .filter((s): s is { t: Target; seq: bigint; c: FileCheck } => s.c !== undefined)
    .sort((a, b) => (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0));
  const next = (i: number) => segs[i + 1]?.seq ?? activeWal;
  segs.forEach((a, i) => {
    const following = next(i);
    if (following === null || a.c.findings.length > 0 || a.c.firstSeq === null) return;
    const last = a.c.lastSeq ?? a.c.firstSeq - 1n;
    if (last + 1n >= following) return;
    const lost = `WAL records ${last + 1n}..${following - 1n} are missing`;
    // A sealed segment is trimmed to its last record: zeros after it here replaced records.
    if (a.c.end != null && a.c.end < a.c.bytes) {
      const c = checks.get(a.t.rel)!;
      c.findings.push({ offset: a.c.end, kind: 'checksum', detail: `${lost}: zeroed bytes follow the last record` });
      return;
    }
    const name = `${String(last + 1n).padStart(20, '0')}${LAYOUT.walExt}`;
    if (existsSync(join(dir, LAYOUT.archive, name)) || existsSync(join(dir, LAYOUT.wal, name))) return;
    const rel = `${a.t.area === 'archive' ? LAYOUT.archive : LAYOUT.wal}/${name}`;
    extra.set(rel, finding('missing', 0, `${lost}: no segment starts at ${last + 1n} (or ${a.t.rel} lost records at its end)`));
  });
}

/**
 * Run one scrub. With `ctx.native` the store is open in this process: the engine's manifest
 * names the live files, and findings on files that a concurrent checkpoint replaced, archived
 * or pruned meanwhile are dropped (they are not damage).
 */
export async function runScrub(ctx: ScrubContext, opts: ParsedScrubOptions): Promise<ScrubReport> {
  const started = performance.now();
  const { dir } = ctx;
  if (opts.signal?.aborted) throw aborted();
  const scan = nativeModule.scanOpen(opts.bytesPerSec);
  const onAbort = () => nativeModule.scanCancel(scan);
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const verifier = new Verifier(dir, scan, opts);
  let progressTimer: NodeJS.Timeout | undefined;
  try {
    // Phase 1: the manifests, which say what the other files must hold.
    const snapIds = list(join(dir, LAYOUT.snapshots)).filter((n) => !n.endsWith(LAYOUT.tmpSuffix));
    const snapshotManifestRel = (id: string) => `${LAYOUT.snapshots}/${id}/${LAYOUT.snapshotManifest}`;
    const firstTargets: Target[] = snapIds.map((id) => ({ rel: snapshotManifestRel(id), kind: 'snapshot-manifest', area: 'snapshot' }));
    const firstChecks = await verifier.verifyAll(firstTargets, () => {});
    const snapshotManifests = new Map<string, NativeSnapshotInfo | null>();
    for (const id of snapIds) {
      const c = firstChecks.get(snapshotManifestRel(id));
      snapshotManifests.set(id, c && c.findings.length === 0 && !c.cancelled ? nativeModule.readSnapshotManifest(join(dir, LAYOUT.snapshots, id)) : null);
    }
    let manifest: NativeManifest | null = null;
    if (ctx.native) manifest = ctx.native.manifest();
    else {
      const c = await verifier.verify({ rel: LAYOUT.manifest, kind: 'manifest', area: 'manifest' });
      if (c.findings.length === 0 && !c.cancelled) manifest = nativeModule.readManifest(dir);
    }
    // Phase 2: everything.
    const { targets, activeWal, walSums } = planFiles(ctx, snapshotManifests, manifest);
    const all = [...firstTargets, ...targets];
    // Hard-linked names are read once, so count each inode once.
    let totalBytes = 0;
    const inodes = new Set<bigint>();
    for (const t of targets) {
      try {
        const st = statSync(join(dir, t.rel), { bigint: true });
        if (!inodes.has(st.ino)) totalBytes += Number(st.size);
        inodes.add(st.ino);
      } catch {
        // missing
      }
    }
    let filesDone = firstTargets.length;
    // `totalBytes` is the bytes of the files phase 2 reads, each inode once; the native counter
    // counts bytes actually read, from here on. Only a re-read to locate damage (or a segment
    // that a checkpoint archived meanwhile) reads more, and that is not progress: never past the total.
    const baseline = nativeModule.scanBytes(scan);
    const progress = () =>
      opts.onProgress?.({
        bytes: Math.min(totalBytes, nativeModule.scanBytes(scan) - baseline),
        totalBytes,
        files: Math.min(filesDone, all.length),
        totalFiles: all.length,
      });
    if (opts.onProgress) progressTimer = setInterval(progress, 200);
    const checks = await verifier.verifyAll(targets, (n) => (filesDone += n));
    for (const [rel, c] of firstChecks) checks.set(rel, c);
    if (opts.signal?.aborted) throw aborted();
    progress();

    if (ctx.native || ctx.writerElsewhere) await dropSuperseded(ctx, verifier, targets, checks);
    const extra = new Map<string, FileCheck>();
    checkContinuity(dir, targets, checks, activeWal, extra);
    const byRel = new Map(all.map((t) => [t.rel, t]));
    for (const [rel, c] of extra) {
      checks.set(rel, c);
      const exp = walSums.get(rel.split('/').pop()!);
      byRel.set(rel, { rel, kind: 'wal', area: rel.startsWith(`${LAYOUT.archive}/`) ? 'archive' : 'wal', ...(exp ? { expected: exp } : {}) });
    }

    // Checkpoint and graph files are named `<collection id, 20 digits>-<seq>`.
    const collectionById = new Map((manifest?.collections ?? []).map((c) => [String(c.id).padStart(20, '0'), c.name]));
    const unreadableRecords = (manifest?.collections ?? []).flatMap((c) =>
      (c.unreadable ?? []).map((u) => ({ collection: c.name, id: u.id, file: u.file, offset: u.offset, reason: u.reason })),
    );
    const report: ScrubReport = { files: all.length, bytes: 0, durationMs: 0, corrupt: [], repaired: [], unrepaired: [], unreadableRecords };
    const damaged: DamagedFile[] = [];
    for (const [rel, c] of checks) {
      report.bytes += c.read;
      if (c.findings.length === 0) continue;
      const t = byRel.get(rel);
      if (!t) continue;
      const name = rel.split('/').pop()!;
      const checkpointFile =
        /^\d{20}-\d{20}\./.test(name) && (name.endsWith(LAYOUT.dataExt) || name.endsWith(LAYOUT.graphExt) || name.endsWith(LAYOUT.payloadExt));
      const collection = t.collection ?? (checkpointFile ? collectionById.get(name.slice(0, 20)) : undefined);
      for (const f of c.findings) {
        report.corrupt.push({
          file: rel,
          offset: f.offset,
          kind: f.kind,
          ...(collection ? { collection } : {}),
          ...(f.id !== undefined ? { id: f.id } : {}),
          detail: f.detail,
        });
      }
      damaged.push({ rel, kind: t.kind, area: t.area, ...(t.expected ? { expected: t.expected } : {}), check: c });
    }
    report.corrupt.sort((a, b) => (a.file === b.file ? a.offset - b.offset : a.file < b.file ? -1 : 1));

    if (opts.repair) await repairAll(ctx, opts, verifier, damaged, report);
    else for (const d of damaged) report.unrepaired.push({ file: d.rel, reason: 'repair was not requested' });
    report.durationMs = Math.round(performance.now() - started);
    writeLastScrub(dir, report, opts.repair);
    return report;
  } catch (e) {
    throw e instanceof CairnError ? e : fromNative(e);
  } finally {
    if (progressTimer) clearInterval(progressTimer);
    opts.signal?.removeEventListener('abort', onAbort);
    nativeModule.scanClose(scan);
  }
}

/**
 * Findings on files the open store no longer depends on are not damage: a checkpoint replaced
 * a data file (and swept it), archived a WAL segment (which is then checked where it went),
 * the archive retention pruned one, or a snapshot was pruned.
 */
async function dropSuperseded(ctx: ScrubContext, verifier: Verifier, targets: Target[], checks: Map<string, FileCheck>): Promise<void> {
  const { dir } = ctx;
  let now: NativeManifest | null = null;
  try {
    now = ctx.native ? ctx.native.manifest() : nativeModule.readManifest(dir);
  } catch {
    // A damaged MANIFEST on disk (store open elsewhere): keep the findings as they are.
  }
  const live = new Map(now ? manifestTargets(now).map((t) => [t.rel, t.expected!.xxh3]) : []);
  for (const t of [...targets]) {
    const c = checks.get(t.rel);
    if (!c || c.findings.length === 0) continue;
    const missing = c.findings.some((f) => f.kind === 'missing');
    if (t.area === 'data' && now && live.get(t.rel) !== t.expected?.xxh3) checks.delete(t.rel);
    else if (t.area === 'wal' && missing) {
      checks.delete(t.rel);
      const moved = `${LAYOUT.archive}/${t.rel.slice(LAYOUT.wal.length + 1)}`;
      if (existsSync(join(dir, moved))) {
        const target: Target = { rel: moved, kind: 'wal', area: 'archive' };
        checks.set(moved, await verifier.verify(target));
        targets.push(target);
      }
    }
    // Listed when the scrub started and gone now: pruned by the archive retention.
    else if (t.area === 'archive' && missing) checks.delete(t.rel);
    // The whole snapshot was pruned.
    else if (t.area === 'snapshot' && missing && !existsSync(join(dir, t.rel.split('/').slice(0, 2).join('/')))) checks.delete(t.rel);
  }
}

function noteFor(file: DamagedFile, repairedFrom: string): QuarantineNote {
  const first = file.check.findings[0];
  return {
    file: file.rel,
    timeMs: Date.now(),
    kind: first?.kind ?? 'checksum',
    offset: first?.offset ?? 0,
    detail: first?.detail ?? '',
    bytes: file.check.bytes,
    expectedBytes: file.expected?.bytes ?? null,
    expectedXxh3: file.expected?.xxh3 ?? null,
    foundXxh3: file.check.xxh3,
    repairedFrom,
  };
}

/**
 * Keep the damaged bytes of a file nothing could repair under `quarantine/` (a hard link with
 * a note), so that no later removal of its name (archive retention, a snapshot prune) loses
 * them. Once per distinct damaged content: a background scrub meeting it again adds nothing.
 */
async function keepUnrepaired(dir: string, file: DamagedFile): Promise<string | undefined> {
  if (file.check.xxh3 === null || !existsSync(join(dir, file.rel))) return undefined;
  const qdir = join(dir, LAYOUT.quarantine);
  for (const name of list(qdir)) {
    if (!name.endsWith(LAYOUT.noteSuffix)) continue;
    try {
      const note = nativeModule.readQuarantineNote(join(qdir, name));
      if (note.file === file.rel && note.foundXxh3 === file.check.xxh3) return `${LAYOUT.quarantine}/${name.slice(0, -LAYOUT.noteSuffix.length)}`;
    } catch {
      // A note being written by another scrub, or damaged: not a match.
    }
  }
  try {
    const kept = await nativeModule.quarantineFile(dir, file.rel, { ...noteFor(file, ''), repairedFrom: null });
    return kept ?? undefined;
  } catch (e) {
    throw fromNative(e);
  }
}

async function repairAll(ctx: ScrubContext, opts: ParsedScrubOptions, verifier: Verifier, damaged: DamagedFile[], report: ScrubReport): Promise<void> {
  const sources = opts.sources ?? ctx.sources ?? defaultSources();
  const rctx: RepairContext = { dir: ctx.dir, ...(ctx.native ? { native: ctx.native } : {}), note: noteFor };
  // Live files first: a snapshot file may then be repaired from a rebuilt live copy.
  const ordered = [...damaged].sort((a, b) => AREA_ORDER.indexOf(a.area) - AREA_ORDER.indexOf(b.area) || (a.rel < b.rel ? -1 : 1));
  let rebuilt = false;
  for (const file of ordered) {
    if (opts.signal?.aborted) throw aborted();
    const reasons: string[] = [];
    let done = false;
    for (const source of sources) {
      const r = await source.repair(file, rctx);
      if (r.outcome === 'repaired') {
        report.repaired.push({ file: file.rel, from: r.from, ...(r.quarantined ? { quarantined: r.quarantined } : {}) });
        rebuilt ||= r.from === 'engine' || r.from === 'replicas';
        done = true;
        break;
      }
      if (r.outcome === 'moot') {
        report.repaired.push({ file: file.rel, from: 'superseded by a checkpoint' });
        done = true;
        break;
      }
      reasons.push(`${source.name}: ${r.reason}`);
    }
    if (!done) {
      if (file.area === 'wal' && ctx.native) reasons.push('its records are in memory and reach checkpoint files at the next checkpoint');
      const quarantined = await keepUnrepaired(ctx.dir, file);
      report.unrepaired.push({ file: file.rel, reason: reasons.join('; '), ...(quarantined ? { quarantined } : {}) });
    }
  }
  if (ctx.native) {
    for (const source of sources) {
      if (!source.repairRecords) continue;
      const r = await source.repairRecords(rctx);
      report.repairedRecords = [...(report.repairedRecords ?? []), ...r.repaired.map(({ collection, id, from }) => ({ collection, id, from }))];
      report.unrepairedRecords = [...(report.unrepairedRecords ?? []), ...r.failed];
      rebuilt ||= r.repaired.length > 0;
    }
    if (report.repairedRecords) {
      const left = ctx.native
        .manifest()
        .collections.flatMap((c) => (c.unreadable ?? []).map((u) => ({ collection: c.name, id: u.id, file: u.file, offset: u.offset, reason: u.reason })));
      report.unreadableRecords = left;
    }
  }
  if (rebuilt && ctx.native) {
    // A rebuild is written from memory; read the new files back before calling them repaired.
    const now = manifestTargets(ctx.native.manifest());
    now.push({ rel: LAYOUT.manifest, kind: 'manifest', area: 'manifest' }, { rel: LAYOUT.manifestCopy, kind: 'manifest', area: 'manifest' });
    for (const t of now) {
      const c = await verifier.verify(t);
      if (c.findings.length === 0) continue;
      const i = report.repaired.findIndex((r) => r.from === 'engine');
      if (i >= 0) report.repaired.splice(i, 1);
      report.unrepaired.push({ file: t.rel, reason: `rebuilt file does not verify: ${c.findings[0]!.detail}` });
    }
  }
}
