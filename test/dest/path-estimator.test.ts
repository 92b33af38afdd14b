// The path model on its own (pure: the test passes the time): min RTT, the bottleneck's rate from delivery samples,
// the phases and what each allows (window, pacing), and the bounds the operator sets.
import { describe, expect, it } from 'vitest';
import { PathEstimator } from '../../src/dest/path-estimator.js';
import { pathLimitsUpTo } from '../../src/dest/path-constants.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** An estimator whose bulk bytes in flight the test sets. */
function model(maxWindow = 64 * MiB) {
  let inflight = 0;
  const path = new PathEstimator(pathLimitsUpTo(maxWindow), () => inflight, 0);
  return { path, setInflight: (n: number) => void (inflight = n) };
}

/**
 * Feed rounds of a steady path: each round, `perRound` bytes are asked for at its start, one request per `chunk`,
 * and their replies arrive evenly over the next `rttMs` (the bottleneck's pace), each first byte `rttSeen` after its
 * request as the link measures it. Returns the time after the last round.
 */
function steadyRounds(m: ReturnType<typeof model>, from: number, rounds: number, rttMs: number, perRound: number, chunk = 64 * KiB, rttSeen = rttMs): number {
  let t = from;
  for (let r = 0; r < rounds; r++) {
    const n = Math.max(1, Math.round(perRound / chunk));
    const stamps = Array.from({ length: n }, (_, i) => m.path.onSend(t, i * chunk, chunk));
    for (let i = 0; i < n; i++) {
      const at = t + ((i + 1) * rttMs) / n;
      m.path.onRtt(rttSeen, at);
      m.path.onDelivered(chunk, at);
      m.path.onDone(stamps[i]!, at);
    }
    t += rttMs;
  }
  return t;
}

