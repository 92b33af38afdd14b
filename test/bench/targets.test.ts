// The bench's target evaluation and report on canned results: which limits say met / not met / not measured,
// the stream-rate condition of the stream target, the stage pooling and the stream rate over the reads' window.
// No timing is taken here: the figures are made up and the checks are on the arithmetic and the wording.
import { describe, expect, it } from 'vitest';
import type { BulkResult, ContenderResult } from '../../bench/macro/bulk.js';
import type { DemoResult } from '../../bench/macro/demo.js';
import type { LatencyMode, LatencyResult } from '../../bench/macro/latency.js';
import { renderMarkdown, renderStageSection } from '../../bench/lib/report.js';
import type { BenchResults, MachineFacts } from '../../bench/lib/results.js';
import { poolStages, readStages, type StageStats } from '../../bench/lib/stages.js';
import { latencySummary, spread } from '../../bench/lib/stats.js';
import { evaluateTargets } from '../../bench/lib/targets.js';
import { windowRate } from '../../bench/lib/window-rate.js';

const GiB = 2 ** 30;
const MiB = 2 ** 20;

const machine: MachineFacts = {
  date: '2025-01-01T00:00:00.000Z', command: 'npm run bench', cpus: 2, cpuModel: 'test', memGiB: 4, kernel: 'k', node: 'v20', os: 'os',
  tools: {}, workDir: '/tmp', workDirFs: 'tmpfs', gitCommit: 'abc', gitDirtyFiles: 0, loadAvgStart: [0, 0, 0], loadAvgEnd: [0, 0, 0], durationSec: 1, options: {},
};

function stage(p50Ms: number, p99Ms: number, count = 10): StageStats {
  return { count, p50Ms, p99Ms, maxMs: p99Ms * 2, buckets: [[0.064, count - 1], [0.128, 1]] };
}

function mode(samplesMs: number[], o: Partial<LatencyMode> = {}): LatencyMode {
  return {
    client: latencySummary(samplesMs), store: latencySummary(samplesMs), p99PerRep: spread([]), reads: samplesMs.length, hits: 0,
    destSummaryDemand: [], bulkMiBps: spread([400]), ...o,
  };
}

/** 100 samples: 98 at `base` ms, one at `p99`, one ten times that: nearest-rank p50 = base, p99 = p99. */
const samples = (base: number, p99: number) => [...Array.from({ length: 98 }, () => base), p99, p99 * 10];

function latency(o: { idle: number[]; stream: number[]; floor: number[]; rate: number }): LatencyResult {
  const bulk = mode(o.stream, { streamDuringReads: [{ miBps: o.rate, windowSec: 2, spanSec: 1.9, basis: 'inside' }] });
  const idle = mode(o.idle);
  return {
    image: 'x', reps: 1, bulk, idle,
    qemuNbd: { what: 'floor', client: latencySummary(o.floor), p99PerRep: spread([]) },
    holRatioP99: bulk.client.p99 / idle.client.p99, holRatioP50: bulk.client.p50 / idle.client.p50,
  };
}

const results = (extra: Partial<BenchResults>): BenchResults => ({ version: 1, machine, targets: [], errors: [], ...extra });
const byId = (r: BenchResults, id: string) => evaluateTargets(r).find((t) => t.id === id);

describe('latency targets', () => {
  it('idle p99 ≤ 1 ms and p50 ≤ 0.3 ms are judged on the client-side misses', () => {
    const r = results({ latency: latency({ idle: samples(0.2, 0.9), stream: samples(0.5, 1), floor: samples(0.1, 0.2), rate: 400 }) });
    expect(byId(r, 'demand-idle-p99')?.met).toBe(true);
    expect(byId(r, 'demand-idle-p50')?.met).toBe(true);
    const slow = results({ latency: latency({ idle: samples(0.4, 1.2), stream: samples(0.5, 1), floor: samples(0.1, 0.2), rate: 400 }) });
    expect(byId(slow, 'demand-idle-p99')?.met).toBe(false);
    expect(byId(slow, 'demand-idle-p50')?.met).toBe(false);
    expect(byId(slow, 'demand-idle-p99')?.measured).toContain('1.200 ms');
  });

  it('stream p99 ≤ 5× the floor is met only when the stream ran at ≥ 300 MiB/s during the reads', () => {
    const within = latency({ idle: samples(0.2, 0.9), stream: samples(0.5, 0.99), floor: samples(0.1, 0.2), rate: 400 });
    expect(byId(results({ latency: within }), 'demand-stream-vs-local')?.met).toBe(true);
    const slowStream = latency({ idle: samples(0.2, 0.9), stream: samples(0.5, 0.99), floor: samples(0.1, 0.2), rate: 250 });
    const t = byId(results({ latency: slowStream }), 'demand-stream-vs-local');
    expect(t?.met).toBe(false);
    expect(t?.measured).toMatch(/250 MiB\/s < 300 MiB\/s/);
    const far = latency({ idle: samples(0.2, 0.9), stream: samples(0.5, 1.01), floor: samples(0.1, 0.2), rate: 400 });
    const u = byId(results({ latency: far }), 'demand-stream-vs-local');
    expect(u?.met).toBe(false);
    expect(u?.measured).toContain('5.05× the local floor');
    expect(u?.baseline).toContain('0.200 ms');
  });

  it('a results file without the floor or the window rate says not measured, not met', () => {
    const old = latency({ idle: samples(0.2, 0.9), stream: samples(0.5, 0.99), floor: samples(0.1, 0.2), rate: 400 });
    delete old.qemuNbd;
    delete old.bulk.streamDuringReads;
    expect(byId(results({ latency: old }), 'demand-stream-vs-local')?.met).toBeNull();
  });
});

