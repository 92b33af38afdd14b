// The progress bar's ETA: from D's path model once it has measured the bottleneck, else from the rate just seen.
import { describe, expect, it } from 'vitest';
import { etaSeconds, type ProgressSample } from '../../src/cli/progress.js';

const MiB = 1024 * 1024;
const sample = (path?: ProgressSample['path']): ProgressSample => ({
  blocksPresent: 10,
  blocksTotal: 100,
  bytesFetchedDemand: 0,
  bytesFetchedBulk: 0,
  bytesOnlyOnSource: 500 * MiB,
  link: 'up',
  phase: 'postcopy',
  ...(path ? { path } : {}),
});

describe('progress ETA', () => {
  it('uses the measured bottleneck (plus a round trip) over the rate of the last interval', () => {
    expect(etaSeconds(sample({ bottleneckBytesPerSec: 100 * MiB, minRttMs: 80 }), 10 * MiB)).toBeCloseTo(5.08, 6);
  });
  it('falls back to the recent rate before the path is measured, and says nothing without either', () => {
    expect(etaSeconds(sample({ bottleneckBytesPerSec: null, minRttMs: null }), 50 * MiB)).toBe(10);
    expect(etaSeconds(sample(), 0)).toBeNull();
  });
});