describe('path model', () => {
  it('knows nothing at first: the window is its floor (1 MiB, 512 KiB for a waiting guest), nothing is paced', () => {
    const { path } = model();
    expect(path.windowBytes(0)).toBe(MiB);
    expect(path.pacingRate(0)).toBeNull();
    expect(path.allowance(0, 0)).toBe(Infinity);
    path.setHeadroom(true);
    expect(path.windowBytes(0)).toBe(512 * KiB);
    expect(path.report(0)).toMatchObject({ phase: 'startup', minRttMs: null, rttMs: null, bottleneckBytesPerSec: null, pacingBytesPerSec: null });
  });

  it('--bulk-window bounds everything, the floors too, and a path whose BDP is larger', () => {
    const { path } = model(128 * KiB);
    expect(path.windowBytes(0)).toBe(128 * KiB);
    path.setHeadroom(true);
    expect(path.windowBytes(0)).toBe(128 * KiB);
    // 100 MiB/s over 20 ms: 2 MiB in flight would fill it; --bulk-window 1M allows 1 MiB in every phase.
    const m = model(MiB);
    m.path.onRtt(20, 0);
    let t = 0;
    for (let r = 0; r < 30; r++) {
      t = steadyRounds(m, t, 1, 20, 2 * MiB);
      expect(m.path.windowBytes(t)).toBeLessThanOrEqual(MiB);
    }
    expect(m.path.bdp).toBeGreaterThan(MiB);
  });

  it('the min RTT is the lowest sample; older than 10 s it is measured again (probe-rtt once the pipe is full)', () => {
    const { path } = model();
    path.onRtt(30, 0);
    path.onRtt(20, 100);
    path.onRtt(25, 200);
    expect(path.minRttMs).toBe(20);
    path.onRtt(40, 10_101);
    expect(path.minRttMs).toBe(40);
    expect(path.srttMs).toBeGreaterThan(20);
  });

  it('a steady path: startup finds the rate, drains, cruises at about one BDP in flight and the rate', () => {
    const m = model();
    m.path.onRtt(20, 0);
    // 100 MiB/s for 20 ms = 2 MiB a round trip.
    const rate = (100 * MiB) / 1000;
    const t = steadyRounds(m, 0, 30, 20, 2 * MiB);
    expect(m.path.phase).not.toBe('startup');
    expect(m.path.bottleneckRate).toBeGreaterThan(rate * 0.9);
    expect(m.path.bottleneckRate).toBeLessThan(rate * 1.25);
    m.setInflight(0);
    expect(m.path.phase).toBe('probe-bw');
    const w = m.path.windowBytes(t);
    expect(w).toBeGreaterThanOrEqual(2 * MiB * 0.9 * 2);
    expect(w).toBeLessThanOrEqual(2 * MiB * 1.25 * 2);
  });

  it('a waiting guest: the pacing stays below the estimate (no probing above it beyond a tenth), and its samples cannot lower it', () => {
    const m = model();
    m.path.onRtt(20, 0);
    let t = steadyRounds(m, 0, 30, 20, 2 * MiB);
    m.setInflight(0);
    const before = m.path.bottleneckRate;
    m.path.setHeadroom(true);
    const ratios: number[] = [];
    for (let i = 0; i < 40; i++) {
      const pacing = m.path.pacingRate(t)!;
      ratios.push(pacing / m.path.bottleneckRate);
      expect(pacing).toBeLessThanOrEqual(before * 1.1 + 1e-9);
      // A guest's reads leave headroom: a round trip of half the rate, well below the estimate, every time.
      t = steadyRounds(m, t, 1, 20, MiB);
    }
    // Outside its probes (a tenth above, now and then) bulk goes at 95 % of the estimate at most.
    ratios.sort((a, b) => a - b);
    expect(ratios[Math.floor(ratios.length / 2)]).toBeLessThanOrEqual(0.95 + 1e-9);
    expect(m.path.bottleneckRate).toBeGreaterThanOrEqual(before);
  });

  it('a queue that stands through a round while less arrives than was asked pulls the estimate down to what was delivered', () => {
    const m = model();
    m.path.onRtt(20, 0);
    let t = steadyRounds(m, 0, 30, 20, 2 * MiB);
    const high = m.path.bottleneckRate;
    // The path halves: each round asks for 2 MiB but carries 1 MiB per 20 ms, and every sample sees a 10 ms queue.
    for (let r = 0; r < 3; r++) {
      m.path.onSend(t, 1, MiB);
      t = steadyRounds(m, t, 1, 20, MiB, 64 * KiB, 30);
    }
    expect(m.path.queueing).toBe(true);
    expect(m.path.bottleneckRate).toBeLessThan(high * 0.75);
    // While the queue stands, bulk is paced below the estimate.
    expect(m.path.pacingRate(t)!).toBeLessThan(m.path.bottleneckRate);
  });

  it('replies late because S is slow (all that was asked still arrives) leave the estimate where it is', () => {
    const m = model();
    m.path.onRtt(20, 0);
    let t = steadyRounds(m, 0, 30, 20, 2 * MiB);
    const high = m.path.bottleneckRate;
    // A slow disk under S: every reply 15 ms late, and the rounds carry what they asked for.
    t = steadyRounds(m, t, 20, 20, MiB, 64 * KiB, 35);
    expect(m.path.queueing).toBe(true);
    expect(m.path.bottleneckRate).toBe(high);
  });

  it('startup leaves at once when the latest RTT samples all show a queue, from its second round on', () => {
    const m = model();
    m.path.onRtt(20, 0);
    // Round one: the opening burst queues for a moment whatever the path; startup stays.
    const stamp = m.path.onSend(0, 0, 64 * KiB);
    for (let i = 0; i < 8; i++) m.path.onRtt(20 + 2 + 3, 10 + i);
    expect(m.path.phase).toBe('startup');
    m.path.onDelivered(64 * KiB, 20);
    m.path.onDone(stamp, 20);
    const t = steadyRounds(m, 20, 1, 20, 256 * KiB);
    expect(m.path.phase).toBe('startup');
    for (let i = 0; i < 7; i++) m.path.onRtt(25, t + i);
    expect(m.path.phase).toBe('startup');
    m.path.onRtt(25, t + 7);
    expect(m.path.phase).toBe('drain');
  });

  it('every request spends from the pacing allowance, a demand read too; the allowance refills at the pacing rate', () => {
    const m = model();
    m.path.onRtt(20, 0);
    const t = steadyRounds(m, 0, 30, 20, 2 * MiB);
    m.setInflight(0);
    const rate = m.path.pacingRate(t)!;
    const full = m.path.allowance(t, 0);
    m.path.onSend(t, 0, full + 64 * KiB);
    expect(m.path.allowance(t, 0)).toBeCloseTo(-64 * KiB, 0);
    expect(m.path.allowance(t + (64 * KiB) / rate, 0)).toBeCloseTo(0, 0);
  });
});
