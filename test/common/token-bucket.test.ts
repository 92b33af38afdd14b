// The bulk rate cap (src/common/token-bucket.ts) on a manual clock: grants follow the rate, a live change applies at
// once and wakes waiters, and over any sequence of takes and rate changes the bytes granted stay under the
// integral of the rate plus one burst, while a steady backlog gets the whole rate.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { TokenBucket } from '../../src/common/token-bucket.js';
import { RATE_BURST_MS, RATE_MIN_BURST_BYTES } from '../../src/common/constants.js';
import { BULK_CHUNK_BYTES } from '../../src/protocol/constants.js';
import { fcParams } from '../helpers/fc.js';
import { ManualClock, flushMicrotasks } from '../helpers/manual-clock.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Takes `bytes` and records when the grant came (the clock's time as the promise settled). */
function recorder(bucket: TokenBucket, clock: ManualClock) {
  const grants: Array<{ bytes: number; at: number; asked: number }> = [];
  const take = (bytes: number) => {
    const asked = clock.now();
    const p = bucket.take(bytes);
    if (p === undefined) grants.push({ bytes, at: asked, asked });
    else void p.then(() => grants.push({ bytes, at: clock.now(), asked }));
  };
  return { grants, take, total: () => grants.reduce((n, g) => n + g.bytes, 0) };
}

