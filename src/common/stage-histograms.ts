// Per-stage latency histograms for the demand path: where a guest's wait for a missing block goes. Each stage
// keeps Node's own HDR histogram (percentiles, bounded memory) and power-of-two microsecond bucket counts (the
// shape of QEMU's postcopy-latency-dist), so a summary shows both the tail and the distribution.
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';

/** One stage's figures, in milliseconds (to the nanosecond: sub-millisecond stages keep their resolution). */
export interface StageStats {
  count: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** [upper bound in ms (a power of two of µs), samples below it and at or above the previous bound]. Empty buckets left out. */
  buckets: Array<[number, number]>;
}

/** The per-stage figures without buckets, for periodic events. */
export type StageBrief = Pick<StageStats, 'count' | 'p50Ms' | 'p99Ms'>;

/** Buckets up to 2^31 µs (about 36 minutes): anything longer counts in the last one. */
const BUCKETS = 32;
const NS_PER_US = 1000;
const US_PER_MS = 1000;
const NS_PER_MS = NS_PER_US * US_PER_MS;

/** One latency distribution, recorded in microseconds and reported in milliseconds: HDR percentiles, the exact max, power-of-two buckets. */
export class LatencyHistogram {
  readonly #hdr: RecordableHistogram = createHistogram();
  readonly #buckets = new Float64Array(BUCKETS);
  /** Exact (the histogram keeps three significant digits). */
  #maxUs = 0;

  get count(): number {
    return this.#hdr.count;
  }

  record(us: number): void {
    const v = Math.max(0, us);
    if (v > this.#maxUs) this.#maxUs = v;
    // createHistogram takes integers >= 1: record nanoseconds, so sub-microsecond stages keep their resolution.
    this.#hdr.record(Math.max(1, Math.round(v * NS_PER_US)));
    this.#buckets[bucketOf(v)]!++;
  }

  stats(): StageStats {
    const h = this.#hdr;
    const count = h.count;
    // Whole nanoseconds: the max as reported, and percentiles clamped to that figure, not to the unrounded one above it.
    const maxNs = count === 0 ? 0 : Math.round(this.#maxUs * NS_PER_US);
    const ms = (ns: number) => (count === 0 ? 0 : Math.min(Math.round(ns), maxNs) / NS_PER_MS);
    const buckets: Array<[number, number]> = [];
    this.#buckets.forEach((n, i) => {
      if (n > 0) buckets.push([2 ** i / US_PER_MS, n]);
    });
    // HDR percentiles are a bucket's upper value and may pass the exact max by a little: clamped to it.
    return { count, p50Ms: ms(h.percentile(50)), p99Ms: ms(h.percentile(99)), maxMs: maxNs / NS_PER_MS, buckets };
  }
}

/** The bucket of v µs: the least power of two above it (v < 1 µs: bucket 0, upper bound 1). */
export function bucketOf(us: number): number {
  if (!(us >= 1)) return 0;
  if (us >= 2 ** (BUCKETS - 1)) return BUCKETS - 1;
  return 32 - Math.clz32(Math.floor(us));
}

/** Histograms for a fixed, ordered list of stages. */
export class StageHistograms<S extends string> {
  readonly #stages: Map<S, LatencyHistogram>;

  constructor(stages: readonly S[]) {
    this.#stages = new Map(stages.map((s) => [s, new LatencyHistogram()]));
  }

  /** A stage that took `ms` milliseconds (performance.now() differences). */
  record(stage: S, ms: number): void {
    this.#stages.get(stage)!.record(ms * 1000);
  }

  summary(): Record<S, StageStats> {
    const out = {} as Record<S, StageStats>;
    for (const [s, h] of this.#stages) out[s] = h.stats();
    return out;
  }

  brief(): Record<S, StageBrief> {
    const out = {} as Record<S, StageBrief>;
    for (const [s, h] of this.#stages) {
      const { count, p50Ms, p99Ms } = h.stats();
      out[s] = { count, p50Ms, p99Ms };
    }
    return out;
  }
}
