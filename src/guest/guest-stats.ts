// Counters of one simulated-guest instance (per host: a restored guest starts from zero, so S's and D's
// figures stay apart), and the latencies of its disk operations.
import { LatencyRecorder, type LatencySummary } from '../common/latency-recorder.js';

export interface SimGuestStats {
  reads: number;
  writes: number;
  bytesRead: number;
  bytesWritten: number;
  /** Units read back whose content was not the pattern the guest last wrote there: always a bug. */
  readMismatches: number;
  /** Written units checked against the pattern on read. */
  unitsVerified: number;
  /** Disk operations the BlockDevice rejected. */
  readErrors: number;
  writeErrors: number;
  /** Failed writes issued again (a failed write leaves its units undefined, so the guest rewrites them). */
  writeRetries: number;
  pagesDirtied: number;
  readLatency: LatencyRecorder;
  writeLatency: LatencyRecorder;
}

export function createStats(): SimGuestStats {
  return {
    reads: 0,
    writes: 0,
    bytesRead: 0,
    bytesWritten: 0,
    readMismatches: 0,
    unitsVerified: 0,
    readErrors: 0,
    writeErrors: 0,
    writeRetries: 0,
    pagesDirtied: 0,
    readLatency: new LatencyRecorder(),
    writeLatency: new LatencyRecorder(),
  };
}

export type { LatencySummary };
