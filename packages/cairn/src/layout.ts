/**
 * The names of a store's files and directories, as the engine spells them in
 * `crates/cairn-core/src/layout.rs`. TypeScript code takes them from here and never spells them.
 */
export const LAYOUT = {
  manifest: 'MANIFEST',
  manifestCopy: 'MANIFEST.copy',
  wal: 'wal',
  archive: 'wal-archive',
  data: 'data',
  snapshots: 'snapshots',
  snapshotManifest: 'SNAPSHOT',
  quarantine: 'quarantine',
  noteSuffix: '.note',
  walExt: '.wal',
  dataExt: '.seg',
  graphExt: '.hnsw',
} as const;
