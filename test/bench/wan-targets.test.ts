// The WAN tier's targets and table on canned results: which limits say met / not met / not measured, the pairing of
// the 20 ms path with the no-delay one, TLS judged by the same limits, failed runs, D's path estimate in the table.
// No timing is taken here: the figures are made up and the checks are on the arithmetic and the wording.
import { describe, expect, it } from 'vitest';
import { WAN_SCENARIOS, type WanResult, type WanRun, type WanScenario } from '../../bench/macro/wan.js';
import { renderWanSection } from '../../bench/lib/report.js';
import type { BenchResults, MachineFacts } from '../../bench/lib/results.js';
import { latencySummary, spread } from '../../bench/lib/stats.js';
import { evaluateTargets } from '../../bench/lib/targets.js';

const MiB = 2 ** 20;

const machine: MachineFacts = {
  date: '2025-01-01T00:00:00.000Z', command: 'npm run bench', cpus: 2, cpuModel: 'test', memGiB: 4, kernel: 'k', node: 'v20', os: 'os',
  tools: {}, workDir: '/tmp', workDirFs: 'tmpfs', gitCommit: 'abc', gitDirtyFiles: 0, loadAvgStart: [0, 0, 0], loadAvgEnd: [0, 0, 0], durationSec: 1, options: {},
};

/** 100 misses: 98 at `p50` ms, one at `p99`, one ten times that (nearest-rank p50 = p50, p99 = p99). */
const misses = (p50: number, p99: number) => [...Array.from({ length: 98 }, () => p50), p99, p99 * 10];

interface Figures {
  wholeSec: number[];
  goodput: number;
  p50: number;
  p99: number;
  failed?: boolean;
  path?: WanRun['path'];
}

function scenario(sc: WanScenario, x: Figures): WanResult['scenarios'][number] {
  const runs: WanRun[] = x.wholeSec.map((s) => ({
    wholeMs: s * 1000, transferMs: s * 900, bulkBytes: x.goodput * MiB * s * 0.9, goodputMiBps: x.failed ? NaN : x.goodput,
    misses: misses(x.p50, x.p99), hits: 3, maxQueueBytes: MiB, path: x.path ?? null, ...(x.failed ? { failure: 'timeout' } : {}),
  }));
  const m = runs.flatMap((r) => r.misses);
  return {
    ...sc, runs, wholeSec: spread(x.wholeSec), transferSec: spread(x.wholeSec.map((s) => s * 0.9)), goodputMiBps: spread(runs.map((r) => r.goodputMiBps)),
    demand: latencySummary(runs.length ? m : []), floor: latencySummary([sc.rttMs + 0.8, sc.rttMs + 1.5]), maxQueueMiB: spread([1]), failures: x.failed ? runs.length : 0,
  };
}

const base: Record<WanScenario['id'], Figures> = {
  none: { wholeSec: [2, 2.2], goodput: 150, p50: 0.5, p99: 2 },
  rtt20: { wholeSec: [2.2, 2.5], goodput: 140, p50: 21, p99: 28 },
  'rtt20-100': { wholeSec: [4, 4], goodput: 92, p50: 21.5, p99: 29.5 },
  'rtt80-50': { wholeSec: [8, 8], goodput: 46, p50: 82, p99: 99 },
  'rtt20-100-tls': { wholeSec: [4.2, 4.2], goodput: 91, p50: 21.9, p99: 29.9 },
};

function results(change: Partial<Record<WanScenario['id'], Partial<Figures>>> = {}): BenchResults {
  const scenarios = WAN_SCENARIOS.map((sc) => scenario(sc, { ...base[sc.id], ...change[sc.id] }));
  const whole = (id: WanScenario['id']) => scenarios.find((s) => s.id === id)!.runs.map((r) => r.wholeMs);
  const none = whole('none');
  const wan: WanResult = { image: { path: 'x', size: 512 * MiB, dataBytes: 311 * MiB }, reps: 2, scenarios, rtt20OverNone: spread(whole('rtt20').map((w, i) => w / none[i]!)) };
  return { version: 1, machine, targets: [], errors: [], wan };
}

const met = (r: BenchResults) => Object.fromEntries(evaluateTargets(r).map((t) => [t.id, t.met]));

