/**
 * `/status` and `/health`: what an operator (or the dashboard) reads about an open store, as
 * plain JSON (sequence numbers as decimal strings, times as ISO strings).
 *
 * Health is bad when writes are refused (poisoned, closed), when damage is known and not
 * repaired (the last scrub left some, or, before any scrub, recovery found unreadable records),
 * or when replication says this node is fenced or a replica cut off from its primary.
 */
import { CairnError } from '../errors.js';
import type { NativeEngineStats } from '../native.js';
import { readLastScrub } from '../scrub/result.js';
import type { CatalogEntry } from './backup-catalogs.js';
import type { OpsHistory } from './history.js';
import type { OpsSource, ReplicationStatusLike, ScrubRecord } from './types.js';

export interface HealthReport {
  ok: boolean;
  /** Why the store is unhealthy; empty when ok. */
  reasons: string[];
}

export interface HealthInputs {
  source: OpsSource;
  history: OpsHistory;
  /** Records recovery found unreadable on open (before any scrub looked again). */
  unreadableAtOpen: number;
  closed: boolean;
  replication: ReplicationStatusLike | null;
}

/**
 * The last scrub: this process's own (with its damage list), else the one recorded on disk by
 * any process (`SCRUB_RESULT`, counts only). A damaged record file is reported, not hidden.
 */
export function lastScrub(source: OpsSource, history: OpsHistory): { scrub: ScrubRecord | null; error: string | null } {
  if (history.lastScrub) return { scrub: history.lastScrub, error: null };
  try {
    const d = readLastScrub(source.dir);
    if (!d) return { scrub: null, error: null };
    const { repair: _repair, ...counts } = d;
    const damage = d.unrepaired > 0 ? [`${d.unrepaired} damaged file(s) left unrepaired (see cairn scrub)`] : [];
    return { scrub: { ...counts, unreadableRecords: 0, damage }, error: null };
  } catch (e) {
    if (!(e instanceof CairnError)) throw e;
    return { scrub: null, error: `${e.code}: ${e.message}` };
  }
}

export function health({ source, history, unreadableAtOpen, closed, replication }: HealthInputs): HealthReport {
  const reasons: string[] = [];
  if (closed) reasons.push('closed: the store is closed');
  const poisoned = closed ? null : source.poisoned;
  if (poisoned !== null) reasons.push(`poisoned: writes are refused after a failed write or fsync (${poisoned})`);
  const { scrub: last, error: scrubError } = lastScrub(source, history);
  if (scrubError) reasons.push(`scrub result unreadable: ${scrubError}`);
  if (last) {
    if (last.unrepaired + last.unreadableRecords > 0) {
      reasons.push(
        `unrepaired damage: the scrub at ${last.time.toISOString()} left ${last.unrepaired} damaged file(s) and ${last.unreadableRecords} unreadable record(s) (${last.damage.slice(0, 5).join('; ')})`,
      );
    }
  } else if (unreadableAtOpen > 0) {
    reasons.push(`unrepaired damage: recovery found ${unreadableAtOpen} unreadable record(s) on open`);
  }
  if (replication) {
    const state = replication.state ?? '';
    // A replica that refused its primary's frames for a stale epoch (or was refused for one)
    // is fenced off from it until failover sorts the roles out.
    const fencedError = replication.role === 'replica' && state !== 'streaming' && (replication.lastError ?? '').startsWith('CAIRN_FENCED');
    if (replication.fenced === true || state === 'fenced' || fencedError) {
      reasons.push(`replication: this node is fenced (a newer primary exists)${fencedError ? `: ${replication.lastError}` : ''}`);
    } else if (replication.role === 'replica' && (replication.connected === false || state === 'disconnected')) {
      reasons.push('replication: this replica is disconnected from its primary');
    }
  }
  return { ok: reasons.length === 0, reasons };
}

function summary(h: NativeEngineStats['fsync']) {
  return { count: h.count, sumSeconds: h.sum };
}

export async function storeStatus(inputs: HealthInputs & { engine: NativeEngineStats; catalogs?: CatalogEntry[] }) {
  const { source, history, engine, replication, catalogs = [] } = inputs;
  const [snapshots, range] = await Promise.all([source.snapshots(), source.recoverableRange().catch(() => null)]);
  const h = health(inputs);
  const last = lastScrub(source, history);
  return {
    dir: source.dir,
    time: new Date().toISOString(),
    health: h,
    lastSeq: source.lastSeq.toString(),
    poisoned: source.poisoned,
    collections: source.collections().map((c) => ({ name: c.name, dim: c.dim, metric: c.metric, count: c.count })),
    recoverableRange: range && {
      from: { seq: range.from.seq.toString(), time: range.from.time.toISOString() },
      to: { seq: range.to.seq.toString(), time: range.to.time.toISOString() },
    },
    snapshots: snapshots.map((s) => ({ id: s.id, seq: s.seq.toString(), time: s.time.toISOString(), kind: s.kind, bytes: s.bytes })),
    lastScrub: last.scrub && { ...last.scrub, time: last.scrub.time.toISOString() },
    lastScrubError: last.error,
    scrubs: history.scrubs.map((s) => ({ ...s, time: s.time.toISOString() })),
    // Configured targets (serveHttp({ backups })) as their catalogs list them; other targets this
    // process backed up to, from what it saw (`from` says which).
    backups: [
      ...catalogs.map((c) => ({
        target: c.target,
        from: 'catalog' as const,
        ok: c.ok,
        failed: c.failed,
        last: c.last && { ok: c.last.ok, id: c.last.id, kind: c.last.kind, time: c.last.time.toISOString(), error: c.last.error ?? null },
        lastGood: c.lastGood && { id: c.lastGood.id, kind: c.lastGood.kind, time: c.lastGood.time.toISOString() },
        error: c.error,
      })),
      ...[...history.backups.values()]
        .filter((t) => !catalogs.some((c) => c.target === t.target))
        .map((t) => ({
          target: t.target,
          from: 'this process' as const,
          ok: t.ok,
          failed: t.failed,
          last: { ok: t.last.ok, id: t.last.id, kind: t.last.kind, time: t.last.time.toISOString(), error: t.last.error ?? null },
          lastGood: t.lastGood && { id: t.lastGood.id, kind: t.lastGood.kind, time: t.lastGood.time.toISOString() },
          error: null,
        })),
    ],
    replication: replication && {
      ...replication,
      epoch: replication.epoch === undefined ? undefined : replication.epoch.toString(),
      replicas: (replication.replicas ?? []).map((r) => ({ ...r })),
    },
    engine: {
      sync: engine.sync,
      commits: engine.commits,
      records: engine.records,
      walBytes: engine.walBytes,
      fsync: summary(engine.fsync),
      checkpoints: engine.checkpoint.count,
      indexPending: engine.indexPending,
      graphNodes: engine.graphNodes,
    },
    /** Engine counters sampled every few seconds, the last one now: rates are differences between samples. */
    samples: [
      ...history.samples,
      { time: Date.now(), commits: engine.commits, records: engine.records, fsyncCount: engine.fsync.count, fsyncSeconds: engine.fsync.sum },
    ],
  };
}

export type StoreStatus = Awaited<ReturnType<typeof storeStatus>>;

/** JSON with bigints as decimal strings. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
}
