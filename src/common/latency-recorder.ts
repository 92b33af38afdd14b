// Latency samples with percentiles, in bounded memory: every sample is kept up to a cap (a long demo
// stays exact), beyond it a uniform reservoir keeps the percentiles honest; count and max stay exact.
import { LATENCY_INITIAL_SAMPLES, LATENCY_SAMPLE_CAP } from './constants.js';

export interface LatencySummary {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

export class LatencyRecorder {
  readonly cap: number;
  #samples: Float64Array;
  #kept = 0;
  #count = 0;
  #max = 0;
  /** Private LCG for reservoir picks, so stats never draw from the guest's own deterministic PRNG. */
  #rng = 0x2545f491;

  constructor(cap = LATENCY_SAMPLE_CAP) {
    this.cap = cap;
    this.#samples = new Float64Array(Math.min(cap, LATENCY_INITIAL_SAMPLES));
  }

  get count(): number {
    return this.#count;
  }

  record(ms: number): void {
    this.#count++;
    if (ms > this.#max) this.#max = ms;
    if (this.#kept < this.cap) {
      if (this.#kept === this.#samples.length) {
        const grown = new Float64Array(Math.min(this.cap, this.#samples.length * 2));
        grown.set(this.#samples);
        this.#samples = grown;
      }
      this.#samples[this.#kept++] = ms;
      return;
    }
    this.#rng = (Math.imul(this.#rng, 1664525) + 1013904223) >>> 0;
    const j = Math.floor((this.#rng / 4294967296) * this.#count);
    if (j < this.cap) this.#samples[j] = ms;
  }

  /** Nearest-rank p50/p99 and the exact max, in ms; zeroes when nothing was recorded. */
  summary(): LatencySummary {
    if (this.#kept === 0) return { count: 0, p50: 0, p99: 0, max: 0 };
    const sorted = this.#samples.slice(0, this.#kept).sort();
    const rank = (p: number) => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
    return { count: this.#count, p50: rank(0.5), p99: rank(0.99), max: this.#max };
  }
}
