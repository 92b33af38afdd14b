// Latency samples in milliseconds with percentiles, in bounded memory: the stage timings' histogram (perf_hooks'
// HDR histogram, sub-millisecond resolution, exact max), read back in milliseconds.
import { LatencyHistogram, type StageStats } from './stage-histograms.js';

/** count, p50Ms, p99Ms, maxMs: a stage's figures without its buckets. */
export type LatencySummary = Omit<StageStats, 'buckets'>;

const US_PER_MS = 1000;

export class LatencyRecorder {
  readonly #h = new LatencyHistogram();
  /** Told of each sample as it is recorded (the host service's metrics histogram); optional. */
  onRecord: ((ms: number) => void) | null = null;

  get count(): number {
    return this.#h.count;
  }

  record(ms: number): void {
    this.#h.record(ms * US_PER_MS);
    this.onRecord?.(ms);
  }

  /** p50/p99 (never past the max) and the max, in ms; zeroes when empty. */
  summary(): LatencySummary {
    const { buckets: _buckets, ...summary } = this.#h.stats();
    return summary;
  }
}
