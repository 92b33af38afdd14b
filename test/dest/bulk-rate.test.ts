// D's bulk cap (DestAgentOptions.bulkRate) through the real streamer, fetcher and path model over the simulated
// bottleneck (test/helpers/path-sim.ts) on vitest's fake clock: the stream runs at the cap when the path is faster,
// follows a live change of the cap at once, runs at the path's rate when the cap is above it, and a guest's demand
// reads wait about a round trip, not for the cap.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import fc from 'fast-check';
import { TokenBucket } from '../../src/common/token-bucket.js';
import { PathEstimator } from '../../src/dest/path-estimator.js';
import { pathLimitsUpTo } from '../../src/dest/path-constants.js';
import { fcParams } from '../helpers/fc.js';
import { goodputBetween, quantile, simulate, SIM_BLOCK } from '../helpers/path-sim.js';

const MiB = 1024 * 1024;
/** MiB/s as the simulation's bytes per ms, and back. */
const perMs = (mibps: number) => (mibps * MiB) / 1000;
const mibps = (bytesPerMs: number) => (bytesPerMs * 1000) / MiB;
const blocksOf = (bytes: number) => bytes / SIM_BLOCK;

beforeEach(() => vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'performance', 'Date'] }));
afterEach(() => vi.useRealTimers());

describe("D's bulk cap over a simulated path", () => {
  it('a 400 MiB/s path capped at 50 MiB/s: the stream runs at 50 MiB/s within 2 %, the pacing reports the cap', () => {
    const cap = new TokenBucket(50 * MiB);
    const r = simulate({ blocks: blocksOf(150 * MiB), path: { rttMs: 10, rate: perMs(400) }, bulkRate: cap });
    expect(r.doneMs).toBeGreaterThan(0);
    const steady = mibps(goodputBetween(r, 200, r.doneMs - 50));
    expect(steady).toBeGreaterThan(49);
    expect(steady).toBeLessThan(51);
    // Over the whole run too: the first window goes at once (a small part of three seconds).
    expect(mibps(r.goodput)).toBeLessThan(50 * 1.03);
    expect(r.fetcher.path.report(performance.now()).pacingBytesPerSec).toBe(50 * MiB);
  });

  it('follows a live change of the cap at once, and lifted, runs at the path again', () => {
    const cap = new TokenBucket(20 * MiB);
    setTimeout(() => cap.setRate(80 * MiB), 1500);
    setTimeout(() => cap.setRate(null), 3000);
    const r = simulate({ blocks: blocksOf(800 * MiB), path: { rttMs: 20, rate: perMs(200) }, bulkRate: cap });
    expect(mibps(goodputBetween(r, 500, 1500))).toBeCloseTo(20, 0);
    expect(mibps(goodputBetween(r, 1600, 3000))).toBeCloseTo(80, -0.5);
    // Lifted: the model was kept (samples under the cap never lowered it), so the path's rate comes back quickly.
    expect(mibps(goodputBetween(r, 3500, 4500))).toBeGreaterThanOrEqual(0.85 * 200);
  });

  it('raised from a crawl, the stream does not sleep out a wake-up timed for the old rate', () => {
    // At 10 KiB/s the next request is due seconds away; the raise re-paces at once.
    const cap = new TokenBucket(10 * 1024);
    setTimeout(() => cap.setRate(50 * MiB), 1000);
    const r = simulate({ blocks: blocksOf(128 * MiB), path: { rttMs: 10, rate: perMs(400) }, bulkRate: cap, limitMs: 2500 });
    expect(mibps(goodputBetween(r, 0, 1000))).toBeLessThan(0.5);
    expect(mibps(goodputBetween(r, 1100, 2000))).toBeCloseTo(50, -0.5);
  });

  it('a cap above the path changes nothing: the path is the limit', () => {
    const r = simulate({ blocks: blocksOf(256 * MiB), path: { rttMs: 20, rate: perMs(100) }, bulkRate: new TokenBucket(1000 * MiB) });
    expect(mibps(goodputBetween(r, r.doneMs / 2, r.doneMs))).toBeGreaterThanOrEqual(90);
  });

  it('a tiny cap (1 MiB/s) never holds a demand read: each waits about a round trip', () => {
    const r = simulate({ blocks: blocksOf(64 * MiB), path: { rttMs: 20, rate: perMs(100) }, bulkRate: new TokenBucket(MiB), demandEveryMs: 20, limitMs: 4000 });
    const waits = r.demand.map(([, ms]) => ms);
    expect(waits.length).toBeGreaterThan(50);
    // A 64 KiB read at the cap would take 62 ms on its own; it takes the round trip and its transfer.
    expect(quantile(waits, 0.99)).toBeLessThanOrEqual(20 + 3);
    // The stream stays under the cap (demand reads spend from it too): what arrived but the demand reads' blocks.
    const bulkBytes = r.goodput * 4000 - r.demand.length * SIM_BLOCK;
    expect(mibps(bulkBytes / 4000)).toBeLessThanOrEqual(1.05);
  });

  it('any cap below the path (RTT 10..60 ms): the stream runs within 3 % of the cap once it is measured', () => {
    fc.assert(
      fc.property(fc.integer({ min: 10, max: 60 }), fc.integer({ min: 5, max: 150 }), (rttMs, capMiBps) => {
        const bytes = Math.ceil((2.5 * capMiBps * MiB) / (8 * MiB)) * 8 * MiB;
        const r = simulate({ blocks: blocksOf(bytes), path: { rttMs, rate: perMs(200) }, bulkRate: new TokenBucket(capMiBps * MiB) });
        expect(r.doneMs).toBeGreaterThan(0);
        const steady = mibps(goodputBetween(r, 500, r.doneMs - 100));
        expect(steady).toBeGreaterThan(0.97 * capMiBps);
        expect(steady).toBeLessThan(1.03 * capMiBps);
      }),
      fcParams(12),
    );
  });
});

describe("D's bulk cap in the path model", () => {
  it('a request answered as zeroes gives back what it spent of the cap (no wire bytes crossed); uncapped, nothing changes', () => {
    const capped = new PathEstimator(pathLimitsUpTo(), () => 0, 0, new TokenBucket(MiB));
    const burst = 128 * 1024;
    expect(capped.allowance(0, burst)).toBe(burst);
    capped.onSend(0, 0, 256 * 1024);
    expect(capped.allowance(0, burst)).toBe(burst - 256 * 1024);
    capped.onZeroReply(256 * 1024);
    expect(capped.allowance(1, burst)).toBeCloseTo(burst, -2);
    expect(capped.pacingRate(1)).toBeCloseTo(MiB / 1000);
    const free = new PathEstimator(pathLimitsUpTo(), () => 0, 0);
    expect(free.allowance(0, burst)).toBe(Infinity);
    free.onZeroReply(256 * 1024);
    expect(free.allowance(0, burst)).toBe(Infinity);
  });
});