describe('WAN targets', () => {
  it('all met just inside every limit', () => {
    expect(met(results())).toEqual({
      'wan-rtt20-whole': true,
      'wan-rtt20-100-goodput': true, 'wan-rtt20-100-demand-p99': true, 'wan-rtt20-100-demand-p50': true,
      'wan-rtt80-50-goodput': true, 'wan-rtt80-50-demand-p99': true,
      'wan-rtt20-100-tls-goodput': true, 'wan-rtt20-100-tls-demand-p99': true, 'wan-rtt20-100-tls-demand-p50': true,
    });
  });

  it('each limit, crossed, says not met', () => {
    // 20 ms no cap: 2.5 / 2.0 and 2.7 / 2.2, median above 1.2×.
    expect(met(results({ rtt20: { wholeSec: [2.5, 2.7] } }))['wan-rtt20-whole']).toBe(false);
    expect(met(results({ 'rtt20-100': { goodput: 89 } }))['wan-rtt20-100-goodput']).toBe(false);
    expect(met(results({ 'rtt20-100': { p99: 30.5 } }))['wan-rtt20-100-demand-p99']).toBe(false);
    expect(met(results({ 'rtt20-100': { p50: 22.5 } }))['wan-rtt20-100-demand-p50']).toBe(false);
    expect(met(results({ 'rtt80-50': { goodput: 44 } }))['wan-rtt80-50-goodput']).toBe(false);
    expect(met(results({ 'rtt80-50': { p99: 101 } }))['wan-rtt80-50-demand-p99']).toBe(false);
    const tls = met(results({ 'rtt20-100-tls': { goodput: 80, p99: 31, p50: 23 } }));
    expect([tls['wan-rtt20-100-tls-goodput'], tls['wan-rtt20-100-tls-demand-p99'], tls['wan-rtt20-100-tls-demand-p50']]).toEqual([false, false, false]);
    // TLS is judged alone: the plain path meeting its targets does not carry it.
    expect(tls['wan-rtt20-100-goodput']).toBe(true);
  });

  it('the 20 ms path is paired with the no-delay run of the same rep', () => {
    // Per rep 2.6 / 2.0 = 1.30 and 2.1 / 2.2 = 0.95: the figure is the median of those ratios, with their spread.
    const r = results({ rtt20: { wholeSec: [2.6, 2.1] } });
    const t = evaluateTargets(r).find((x) => x.id === 'wan-rtt20-whole')!;
    expect(t.met).toBe(true);
    expect(t.measured).toMatch(/^1\.13 \(0\.95–1\.30\)×/);
    expect(t.baseline).toContain('no delay');
  });

  it('a failed migration on a path is not met; a path without misses is not measured', () => {
    expect(met(results({ 'rtt80-50': { failed: true } }))['wan-rtt80-50-goodput']).toBe(false);
    expect(met(results({ rtt20: { failed: true } }))['wan-rtt20-whole']).toBe(false);
    const r = results();
    const sc = r.wan!.scenarios.find((s) => s.id === 'rtt20-100')!;
    sc.demand = latencySummary([]);
    expect(met(r)['wan-rtt20-100-demand-p99']).toBeNull();
    expect(evaluateTargets({ ...r, wan: undefined }).filter((t) => t.id.startsWith('wan-'))).toEqual([]);
  });

  it('the demand targets name the path floor and the no-delay figure as baselines', () => {
    const t = evaluateTargets(results()).find((x) => x.id === 'wan-rtt20-100-demand-p99')!;
    expect(t.target).toContain('≤ RTT + 10 ms = 30 ms');
    expect(t.measured).toContain('p99 29.50 ms');
    expect(t.baseline).toContain('p50 20.80 / p99 21.50 ms');
    expect(t.baseline).toContain('no delay p50 0.50 / p99 2.00 ms');
  });
});

describe('WAN table', () => {
  it('one row per path, and D\'s path estimate per run when its summary had one', () => {
    const r = results({ 'rtt80-50': { path: { minRttMs: 80.4, bottleneckBytesPerSec: 49 * MiB, windowBytes: 4.5 * MiB, phase: 'steady' } } });
    const text = renderWanSection(r.wan!).join('\n');
    for (const sc of WAN_SCENARIOS) expect(text).toContain(`| ${sc.label} |`);
    expect(text).toContain('80 ms RTT, 50 MiB/s, rep 1: min RTT 80.4 ms, bottleneck 49 MiB/s, window 4.5 MiB, phase steady');
    expect(text).not.toContain('have no path estimate');
    expect(renderWanSection(results().wan!).join('\n')).toContain("D's summaries have no path estimate");
  });
});
