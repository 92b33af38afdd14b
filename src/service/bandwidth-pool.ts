// PLACEHOLDER until wt-rate merges (take theirs): the interface only.
import type { BulkRateLimit } from '../common/token-bucket.js';
export interface PoolShare {
  readonly limit: BulkRateLimit;
  readonly ownCap: number | null;
  readonly effective: number | null;
  setOwnCap(bps: number | null): void;
  leave(): void;
}
export declare class BandwidthPool {
  constructor(hostBytesPerSecond: number | null);
  join(ownCap: number | null): PoolShare;
}
