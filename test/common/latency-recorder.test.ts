import { describe, expect, it } from 'vitest';
import { LatencyRecorder } from '../../src/common/latency-recorder.js';

describe('LatencyRecorder', () => {
  it('is all zeroes with no samples', () => {
    expect(new LatencyRecorder().summary()).toEqual({ count: 0, p50Ms: 0, p99Ms: 0, maxMs: 0 });
  });

  it('gives p50, p99 and the exact max in ms, keeping sub-millisecond resolution', () => {
    const r = new LatencyRecorder();
    for (let i = 1; i <= 1000; i++) r.record(i / 1000); // 1 µs .. 1 ms
    const s = r.summary();
    expect(s.count).toBe(1000);
    expect(s.p50Ms).toBeCloseTo(0.5, 2);
    expect(s.p99Ms).toBeCloseTo(0.99, 2);
    expect(s.maxMs).toBeCloseTo(1, 6);
    expect(s.p99Ms).toBeLessThanOrEqual(s.maxMs);
  });

  it('keeps a long run in bounded memory with honest percentiles', () => {
    const r = new LatencyRecorder();
    for (let i = 0; i < 2_000_000; i++) r.record(i % 100 === 99 ? 50 : 1);
    const s = r.summary();
    expect(s.count).toBe(2_000_000);
    expect(s.p50Ms).toBeCloseTo(1, 2);
    expect(s.p99Ms).toBeCloseTo(1, 2);
    expect(s.maxMs).toBeCloseTo(50, 6);
  });
});

describe('LatencyRecorder.onRecord', () => {
  it('hands each sample on in ms as it is recorded, beside the summary', () => {
    const r = new LatencyRecorder();
    const seen: number[] = [];
    r.record(1);
    r.onRecord = (ms) => seen.push(ms);
    r.record(0.25);
    r.record(7);
    expect(seen).toEqual([0.25, 7]);
    expect(r.count).toBe(3);
  });
});
