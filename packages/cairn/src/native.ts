import { createRequire } from 'node:module';

/** Shapes of the napi binding (crates/cairn-node). Only this package talks to it. */
export interface NativeHit {
  id: string;
  score: number;
  metadata: string;
}
export interface NativeQueryResult {
  hits: NativeHit[];
  skipped: Array<{ id: string; reason: string }>;
}
export interface NativeRow {
  vector: Float32Array;
  metadata: string;
}
export interface NativeCollectionInfo {
  name: string;
  dim: number;
  metric: string;
  m: number;
  efConstruction: number;
  count: number;
}
export interface NativeStore {
  commit(payload: Buffer): Promise<bigint>;
  get(collection: string, id: string): NativeRow | null;
  count(collection: string): number;
  collections(): NativeCollectionInfo[];
  query(collection: string, vectors: Float32Array, count: number, k: number, ef?: number | null, filter?: string | null): Promise<NativeQueryResult[]>;
  indexStats(collection: string): { indexed: number; pending: number; tombstones: number; bytes: number };
  waitForIndex(collection: string): Promise<void>;
  checkpoint(): Promise<bigint>;
  close(): Promise<void>;
  readonly lastSeq: bigint;
  readonly poisoned: string | null;
  recoveryReport(): string;
  snapshot(incremental: boolean): Promise<string>;
  /** The manifest the engine holds, as JSON. */
  manifest(): string;
  installCopy(rel: string, source: string, kind: string, expectedBytes: number, expectedXxh3: string, noteJson: string): Promise<string>;
  rebuildFile(rel: string, noteJson: string): Promise<string>;
}
interface NativeModule {
  xxh3Hex(data: Buffer): string;
  shuffle4(data: Buffer): Buffer;
  unshuffle4(data: Buffer): Buffer;
  restoreStore(source: string, target: string, seq?: bigint | null, timeMs?: number | null): Promise<string>;
  recoverableRange(source: string): Promise<string>;
  listSnapshots(dir: string): Promise<string>;
  scanOpen(bytesPerSec?: number | null): number;
  scanCancel(id: number): void;
  scanClose(id: number): void;
  scanBytes(id: number): number;
  verifyFile(scan: number, path: string, kind: string, expectedBytes?: number | null, expectedXxh3?: string | null): string;
  verifyFileAsync(scan: number, path: string, kind: string, expectedBytes?: number | null, expectedXxh3?: string | null): Promise<string>;
  scanRanges(bytes: number, rangeBytes: number): number[];
  scanSplitOpen(scan: number, bytes: number): number;
  hashRange(scan: number, split: number, path: string, start: number, end: number): number;
  scanSplitFinish(scan: number, split: number, path: string, kind: string, expectedBytes: number, expectedXxh3: string): string | null;
  installCopy(dir: string, rel: string, source: string, kind: string, expectedBytes: number, expectedXxh3: string, noteJson: string): Promise<string>;
  quarantineFile(dir: string, rel: string, noteJson: string): Promise<string>;
  openStore(
    dir: string,
    options: { sync: string; recovery: string; segmentBytes?: number; archiveMaxAgeMs?: number; archiveMaxBytes?: number },
  ): Promise<NativeStore>;
}

const require = createRequire(import.meta.url);
export const nativeModule = require('@cairn/native') as NativeModule;
/** Byte helpers of the native module (checksums, shuffle) for the archive code. */
export const nativeBytes = {
  xxh3Hex: (d: Buffer) => nativeModule.xxh3Hex(d),
  shuffle4: (d: Buffer) => nativeModule.shuffle4(d),
  unshuffle4: (d: Buffer) => nativeModule.unshuffle4(d),
};
