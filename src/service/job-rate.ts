// A job's data rate over the last few seconds, from samples of its processed bytes: what status shows as rate and ETA.

const WINDOW_MS = 5_000;

export class RateWindow {
  readonly #samples: Array<{ at: number; bytes: number }> = [];

  add(at: number, bytes: number): void {
    this.#samples.push({ at, bytes });
    // Keep one sample at or before the window's start, so the rate always spans the whole window once it can.
    while (this.#samples.length > 2 && this.#samples[1]!.at <= at - WINDOW_MS) this.#samples.shift();
  }

  /** Bytes per second over the window; null until two samples a moment apart exist. */
  get bytesPerSecond(): number | null {
    const first = this.#samples[0];
    const last = this.#samples[this.#samples.length - 1];
    if (!first || !last || last.at - first.at < 200) return null;
    return Math.max(0, Math.round(((last.bytes - first.bytes) * 1000) / (last.at - first.at)));
  }
}

/** Seconds until `remaining` bytes are in at `rate`; null when nothing moves. */
export function etaSeconds(remaining: number, rate: number | null): number | null {
  if (remaining === 0) return 0;
  if (rate === null || rate <= 0) return null;
  return Math.ceil(remaining / rate);
}