describe('TokenBucket', () => {
  it('the minimum burst is one bulk chunk', () => {
    expect(RATE_MIN_BURST_BYTES).toBe(BULK_CHUNK_BYTES);
  });

  it('unlimited: every take goes at once, synchronously', () => {
    const b = new TokenBucket(null, new ManualClock());
    expect(b.take(1e12)).toBeUndefined();
    expect(b.bytesPerSecond).toBeNull();
  });

  it('a full bucket lets a burst go at once, then grants at the rate', async () => {
    const clock = new ManualClock();
    const b = new TokenBucket(MiB, clock);
    const r = recorder(b, clock);
    expect(b.burstBytes).toBe(RATE_MIN_BURST_BYTES);
    r.take(256 * KiB);
    expect(r.total()).toBe(256 * KiB);
    for (let i = 0; i < 8; i++) r.take(64 * KiB);
    await flushMicrotasks();
    expect(r.total()).toBe(256 * KiB);
    await clock.advance(1000);
    // A second at 1 MiB/s: 16 more 64 KiB takes' worth, 8 were waiting.
    expect(r.total()).toBe(768 * KiB);
    expect(r.grants.slice(1).map((g) => g.at)).toEqual([63, 125, 188, 250, 313, 375, 438, 500].map((ms) => expect.closeTo(ms, -1)));
  });

  it('a fast rate bursts a few milliseconds of itself', () => {
    const b = new TokenBucket(1000 * MiB, new ManualClock());
    expect(b.burstBytes).toBeCloseTo((1000 * MiB * RATE_BURST_MS) / 1000);
  });

  it('a take larger than the burst is granted in parts, never more than the rate allows', async () => {
    const clock = new ManualClock();
    const b = new TokenBucket(MiB, clock);
    const r = recorder(b, clock);
    r.take(2 * MiB);
    await clock.advance(1700);
    expect(r.total()).toBe(0);
    await clock.advance(100);
    expect(r.total()).toBe(2 * MiB);
    expect(r.grants[0]!.at).toBeCloseTo(1750, -1);
  });

  it('setRate applies at once and wakes a waiter that would otherwise wait long', async () => {
    const clock = new ManualClock();
    const b = new TokenBucket(1024, clock); // 1 KiB/s: the burst is one chunk
    const r = recorder(b, clock);
    const changes: number[] = [];
    const off = b.onChange(() => changes.push(b.bytesPerSecond ?? -1));
    r.take(256 * KiB);
    r.take(256 * KiB);
    await clock.advance(10);
    expect(r.total()).toBe(256 * KiB);
    b.setRate(256 * MiB);
    await clock.advance(2);
    expect(r.total()).toBe(512 * KiB);
    b.setRate(null);
    r.take(100 * MiB);
    await flushMicrotasks();
    expect(r.total()).toBe(512 * KiB + 100 * MiB);
    expect(changes).toEqual([256 * MiB, -1]);
    off();
    b.setRate(5);
    expect(changes).toHaveLength(2);
  });

  it('to unlimited releases every waiter at once', async () => {
    const clock = new ManualClock();
    const b = new TokenBucket(1000, clock);
    const r = recorder(b, clock);
    for (let i = 0; i < 5; i++) r.take(300 * KiB);
    b.setRate(null);
    await flushMicrotasks();
    expect(r.total()).toBe(1500 * KiB);
    expect(b.waiting).toBe(0);
    expect(clock.pendingTimers).toBe(0);
  });

  it('refuses a rate that is not a positive number', () => {
    expect(() => new TokenBucket(0)).toThrow(RangeError);
    expect(() => new TokenBucket(Number.NaN)).toThrow(RangeError);
    expect(() => new TokenBucket(5).setRate(-1)).toThrow(RangeError);
  });

  it('a steady backlog over 10 s gets the rate within 0.5 %', async () => {
    const clock = new ManualClock();
    const rate = 20 * MiB;
    const b = new TokenBucket(rate, clock);
    const r = recorder(b, clock);
    // Keep 8 chunk-sized takes waiting, as S's block server does with a window of requests.
    const top = () => {
      while (b.waiting < 8) r.take(BULK_CHUNK_BYTES);
    };
    for (let t = 0; t < 10_000; t += 10) {
      top();
      await clock.advanceTo(t + 10);
    }
    expect(r.total() / 10 / rate).toBeGreaterThan(0.995);
    expect(r.total() / 10 / rate).toBeLessThan(1.005 + b.burstBytes / 10 / rate);
  });

  it('over any takes and rate changes: granted by t (and in any span) ≤ ∫ rate + burst, and what is owed at the end drains at the rate', async () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('take' as const), gapMs: fc.integer({ min: 0, max: 40 }), bytes: fc.integer({ min: 1, max: 1024 * KiB }) }),
      fc.record({ kind: fc.constant('rate' as const), gapMs: fc.integer({ min: 0, max: 40 }), bps: fc.integer({ min: 10 * KiB, max: 200 * MiB }) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 10 * KiB, max: 200 * MiB }), fc.array(op, { maxLength: 60 }), async (rate0, ops) => {
        const clock = new ManualClock();
        const b = new TokenBucket(rate0, clock);
        const burst0 = b.burstBytes;
        const r = recorder(b, clock);
        // The rate as a step function: [from ms, bytes/s].
        const steps: Array<[number, number]> = [[0, rate0]];
        const integral = (t: number) => {
          let sum = 0;
          for (let i = 0; i < steps.length; i++) {
            const [from, bps] = steps[i]!;
            const to = Math.min(t, steps[i + 1]?.[0] ?? Infinity);
            if (to > from) sum += (bps * (to - from)) / 1000;
          }
          return sum;
        };
        let asked = 0;
        for (const o of ops) {
          await clock.advance(o.gapMs);
          if (o.kind === 'take') {
            asked += o.bytes;
            r.take(o.bytes);
          } else {
            b.setRate(o.bps);
            steps.push([clock.now(), o.bps]);
          }
          await flushMicrotasks();
        }
        // What is still owed at the end drains at the last rate with no idle time: done within a millisecond of
        // when the rate says (timers round up; tokens accrue exactly, so the rounding never adds up).
        const opsEnd = clock.now();
        const owed = asked - r.total();
        const last = steps.at(-1)![1];
        await clock.advanceTo(opsEnd + Math.ceil((owed * 1000) / last) + 1);
        expect(r.total()).toBe(asked);
        let granted = 0;
        for (const g of r.grants) {
          granted += g.bytes;
          expect(granted).toBeLessThanOrEqual(integral(g.at) + burst0 + 1e-6 * granted);
        }
        // The same over any span [s, t] (an idle spell saves up one burst, no more): the takes asked for from s on
        // and granted by t.
        const maxBurst = Math.max(...steps.map(([, bps]) => new TokenBucket(bps, clock).burstBytes));
        for (const from of r.grants) {
          for (const to of r.grants) {
            if (to.at < from.asked) continue;
            const inSpan = r.grants.filter((g) => g.asked >= from.asked && g.at <= to.at).reduce((n, g) => n + g.bytes, 0);
            expect(inSpan).toBeLessThanOrEqual(integral(to.at) - integral(from.asked) + maxBurst + 1e-6 * inSpan);
          }
        }
        expect(clock.pendingTimers).toBe(0);
      }),
      fcParams(100),
    );
  });
});
