// Latency samples in milliseconds with percentiles, in bounded memory: Node's own HDR histogram (perf_hooks),
// recorded in nanoseconds so sub-millisecond waits keep their resolution.
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';

export interface LatencySummary {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

const NS_PER_MS = 1e6;

export class LatencyRecorder {
  readonly #hdr: RecordableHistogram = createHistogram();
  /** Exact (the histogram keeps three significant digits). */
  #max = 0;

  get count(): number {
    return this.#hdr.count;
  }

  record(ms: number): void {
    if (ms > this.#max) this.#max = ms;
    this.#hdr.record(Math.max(1, Math.round(ms * NS_PER_MS)));
  }

  /** p50/p99 (clamped to the exact max: HDR reports a bucket's upper value) and the max, in ms; zeroes when empty. */
  summary(): LatencySummary {
    const h = this.#hdr;
    if (h.count === 0) return { count: 0, p50: 0, p99: 0, max: 0 };
    const ms = (ns: number) => Math.min(ns / NS_PER_MS, this.#max);
    return { count: h.count, p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), max: this.#max };
  }
}
