// ServiceMetrics: the exposition it writes, read back with a reader of our own: job counts with stable series,
// per-job gauges that follow the job list, counters that never fall, the demand-fetch histogram's buckets.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { JOB_STATES, type JobStatus } from '../../src/service/job-types.js';
import { DEMAND_FETCH_BUCKETS, METRIC, ServiceMetrics } from '../../src/service/metrics.js';
import { MonotonicSums } from '../../src/service/metrics-totals.js';
import { fcParams } from '../helpers/fc.js';
import { jobStatus, parseExposition, pick, valueOf } from './metrics-fixtures.js';

function metricsOf(list: { jobs: JobStatus[] }): ServiceMetrics {
  return new ServiceMetrics(() => list.jobs);
}

async function scrape(m: ServiceMetrics) {
  return parseExposition(await m.metricsText());
}

describe('ServiceMetrics', () => {
  it('counts jobs by role and phase, with a zero series for every state and phase from the first scrape on', async () => {
    const list = { jobs: [] as JobStatus[] };
    const m = metricsOf(list);
    let s = await scrape(m);
    for (const role of ['source', 'dest']) {
      for (const phase of [...JOB_STATES, 'postcopy', 'connecting']) {
        if (role === 'dest' && phase === 'connecting') continue;
        expect(valueOf(s, METRIC.jobs, { role, phase })).toBe(0);
      }
    }
    list.jobs = [
      jobStatus({ id: 'a', role: 'source', state: 'queued', phase: 'queued' }),
      jobStatus({ id: 'b', role: 'source', state: 'queued', phase: 'queued' }),
      jobStatus({ id: 'c', role: 'dest', phase: 'postcopy' }),
      jobStatus({ id: 'd', role: 'dest', phase: 'some-new-phase' }),
    ];
    s = await scrape(m);
    expect(valueOf(s, METRIC.jobs, { role: 'source', phase: 'queued' })).toBe(2);
    expect(valueOf(s, METRIC.jobs, { role: 'dest', phase: 'queued' })).toBe(0);
    expect(valueOf(s, METRIC.jobs, { role: 'dest', phase: 'postcopy' })).toBe(1);
    expect(valueOf(s, METRIC.jobs, { role: 'dest', phase: 'some-new-phase' })).toBe(1);
    expect(pick(s, METRIC.jobs).reduce((n, x) => n + x.value, 0)).toBe(4);
    // A phase seen once keeps its series, at zero, when no job is in it any more.
    list.jobs = [];
    s = await scrape(m);
    expect(valueOf(s, METRIC.jobs, { role: 'dest', phase: 'some-new-phase' })).toBe(0);
    expect(valueOf(s, METRIC.jobs, { role: 'source', phase: 'queued' })).toBe(0);
  });

  it("serves each job's data figures under its id and role, and drops a removed job's series", async () => {
    const a = jobStatus({ id: 'a', role: 'source', dataTotalBytes: 1000, dataProcessedBytes: 300, dataRemainingBytes: 700, bytesOnlyOnSource: 650 });
    const b = jobStatus({ id: 'b', role: 'dest', dataTotalBytes: 4096, dataProcessedBytes: 4096, dataRemainingBytes: 0, bytesOnlyOnSource: 0 });
    const list = { jobs: [a, b] };
    const m = metricsOf(list);
    let s = await scrape(m);
    expect(valueOf(s, METRIC.dataTotal, { job_id: 'a', role: 'source' })).toBe(1000);
    expect(valueOf(s, METRIC.dataProcessed, { job_id: 'a' })).toBe(300);
    expect(valueOf(s, METRIC.dataRemaining, { job_id: 'a' })).toBe(700);
    expect(valueOf(s, METRIC.onlyOnSource, { job_id: 'a' })).toBe(650);
    expect(valueOf(s, METRIC.dataProcessed, { job_id: 'b', role: 'dest' })).toBe(4096);
    list.jobs = [b];
    s = await scrape(m);
    for (const name of [METRIC.dataTotal, METRIC.dataProcessed, METRIC.dataRemaining, METRIC.onlyOnSource]) {
      expect(pick(s, name, { job_id: 'a' })).toEqual([]);
      expect(pick(s, name, { job_id: 'b' })).toHaveLength(1);
    }
  });

  it('reads the job list once per scrape, so every figure of a scrape comes from the same statuses', async () => {
    let calls = 0;
    const m = new ServiceMetrics(() => {
      calls++;
      return [jobStatus({ id: 'a', dataTotalBytes: 10, dataProcessedBytes: calls, dataRemainingBytes: 10 - calls })];
    });
    for (let i = 1; i <= 3; i++) {
      const s = await scrape(m);
      expect(calls).toBe(i);
      expect(valueOf(s, METRIC.dataProcessed) + valueOf(s, METRIC.dataRemaining)).toBe(10);
    }
  });

  it('keeps reconnects and block bytes monotonic when a job is removed, restarts from zero, or its id is reused', async () => {
    const list = { jobs: [] as JobStatus[] };
    const m = metricsOf(list);
    const totals = async () => {
      const s = await scrape(m);
      return {
        reconnects: valueOf(s, METRIC.reconnects, { role: 'dest' }),
        urgent: valueOf(s, METRIC.blockData, { role: 'dest', class: 'urgent' }),
        bulk: valueOf(s, METRIC.blockData, { role: 'dest', class: 'bulk' }),
        sourceBulk: valueOf(s, METRIC.blockData, { role: 'source', class: 'bulk' }),
      };
    };
    expect(await totals()).toEqual({ reconnects: 0, urgent: 0, bulk: 0, sourceBulk: 0 });
    list.jobs = [
      jobStatus({ id: 'a', reconnects: 2, bytesByClass: { urgent: 100, bulk: 1000 } }),
      jobStatus({ id: 'b', reconnects: 1, bytesByClass: { urgent: 10, bulk: 10 } }),
      jobStatus({ id: 's', role: 'source', bytesByClass: { urgent: 5, bulk: 7 } }),
    ];
    expect(await totals()).toEqual({ reconnects: 3, urgent: 110, bulk: 1010, sourceBulk: 7 });
    // a grows, b's record is removed: b's bytes stay counted.
    list.jobs = [jobStatus({ id: 'a', reconnects: 3, bytesByClass: { urgent: 150, bulk: 2000 } })];
    expect(await totals()).toEqual({ reconnects: 4, urgent: 160, bulk: 2010, sourceBulk: 7 });
    // a restarts from zero and gets a little way: counted as a reset, the total still grows.
    list.jobs = [jobStatus({ id: 'a', reconnects: 1, bytesByClass: { urgent: 5, bulk: 20 } })];
    expect(await totals()).toEqual({ reconnects: 5, urgent: 165, bulk: 2030, sourceBulk: 7 });
    // a is removed and a new job takes its id, already past a's old figures: counted from its own zero.
    list.jobs = [jobStatus({ id: 'a', createdAt: '2026-01-02T00:00:00.000Z', reconnects: 0, bytesByClass: { urgent: 0, bulk: 3000 } })];
    expect(await totals()).toEqual({ reconnects: 5, urgent: 165, bulk: 5030, sourceBulk: 7 });
  });

  it('sums per-job figures into totals that never fall and equal the growth seen, whatever the job list does', () => {
    // Each step: a job's figure grows, the job restarts (a figure below its last: a reset a sweep can see), or the
    // job is removed (and may come back as a new job under the same id).
    const step = fc.record({ job: fc.integer({ min: 0, max: 3 }), kind: fc.constantFrom('grow', 'restart', 'remove'), by: fc.nat(1000) });
    fc.assert(
      fc.property(fc.array(step, { maxLength: 60 }), (steps) => {
        const sums = new MonotonicSums<'x'>();
        const live = new Map<number, number>();
        const generation = new Map<number, number>();
        let expected = 0;
        let total = 0;
        for (const st of steps) {
          if (st.kind === 'remove') live.delete(st.job);
          else {
            if (!live.has(st.job)) generation.set(st.job, (generation.get(st.job) ?? 0) + 1);
            const value = live.get(st.job) ?? 0;
            const next = st.kind === 'grow' ? value + st.by : value > 0 ? st.by % value : 0;
            expected += st.kind === 'grow' ? st.by : next;
            live.set(st.job, next);
          }
          const before = total;
          const figures = [...live].map(([id, value]) => ({ job: `${id}/${generation.get(id)}`, series: 'x' as const, value }));
          total += sums.sweep(figures).get('x') ?? 0;
          expect(total).toBeGreaterThanOrEqual(before);
        }
        expect(total).toBe(expected);
      }),
      fcParams(),
    );
  });

  it('buckets demand-fetch latencies in seconds at 16 µs × 2^k up to 4.19 s, +Inf above', async () => {
    const m = metricsOf({ jobs: [] });
    expect(DEMAND_FETCH_BUCKETS[0]).toBe(0.000016);
    for (let k = 1; k < DEMAND_FETCH_BUCKETS.length; k++) expect(DEMAND_FETCH_BUCKETS[k]).toBe(DEMAND_FETCH_BUCKETS[k - 1]! * 2);
    expect(DEMAND_FETCH_BUCKETS.at(-1)).toBeCloseTo(4.194304, 9);
    let s = await scrape(m);
    expect(valueOf(s, `${METRIC.demandFetch}_count`, { role: 'dest' })).toBe(0);
    m.demandFetch('dest', 20e-6);
    m.demandFetch('dest', 16e-6);
    m.demandFetch('dest', 0.003);
    m.demandFetch('dest', 10);
    m.demandFetch('dest', Number.NaN);
    m.demandFetch('source', 0.5);
    s = await scrape(m);
    const le = (bound: string) => valueOf(s, `${METRIC.demandFetch}_bucket`, { role: 'dest', le: bound });
    expect(pick(s, `${METRIC.demandFetch}_bucket`, { role: 'dest' }).map((x) => x.labels.le)).toEqual([
      '0.000016', '0.000032', '0.000064', '0.000128', '0.000256', '0.000512', '0.001024', '0.002048', '0.004096', '0.008192',
      '0.016384', '0.032768', '0.065536', '0.131072', '0.262144', '0.524288', '1.048576', '2.097152', '4.194304', '+Inf',
    ]);
    expect(le('0.000016')).toBe(1);
    expect(le('0.000032')).toBe(2);
    expect(le('0.002048')).toBe(2);
    expect(le('0.004096')).toBe(3);
    expect(le('4.194304')).toBe(3);
    expect(le('+Inf')).toBe(4);
    expect(valueOf(s, `${METRIC.demandFetch}_count`, { role: 'dest' })).toBe(4);
    expect(valueOf(s, `${METRIC.demandFetch}_sum`, { role: 'dest' })).toBeCloseTo(10.003036, 9);
    expect(valueOf(s, `${METRIC.demandFetch}_count`, { role: 'source' })).toBe(1);
  });

  it("serves the process's RSS and event-loop delay; two services' metrics live in registries of their own", async () => {
    const one = metricsOf({ jobs: [jobStatus({ id: 'a', dataProcessedBytes: 1 })] });
    const two = metricsOf({ jobs: [jobStatus({ id: 'a', dataProcessedBytes: 2 })] });
    const [s1, s2] = [await scrape(one), await scrape(two)];
    expect(valueOf(s1, 'process_resident_memory_bytes')).toBeGreaterThan(1 << 20);
    expect(pick(s1, 'nodejs_eventloop_lag_p99_seconds')).toHaveLength(1);
    expect(pick(s1, 'nodejs_eventloop_lag_seconds')).toHaveLength(1);
    expect(valueOf(s1, METRIC.dataProcessed)).toBe(1);
    expect(valueOf(s2, METRIC.dataProcessed)).toBe(2);
    expect(one.registry.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
  });
});
