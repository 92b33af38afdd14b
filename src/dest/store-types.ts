// The block store's public shapes: its options, its counters (read by the agent's progress and events, and by the
// benchmarks), and what it tells of a local fault.
import type { ImageWriteIo } from '../common/file-io.js';
import type { Logger } from '../common/logger.js';
import type { FinalCheckMode } from './digest-keeper.js';
import type { Fetcher } from './fetcher.js';
import type { LocalFaultReport, LocalFaultTiming } from './local-fault.js';
import type { PresentBitmap } from './present-bitmap.js';

export type StoreMode = 'pass-through' | 'copy-on-read';

export interface StoreOptions {
  size: number;
  bitmap: PresentBitmap;
  fetcher: Fetcher;
  log: Logger;
  finalCheck?: FinalCheckMode;
  /** The image's writes and syncs (tests inject a failing disk). */
  io?: ImageWriteIo;
  /** Retry and report pacing while the image's disk fails (tests shorten it). */
  faultTiming?: LocalFaultTiming;
}

/** A local fault as told to the operator: what happened and how much is still to come from S. */
export interface StoreFaultReport extends LocalFaultReport {
  bytesToCome: number;
}


export interface BlockStoreStats {
  bytesFetchedDemand: number;
  bytesFetchedBulk: number;
  zeroBytesSkipped: number;
  guestBytesWritten: number;
  guestBytesRead: number;
  demandMisses: number;
  lateFetchesDropped: number;
  commits: number;
}

export function newStoreStats(): BlockStoreStats {
  return {
    bytesFetchedDemand: 0,
    bytesFetchedBulk: 0,
    zeroBytesSkipped: 0,
    guestBytesWritten: 0,
    guestBytesRead: 0,
    demandMisses: 0,
    lateFetchesDropped: 0,
    commits: 0,
  };
}
