// Latency samples with percentiles, bounded: past the cap it keeps a uniform reservoir sample.
export class LatencyRecorder {
  readonly #cap: number;
  readonly #samples: number[] = [];
  #count = 0;
  #max = 0;

  constructor(cap = 100_000) {
    this.#cap = cap;
  }

  record(ms: number): void {
    this.#count++;
    if (ms > this.#max) this.#max = ms;
    if (this.#samples.length < this.#cap) this.#samples.push(ms);
    else {
      const j = Math.floor(Math.random() * this.#count);
      if (j < this.#cap) this.#samples[j] = ms;
    }
  }

  get count(): number {
    return this.#count;
  }

  summary(): { count: number; p50: number; p99: number; max: number } {
    const s = [...this.#samples].sort((a, b) => a - b);
    const at = (q: number) => (s.length === 0 ? 0 : s[Math.min(s.length - 1, Math.floor(q * s.length))]!);
    return { count: this.#count, p50: round3(at(0.5)), p99: round3(at(0.99)), max: round3(this.#max) };
  }
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
