// A clock and its timers, injected where timing decides behaviour (D's session, the rate caps) so tests drive them.

/** Milliseconds and timers (tests bring their own). */
export interface Clock {
  now(): number;
  setTimer(ms: number, fire: () => void): unknown;
  clearTimer(handle: unknown): void;
}

/** performance.now() and unref'd timers: a pending one never holds the process. */
export const SYSTEM_CLOCK: Clock = {
  now: () => performance.now(),
  setTimer: (ms, fire) => setTimeout(fire, ms).unref(),
  clearTimer: (h) => clearTimeout(h as NodeJS.Timeout),
};
