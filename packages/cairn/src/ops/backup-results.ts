/**
 * Backup outcomes as they happen, keyed by the source store's directory, so that a store's
 * metrics and status report the backups taken of it by any `BackupManager` in this process.
 * A leaf: the backup code reports here, the ops code listens; neither imports the other.
 */

export interface BackupOutcome {
  /** Resolved directory of the store that was backed up. */
  source: string;
  target: string;
  ok: boolean;
  id: string | null;
  kind: string | null;
  time: Date;
  error?: string;
}

type Listener = (outcome: BackupOutcome) => void;
const listeners = new Map<string, Set<Listener>>();

export function reportBackupOutcome(outcome: BackupOutcome): void {
  for (const l of listeners.get(outcome.source) ?? []) l(outcome);
}

/** Listen for backups of the store in `dir`; returns the function that stops listening. */
export function onBackupOutcome(dir: string, listener: Listener): () => void {
  const set = listeners.get(dir) ?? new Set<Listener>();
  listeners.set(dir, set);
  set.add(listener);
  return () => {
    set.delete(listener);
    if (set.size === 0) listeners.delete(dir);
  };
}
