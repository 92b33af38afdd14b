// Latency samples in milliseconds with percentiles, in bounded memory: the stage timings' histogram (perf_hooks'
// HDR histogram, sub-millisecond resolution, exact max), read back in milliseconds.
import { LatencyHistogram } from './stage-histograms.js';

export interface LatencySummary {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

const US_PER_MS = 1000;

export class LatencyRecorder {
  readonly #h = new LatencyHistogram();

  get count(): number {
    return this.#h.count;
  }

  record(ms: number): void {
    this.#h.record(ms * US_PER_MS);
  }

  /** p50/p99 (never past the max) and the max, in ms; zeroes when empty. */
  summary(): LatencySummary {
    const s = this.#h.stats();
    return { count: s.count, p50: s.p50Us / US_PER_MS, p99: s.p99Us / US_PER_MS, max: s.maxUs / US_PER_MS };
  }
}
