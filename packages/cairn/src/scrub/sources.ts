/**
 * Where a repair comes from. The scrub asks each source in order and takes the first repair
 * that succeeds; every copy is verified against the damaged file's recorded size and xxh3
 * before it is installed (crates/cairn-core/src/scrub.rs, `install_copy`), and every rebuild is
 * verified again after it is installed. A replicated store adds the other nodes
 * (`replica-source.ts`), which also repair damaged records (`repairRecords`).
 */
import { existsSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';

import { fromNative } from '../errors.js';
import { LAYOUT } from '../layout.js';
import {
  type NativeFileCheck,
  type NativeInstallOutcome,
  type NativeQuarantineNote,
  type NativeRebuildOutcome,
  type NativeStore,
  nativeModule,
} from '../native.js';

export type FileKindName = 'manifest' | 'snapshot-manifest' | 'segment' | 'wal' | 'wal-tail' | 'blob' | 'payload-index';

/** Where a file lives in the store directory; decides its repair candidates and repair order. */
export type FileArea = 'manifest' | 'data' | 'archive' | 'wal' | 'snapshot';

export interface Expected {
  bytes: number;
  xxh3: string;
}

/** What the native verifier returns for one file (crates/cairn-core/src/scrub.rs, `FileCheck`). */
export type FileCheck = NativeFileCheck;

/** Why a file is kept under `quarantine/` (docs/format.md, "Quarantine note"). */
export type QuarantineNote = NativeQuarantineNote;

export interface DamagedFile {
  /** Relative to the store directory, with '/' separators. */
  rel: string;
  kind: FileKindName;
  area: FileArea;
  expected?: Expected;
  check: FileCheck;
}

export type RepairAttempt =
  /** Installed; `quarantined` is where the damaged bytes were kept. */
  | { outcome: 'repaired'; from: string; quarantined: string | null }
  /** The store no longer depends on the file (a checkpoint replaced it meanwhile). */
  | { outcome: 'moot' }
  | { outcome: 'failed'; reason: string };

export interface RepairContext {
  dir: string;
  /** The open store's engine, when the scrub runs on one. */
  native?: NativeStore;
  /** The quarantine note for `file` (docs/format.md, "Quarantine note"). */
  note(file: DamagedFile, repairedFrom: string): QuarantineNote;
}

/** Damaged records repaired (or not) from a source that holds records rather than files. */
export interface RecordRepairs {
  repaired: Array<{ collection: string; id: string; from: string[] }>;
  failed: Array<{ collection: string; id: string; error: string }>;
}

export interface RepairSource {
  readonly name: string;
  repair(file: DamagedFile, ctx: RepairContext): Promise<RepairAttempt>;
  /** Repair the open store's damaged records (unreadable, or failing their in-memory checksum). */
  repairRecords?(ctx: RepairContext): Promise<RecordRepairs>;
}

function snapshotIds(dir: string): string[] {
  try {
    return readdirSync(join(dir, LAYOUT.snapshots))
      .filter((n) => !n.endsWith(LAYOUT.tmpSuffix))
      .sort()
      .reverse();
  } catch {
    return [];
  }
}

/**
 * Files that should hold the same bytes as `rel`: the same name in every snapshot and in the
 * live store. Snapshots hard-link their files, so a candidate may be the damaged inode itself;
 * verification rejects it and the next one is tried.
 */
export function copyCandidates(dir: string, rel: string): string[] {
  const name = basename(rel);
  const out: string[] = [];
  const snaps = snapshotIds(dir);
  const inSnapshot = (s: string, ...parts: string[]) => [LAYOUT.snapshots, s, ...parts].join('/');
  if (rel === LAYOUT.manifest || rel.endsWith(`/${LAYOUT.manifest}`)) {
    for (const s of snaps) out.push(inSnapshot(s, LAYOUT.manifest));
    out.push(LAYOUT.manifest);
  } else if (name.endsWith(LAYOUT.walExt)) {
    for (const s of snaps) out.push(inSnapshot(s, LAYOUT.wal, name));
    out.push(`${LAYOUT.archive}/${name}`);
  } else {
    for (const s of snaps) out.push(inSnapshot(s, LAYOUT.data, name));
    out.push(`${LAYOUT.data}/${name}`);
  }
  return out.filter((c) => c !== rel && existsSync(join(dir, c)));
}

/** (a) An identical file (same name, the recorded xxh3) in a snapshot or the live store. */
export class CopySource implements RepairSource {
  readonly name = 'copy';

  async repair(file: DamagedFile, ctx: RepairContext): Promise<RepairAttempt> {
    if (!file.expected) return { outcome: 'failed', reason: 'no recorded checksum to verify a copy against' };
    const reasons: string[] = [];
    for (const candidate of copyCandidates(ctx.dir, file.rel)) {
      const note = ctx.note(file, candidate);
      const source = join(ctx.dir, candidate);
      const { bytes, xxh3 } = file.expected;
      // Files an open engine also writes, moves or sweeps are installed under its checkpoint lock.
      const live = ctx.native && (file.area === 'data' || file.area === 'archive');
      let r: NativeInstallOutcome;
      try {
        r = live
          ? await ctx.native!.installCopy(file.rel, source, file.kind, bytes, xxh3, note)
          : await nativeModule.installCopy(ctx.dir, file.rel, source, file.kind, bytes, xxh3, note);
      } catch (e) {
        reasons.push(`${candidate}: ${fromNative(e).message}`);
        continue;
      }
      if (r.outcome === 'installed') return { outcome: 'repaired', from: candidate, quarantined: r.quarantined };
      if (r.outcome === 'moot') return { outcome: 'moot' };
      reasons.push(r.detail ?? `${candidate} rejected`);
    }
    return { outcome: 'failed', reason: reasons.length ? reasons.join('; ') : 'no copy with the same name exists' };
  }
}

/**
 * (b) The open engine's in-memory state, which was verified when it was loaded: a damaged
 * checkpoint or graph file is rewritten by a full checkpoint of its collection, a damaged
 * MANIFEST from the manifest the engine holds.
 */
export class EngineSource implements RepairSource {
  readonly name = 'engine';

  async repair(file: DamagedFile, ctx: RepairContext): Promise<RepairAttempt> {
    if (!ctx.native) return { outcome: 'failed', reason: 'the store is not open, so there is no in-memory state to rebuild from' };
    if (file.area !== 'data' && file.area !== 'manifest') return { outcome: 'failed', reason: 'the engine does not hold this file' };
    let r: NativeRebuildOutcome;
    try {
      r = await ctx.native.rebuildFile(file.rel, ctx.note(file, 'engine'));
    } catch (e) {
      return { outcome: 'failed', reason: `rebuild failed: ${fromNative(e).message}` };
    }
    return r.outcome === 'moot' ? { outcome: 'moot' } : { outcome: 'repaired', from: 'engine', quarantined: r.quarantined };
  }
}

/** The default order: an identical copy first, then a rebuild from the live engine. */
export function defaultSources(): RepairSource[] {
  return [new CopySource(), new EngineSource()];
}
