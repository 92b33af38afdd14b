// The one backoff rule and the one timeout race (src/common/retry.ts).
import { describe, expect, it, vi } from 'vitest';
import fc from 'fast-check';
import { backoffDelay, maxBackoffDelay, withTimeout } from '../../src/common/retry.js';
import { TimeoutError, HypervisorError } from '../../src/common/errors.js';
import { fcParams } from '../helpers/fc.js';

describe('backoffDelay', () => {
  const b = { initialMs: 100, maxMs: 5000 };

  it('doubles from initialMs without jitter at the midpoint', () => {
    expect([0, 1, 2, 3].map((n) => backoffDelay(n, b, 0.5))).toEqual([100, 200, 400, 800]);
  });

  it('is capped at maxMs', () => {
    expect(backoffDelay(6, b, 0.5)).toBe(5000);
    expect(backoffDelay(1_000, b, 0.5)).toBe(5000);
  });

  it('jitters by a quarter either way', () => {
    expect(backoffDelay(0, b, 0)).toBe(75);
    expect(backoffDelay(0, b, 0.999999)).toBe(125);
    expect(backoffDelay(1_000, b, 0.999999)).toBe(maxBackoffDelay(b));
  });

  it('never exceeds maxBackoffDelay and never goes below 3/4 of the first delay', () => {
    fc.assert(
      fc.property(fc.nat(10_000), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), fc.integer({ min: 1, max: 1000 }), fc.integer({ min: 1, max: 60_000 }), (n, j, initialMs, extra) => {
        const policy = { initialMs, maxMs: initialMs + extra };
        const d = backoffDelay(n, policy, j);
        expect(d).toBeLessThanOrEqual(maxBackoffDelay(policy));
        expect(d).toBeGreaterThanOrEqual(Math.floor(initialMs * 0.75));
      }),
      fcParams(),
    );
  });
});

describe('withTimeout', () => {
  it('passes the outcome through and clears its timer', async () => {
    vi.useFakeTimers();
    try {
      await expect(withTimeout(Promise.resolve(7), 1000, () => new TimeoutError('PC_ERR_TIMEOUT'))).resolves.toBe(7);
      await expect(withTimeout(Promise.reject(new Error('x')), 1000, () => new TimeoutError('PC_ERR_TIMEOUT'))).rejects.toThrow('x');
      expect(vi.getTimerCount()).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });

  it("rejects with the caller's error when the time runs out, and clears its timer", async () => {
    vi.useFakeTimers();
    try {
      const never = new Promise<never>(() => {});
      const p = withTimeout(never, 1000, () => new HypervisorError('PC_ERR_HYPERVISOR', 'late'));
      const seen = expect(p).rejects.toMatchObject({ code: 'PC_ERR_HYPERVISOR', detail: 'late' });
      await vi.advanceTimersByTimeAsync(999);
      expect(vi.getTimerCount()).toBe(1);
      await vi.advanceTimersByTimeAsync(1);
      await seen;
      await expect(p).rejects.toBeInstanceOf(HypervisorError);
      expect(vi.getTimerCount()).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });
});
