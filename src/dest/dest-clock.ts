// D's clock and timers, injected so the session's timers can be driven by a test.

/** The clock and timers (tests inject their own). */
export interface DestClock {
  now(): number;
  setTimer(ms: number, fire: () => void): unknown;
  clearTimer(handle: unknown): void;
}

export const SYSTEM_CLOCK: DestClock = {
  now: () => performance.now(),
  setTimer: (ms, fire) => setTimeout(fire, ms).unref(),
  clearTimer: (h) => clearTimeout(h as NodeJS.Timeout),
};
