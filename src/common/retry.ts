// The one backoff rule and the one timeout race. Each retry loop in the project has exactly one owner (it says
// so in a comment where it loops); they all take their delays from backoffDelay and bound waits with withTimeout.
import type { PostcopyError } from './errors.js';

export interface Backoff {
  /** Delay before the first retry. */
  initialMs: number;
  /** No delay is longer than this. */
  maxMs: number;
}

/** Doubling stops growing the base after this many attempts (2^20 × any sane initialMs is past every cap). */
const MAX_DOUBLINGS = 20;
/** ±25 % around the base: peers that lost the same link do not retry in lock-step. */
const JITTER_SPREAD = 0.5;
const JITTER_LOW = 1 - JITTER_SPREAD / 2;
/** The middle of the spread: exactly the base delay (a retry against one local resource has no herd to spread). */
export const NO_JITTER = 0.5;

/**
 * Delay before retry `attempt` (0-based): initialMs doubled per attempt, capped at maxMs, then jittered by ±25 %
 * (`jitter` in [0, 1): pass Math.random() in a shell, a fixed value in a pure core or a test).
 */
export function backoffDelay(attempt: number, b: Backoff, jitter: number = Math.random()): number {
  const base = Math.min(b.maxMs, b.initialMs * 2 ** Math.min(Math.max(attempt, 0), MAX_DOUBLINGS));
  return Math.round(base * (JITTER_LOW + jitter * JITTER_SPREAD));
}

/** The largest delay backoffDelay can return for any attempt (worst-case waits in comments and reports). */
export function maxBackoffDelay(b: Backoff): number {
  return Math.round(b.maxMs * (JITTER_LOW + JITTER_SPREAD));
}

/**
 * `p`'s outcome, or a rejection with `onTimeout()` after `ms`; the timer is cleared either way. The caller
 * chooses the error (its class and code say what was late). `p` is not cancelled: the caller cleans up after it.
 */
export async function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => PostcopyError): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}
