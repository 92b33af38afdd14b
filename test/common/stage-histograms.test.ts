import { describe, expect, it } from 'vitest';
import { bucketOf, StageHistograms } from '../../src/common/stage-histograms.js';
import { DemandStages } from '../../src/dest/demand-stages.js';

describe('stage histograms', () => {
  it('puts a sample in the bucket of the least power of two above it', () => {
    expect(bucketOf(0)).toBe(0);
    expect(bucketOf(0.9)).toBe(0);
    expect(bucketOf(1)).toBe(1); // [1, 2)
    expect(bucketOf(1.99)).toBe(1);
    expect(bucketOf(2)).toBe(2); // [2, 4)
    expect(bucketOf(1023)).toBe(10);
    expect(bucketOf(1024)).toBe(11);
    expect(bucketOf(2 ** 40)).toBe(31);
    expect(bucketOf(Number.NaN)).toBe(0);
  });

  it('reports count, percentiles, max and the buckets in milliseconds', () => {
    const h = new StageHistograms(['a', 'b'] as const);
    for (let i = 1; i <= 100; i++) h.record('a', i / 1000); // 1..100 µs
    const s = h.summary();
    expect(s.a.count).toBe(100);
    expect(s.a.p50Ms).toBeCloseTo(0.05, 3);
    expect(s.a.p99Ms).toBeCloseTo(0.099, 3);
    expect(s.a.maxMs).toBeCloseTo(0.1, 4);
    // µs: 1 → [1,2); 2,3 → [2,4); 4..7; 8..15; 16..31; 32..63; 64..100 → [64,128), bounds said in ms
    expect(s.a.buckets).toEqual([
      [0.002, 1],
      [0.004, 2],
      [0.008, 4],
      [0.016, 8],
      [0.032, 16],
      [0.064, 32],
      [0.128, 37],
    ]);
    expect(s.b).toEqual({ count: 0, p50Ms: 0, p99Ms: 0, maxMs: 0, buckets: [] });
    expect(h.brief().a).toEqual({ count: 100, p50Ms: s.a.p50Ms, p99Ms: s.a.p99Ms });
  });
});

describe('demand stages', () => {
  it('splits an answered miss into its stages, from the fetch the read waited for last', () => {
    const d = new DemandStages();
    const trace: { receivedAt: number; answered?: (at: number) => void } = { receivedAt: 10 };
    const early = { queuedAt: 10.1, socketAt: 10.2, replyAt: 10.5, writtenAt: 10.6 };
    const late = { queuedAt: 10.1, socketAt: 10.3, replyAt: 11.0, writtenAt: 11.2 };
    d.track(trace, [early, late]);
    trace.answered!(11.5);
    const s = d.summary();
    const ms = (stage: keyof typeof s) => s[stage].maxMs;
    expect(ms('total')).toBeCloseTo(1.5, 3);
    expect(ms('export-to-queued')).toBeCloseTo(0.1, 3);
    expect(ms('queued-to-socket')).toBeCloseTo(0.2, 3);
    expect(ms('socket-to-reply')).toBeCloseTo(0.7, 3);
    expect(ms('reply-to-written')).toBeCloseTo(0.2, 3);
    expect(ms('written-to-answered')).toBeCloseTo(0.3, 3);
  });

  it('counts a read that joined a fetch queued before it as zero wait to queue', () => {
    const d = new DemandStages();
    const trace: { receivedAt: number; answered?: (at: number) => void } = { receivedAt: 20 };
    d.track(trace, [{ queuedAt: 19, socketAt: 19.1, replyAt: 20.5, writtenAt: 20.6 }]);
    trace.answered!(20.7);
    expect(d.summary()['export-to-queued'].maxMs).toBeLessThan(0.001);
    expect(d.summary().total.count).toBe(1);
  });

  it('records only the total when the fetch never finished its stages (e.g. served around a failing disk)', () => {
    const d = new DemandStages();
    const trace: { receivedAt: number; answered?: (at: number) => void } = { receivedAt: 1 };
    d.track(trace, [{ queuedAt: 1.1 }]);
    trace.answered!(2);
    expect(d.summary().total.count).toBe(1);
    expect(d.summary()['socket-to-reply'].count).toBe(0);
  });
});
