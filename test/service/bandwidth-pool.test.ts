// The host's bandwidth shared by water-filling (src/service/bandwidth-pool.ts): every join, leave and own-cap change
// re-rates every share at once; shares never sum above the host's cap, none above its own, and they are max-min fair.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BandwidthPool, waterFill, type PoolShare } from '../../src/service/bandwidth-pool.js';
import { fcParams } from '../helpers/fc.js';

const MiB = 1024 * 1024;

/** The allocation's checks: within the host and each cap, work-conserving, and max-min fair (within 1 B/s of rounding). */
function expectFair(host: number | null, caps: ReadonlyArray<number | null>, rates: ReadonlyArray<number | null>): void {
  expect(rates).toHaveLength(caps.length);
  if (host === null) {
    expect(rates).toEqual(caps);
    return;
  }
  const r = rates.map((x) => x!);
  for (const x of r) expect(x).toBeGreaterThanOrEqual(1);
  const sum = r.reduce((a, b) => a + b, 0);
  if (caps.length <= host) expect(sum).toBeLessThanOrEqual(host);
  caps.forEach((c, i) => {
    if (c !== null) expect(r[i]).toBeLessThanOrEqual(Math.max(1, c));
    // A job below its own cap is held back only by fairness: nobody gets more than it (beyond rounding).
    if (c === null || r[i]! < c) {
      for (const other of r) expect(other).toBeLessThanOrEqual(r[i]! + 1);
    }
  });
  // Nothing left unused while some job could take more.
  if (caps.some((c, i) => c === null || r[i]! < c)) expect(sum).toBeGreaterThanOrEqual(Math.min(host, Number.MAX_SAFE_INTEGER) - caps.length);
}

describe('waterFill', () => {
  it('splits equally, and a job capped below its share gives the rest to the others', () => {
    expect(waterFill(90, [null, null, null])).toEqual([30, 30, 30]);
    expect(waterFill(90, [10, null, null])).toEqual([10, 40, 40]);
    expect(waterFill(90, [10, 50, 20])).toEqual([10, 50, 20]);
    expect(waterFill(90, [100, 35, null])).toEqual([30, 30, 30]);
    // Whole bytes per second: the last of the equal ones takes the remainder.
    expect(waterFill(90, [100, 25, null])).toEqual([32, 25, 33]);
    expect(waterFill(null, [5, null])).toEqual([5, null]);
    expect(waterFill(100, [])).toEqual([]);
  });

  it('any host cap and own caps: sum ≤ host, each ≤ its cap, max-min fair', () => {
    const cap = fc.option(fc.integer({ min: 1, max: 1_000 * MiB }), { nil: null });
    fc.assert(
      fc.property(fc.option(fc.integer({ min: 1, max: 2_000 * MiB }), { nil: null }), fc.array(cap, { maxLength: 20 }), (host, caps) => {
        expectFair(host, caps, waterFill(host, caps));
      }),
      fcParams(),
    );
  });
});

describe('BandwidthPool', () => {
  it('re-rates every running job live on join, set-speed and leave', () => {
    const pool = new BandwidthPool(100 * MiB);
    const a = pool.join(null);
    expect(a.effective).toBe(100 * MiB);
    const changes: number[] = [];
    a.limit.onChange(() => changes.push(a.limit.bytesPerSecond!));
    const b = pool.join(10 * MiB);
    expect([a.effective, b.effective]).toEqual([90 * MiB, 10 * MiB]);
    const c = pool.join(null);
    expect([a.effective, b.effective, c.effective]).toEqual([45 * MiB, 10 * MiB, 45 * MiB]);
    b.setOwnCap(null);
    expect([a, b, c].map((s) => s.effective)).toEqual([100, 100, 100].map((x) => expect.closeTo((x * MiB) / 3, -1)));
    b.leave();
    expect([a.effective, c.effective]).toEqual([50 * MiB, 50 * MiB]);
    expect(pool.size).toBe(2);
    b.leave();
    expect(pool.size).toBe(2);
    expect(changes.at(-1)).toBe(50 * MiB);
    expect(a.limit.bytesPerSecond).toBe(a.effective);
  });

  it('without a host cap a job runs at its own cap, or unlimited', () => {
    const pool = new BandwidthPool(null);
    const a = pool.join(null);
    const b = pool.join(5 * MiB);
    expect([a.effective, b.effective]).toEqual([null, 5 * MiB]);
    b.setOwnCap(7 * MiB);
    expect(b.limit.bytesPerSecond).toBe(7 * MiB);
  });

  it('refuses a cap that is not positive', () => {
    expect(() => new BandwidthPool(0)).toThrow(RangeError);
    expect(() => new BandwidthPool(10).join(-5)).toThrow(RangeError);
  });

  it('any sequence of joins, leaves and own-cap changes: the live shares are the water-filling of the jobs present', () => {
    const cap = fc.option(fc.integer({ min: 1, max: 500 * MiB }), { nil: null });
    const op = fc.oneof(
      fc.record({ kind: fc.constant('join' as const), cap }),
      fc.record({ kind: fc.constant('leave' as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant('speed' as const), pick: fc.nat(), cap }),
    );
    fc.assert(
      fc.property(fc.option(fc.integer({ min: 1, max: 1_000 * MiB }), { nil: null }), fc.array(op, { maxLength: 40 }), (host, ops) => {
        const pool = new BandwidthPool(host);
        const live: PoolShare[] = [];
        for (const o of ops) {
          if (o.kind === 'join') live.push(pool.join(o.cap));
          else if (live.length > 0 && o.kind === 'leave') live.splice(o.pick % live.length, 1)[0]!.leave();
          else if (live.length > 0 && o.kind === 'speed') live[o.pick % live.length]!.setOwnCap(o.cap);
          const caps = live.map((s) => s.ownCap);
          const rates = live.map((s) => s.effective);
          expectFair(host, caps, rates);
          // What the agents see is what the pool says.
          for (const s of live) expect(s.limit.bytesPerSecond).toBe(s.effective);
        }
        expect(pool.size).toBe(live.length);
      }),
      fcParams(),
    );
  });
});
