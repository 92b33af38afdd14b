// A growing byte counter's recent rate: what the progress bars show and what the host service reports per job.

/** Rates shown are over this much time: a single interval's delta jumps with every burst of the stream. */
export const RATE_WINDOW_MS = 3000;

/**
 * Bytes per second of a growing counter over the last RATE_WINDOW_MS: 0 until two samples are apart in time, never
 * negative (a counter that restarts reads as idle, not as a negative rate), never NaN.
 */
export class RateMeter {
  readonly #samples: Array<{ t: number; bytes: number }> = [];

  /** Record the counter at time `t` (ms) and return the rate over the window that ends there. */
  sample(t: number, bytes: number): number {
    const s = this.#samples;
    // No counter yet (D before its store exists): nothing to measure from.
    if (!Number.isFinite(bytes)) {
      s.length = 0;
      return 0;
    }
    if (s.length > 0 && bytes < s[s.length - 1]!.bytes) s.length = 0;
    s.push({ t, bytes });
    // Keep one sample at or before the window's start, so the rate always spans at least the window when it can.
    while (s.length > 2 && s[1]!.t <= t - RATE_WINDOW_MS) s.shift();
    const first = s[0]!;
    const dt = (t - first.t) / 1000;
    return dt > 0 ? (bytes - first.bytes) / dt : 0;
  }
}