describe('demo and bulk targets', () => {
  it('the demo target is the median of the runs\' guest read p99', () => {
    const demo = (p99s: number[]): DemoResult => ({
      runs: p99s.length, failures: 0, guestReadP50Ms: spread(p99s.map(() => 0.5)), guestReadP99Ms: spread(p99s), guestReadMaxMs: spread(p99s),
      guestReads: p99s.map(() => 900), demandP99Ms: spread(p99s), downtimeMs: spread([10]), wallSec: spread([10]), stages: { dest: {}, source: {} },
    });
    expect(byId(results({ demo: demo([2, 2.9, 30]) }), 'demo-guest-read-p99')?.met).toBe(true);
    expect(byId(results({ demo: demo([2, 3.1, 30]) }), 'demo-guest-read-p99')?.met).toBe(false);
    expect(byId(results({ demo: demo([]) }), 'demo-guest-read-p99')?.met).toBeNull();
  });

  it('CPU per GiB: S + D against the pipe\'s client + server of the same round', () => {
    const c = (id: string, wall: number[], cpu: number[], sides?: [number, number]): ContenderResult => ({
      id, label: id, wallSec: spread(wall), cpuSec: spread(cpu), runs: wall, cpuRuns: cpu, failures: 0,
      ...(sides ? { sideCpuSec: { server: spread([sides[0]]), client: spread([sides[1]]) } } : {}),
      ...(id === 'postcopy' ? {} : { oursOverThis: spread([1]) }),
    });
    const bulk = (oursCpu: number): BulkResult => ({
      image: { path: 'x', size: GiB, dataBytes: GiB, allocatedBytes: GiB, kind: 'mixed', madeInSec: 0 },
      rounds: 1, moved: { bulkBytes: 0, demandBytes: 0, zeroSkipped: 0 }, bulkMiBps: spread([]),
      contenders: [c('postcopy', [2], [oursCpu], [oursCpu / 2, oursCpu / 2]), c('pipe-tcp', [2], [1.5], [0.5, 1]), c('nbdcopy-nbdkit', [2], [1], [0.4, 0.6])],
    });
    const met = byId(results({ bulk: bulk(1.4) }), 'bulk-cpu-vs-node-pipe');
    expect(met?.met).toBe(true);
    expect(met?.measured).toContain('S 0.70 + D 0.70 = 1.40 CPU-s/GiB');
    expect(met?.baseline).toContain('client 1.00 + server 0.50 = 1.50');
    expect(byId(results({ bulk: bulk(1.6) }), 'bulk-cpu-vs-node-pipe')?.met).toBe(false);
  });
});

describe('stage timings', () => {
  it('reads the COMMON shape, ignores malformed entries, and a summary without it gives null', () => {
    expect(readStages({ demandStages: { total: stage(100, 900), bad: { count: 'x' } } }, 'demandStages')).toEqual({ total: stage(100, 900) });
    expect(readStages({}, 'demandStages')).toBeNull();
    expect(readStages(null, 'urgentStages')).toBeNull();
  });

  it('pools reps: counts summed, buckets merged, max of maxima, p50/p99 the median of the reps', () => {
    const p = poolStages([{ total: stage(100, 900) }, null, { total: stage(300, 500) }, { total: stage(200, 700) }]);
    expect(p.total).toMatchObject({ count: 30, maxMs: 1800, reps: 3, p50Ms: { median: 200, min: 100, max: 300 }, p99Ms: { median: 700, min: 500, max: 900 } });
    expect(p.total!.buckets).toEqual([[0.064, 27], [0.128, 3]]);
  });

  it('the table lists every stage per mode in path order and n/a where a mode has none', () => {
    const table = renderStageSection([
      ['stream not started', { dest: poolStages([{ 'export-to-queued': stage(0.012, 0.04), total: stage(0.3, 0.9) }]), source: {} }],
      ['stream running', undefined],
    ]).join('\n');
    expect(table).toContain('| D | export-to-queued | 12 / 40 / 80 (10) | n/a |');
    expect(table).toContain('| S | received-to-read | n/a | n/a |');
    expect(table.indexOf('export-to-queued')).toBeLessThan(table.indexOf('| D | total'));
    const none = renderStageSection([['stream not started', undefined]]).join('\n');
    expect(none).toContain('No stage timings in this run');
  });

  it('the report carries the targets with their baselines and the stage section', () => {
    const r = results({ latency: latency({ idle: samples(0.2, 0.9), stream: samples(0.5, 1), floor: samples(0.1, 0.2), rate: 400 }) });
    r.targets = evaluateTargets(r);
    const md = renderMarkdown(r, '');
    expect(md).toContain('| target | measured | same-run baseline | status |');
    expect(md).toContain('### Demand-miss stages');
    expect(md).toContain('local floor: qemu-nbd 64 KiB');
  });
});

describe('stream rate over the reads\' window', () => {
  const s: Array<[number, number]> = [[0, 0], [100, 40 * MiB], [200, 80 * MiB], [300, 120 * MiB], [400, 200 * MiB]];
  it('takes the samples inside the window when there are two', () => {
    const w = windowRate(s, 50, 320);
    expect(w.basis).toBe('inside');
    expect(w.miBps).toBeCloseTo(400, 6);
    expect(w.spanSec).toBeCloseTo(0.2, 9);
  });
  it('takes the samples around a window too short to hold two', () => {
    const w = windowRate(s, 120, 180);
    expect(w.basis).toBe('around');
    expect(w.miBps).toBeCloseTo(400, 6);
  });
  it('says none when there is nothing to take it from', () => {
    expect(windowRate([], 0, 10).basis).toBe('none');
    expect(Number.isNaN(windowRate([[5, 1]], 0, 10).miBps)).toBe(true);
  });
});
