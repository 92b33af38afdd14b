// The block store's counters (read by the agent's progress and events, and by the benchmarks).

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
