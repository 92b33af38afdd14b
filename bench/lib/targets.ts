// The issues' targets (issue 12; the WAN tier's: issue 15), evaluated from one run's figures (ratios within the run).
// Each says met / not met, the measured value, and the same-run baseline it is judged against; null ("not measured")
// when its tier did not run or the figure is missing (an older results file).
import type { BenchResults, TargetCheck } from './results.js';
import { spread, type Spread } from './stats.js';
import type { WanScenario } from '../macro/wan.js';
import { GiB, MiB } from './units.js';

/** The issue's targets, each a limit on a ratio or figure measured in the same run. */
export const TARGET = {
  /** Whole-process time against nbdcopy from nbdkit: no slower than the tool an operator would use instead. */
  bulkVsNbdcopy: 1.0,
  /** Whole-process time against a plain Node socket pipe: our framing and bookkeeping cost at most 15 %. */
  bulkVsNodePipe: 1.15,
  /** CPU per GiB of both agents together against the pipe's client + server: no more CPU than the language's floor. */
  bulkCpuVsNodePipe: 1.0,
  /** A sparse image against moving its data alone: holes and zeroes cost at most 30 %. */
  sparseVsData: 1.3,
  /** Demand miss p99 with the stream not started, ms: a guest read stays far below a disk seek. */
  demandIdleP99Ms: 1,
  /** Demand miss p50 with the stream not started, ms. */
  demandIdleP50Ms: 0.3,
  /** Demand miss p99 with the stream running, against the p99 of a local 64 KiB qemu-nbd read. */
  demandStreamVsLocal: 5,
  /** ...while the stream moves at least this many MiB/s over the reads' window (else the latency is not under load). */
  streamMiBps: 300,
  /** Extra (the older target): demand p99 with the stream running against idle. */
  demandHolRatio: 2,
  /** The demo's simulated guest, read p99 on D while the disk arrives, ms. */
  demoGuestReadP99Ms: 3,
  /** Cut-over downtime, in ms, at the reference cell below. */
  downtimeMs: 50,
  /** Peak RSS of each agent, in MiB: memory independent of the image size. */
  rssMiB: 128,
  /** Peak RSS growth from the smallest to the largest image. */
  rssGrowth: 1.15,
  /** WAN (issue 15): whole migration at 20 ms RTT, no rate cap, against the no-delay path of the same run. */
  wanRtt20VsNone: 1.2,
  /** WAN, 20 ms RTT through 100 MiB/s: bulk goodput at least this, MiB/s (90 % of the link). */
  wan100GoodputMiBps: 90,
  /** WAN, 20 ms RTT through 100 MiB/s: demand miss p99 at most RTT + this, ms (no standing queue ahead of it). */
  wan100P99OverRttMs: 10,
  /** ...and p50 at most RTT + this, ms. */
  wan100P50OverRttMs: 2,
  /** WAN, 80 ms RTT through 50 MiB/s: bulk goodput at least this, MiB/s. */
  wan50GoodputMiBps: 45,
  /** WAN, 80 ms RTT through 50 MiB/s: demand miss p99 at most RTT + this, ms. */
  wan50P99OverRttMs: 20,
} as const;

/** The downtime target's reference cell: 1 GiB of RAM dirtied at 1 000 pages/s. */
const DOWNTIME_CELL = { ramBytes: GiB, dirtyPagesPerSec: 1000 } as const;
/** The largest image of the RSS tier (--big): the flatness target is judged only when it ran. */
const RSS_LARGEST_IMAGE = 16 * GiB;

const fx = (x: number | undefined, d: number) => (x !== undefined && Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const f2 = (x: number | undefined) => fx(x, 2);
const f3 = (x: number | undefined) => fx(x, 3);
const ok = (x: number | undefined): x is number => x !== undefined && Number.isFinite(x);
/** "1.23 (1.10–1.40)" or "1.23" for a single value. */
const sp = (s: Spread | undefined, d = 2) => (!s || s.n === 0 ? 'n/a' : s.n === 1 ? fx(s.median, d) : `${fx(s.median, d)} (${fx(s.min, d)}–${fx(s.max, d)})`);
/** met when the figure is there and within the limit; null when it is not there. */
const within = (x: number | undefined, limit: number): boolean | null => (ok(x) ? x <= limit : null);

function bulkTargets(r: BenchResults, out: TargetCheck[]): void {
  const bulk = r.bulk;
  if (!bulk) return;
  const by = (id: string) => bulk.contenders.find((c) => c.id === id);
  const ours = by('postcopy');
  const k = by('nbdcopy-nbdkit');
  const q = by('nbdcopy-qemu');
  const pipe = by('pipe-tcp');
  const perGiB = bulk.image.size / GiB;
  out.push({
    id: 'bulk-vs-nbdcopy',
    target: `goal beyond: 1 GiB mixed image into D's file, whole-process time ≤ ${TARGET.bulkVsNbdcopy.toFixed(1)}× nbdcopy from nbdkit into a file`,
    measured: `${f2(k?.oursOverThis?.median)}× (rounds ${f2(k?.oursOverThis?.min)}–${f2(k?.oursOverThis?.max)}); ours ${f2(ours?.wallSec.median)} s`,
    baseline: `nbdcopy from nbdkit ${f2(k?.wallSec.median)} s (from qemu-nbd ${f2(q?.wallSec.median)} s)`,
    met: within(k?.oursOverThis?.median, TARGET.bulkVsNbdcopy),
  });
  out.push({
    id: 'bulk-vs-node-pipe',
    target: `1 GiB mixed image: whole-process time ≤ ${TARGET.bulkVsNodePipe}× a plain Node socket pipe (TCP) writing with positional writeSync`,
    measured: `${f2(pipe?.oursOverThis?.median)}× (rounds ${f2(pipe?.oursOverThis?.min)}–${f2(pipe?.oursOverThis?.max)}); ours ${f2(ours?.wallSec.median)} s`,
    baseline: `Node pipe (TCP) ${f2(pipe?.wallSec.median)} s`,
    met: within(pipe?.oursOverThis?.median, TARGET.bulkVsNodePipe),
  });
  // CPU per GiB of image, paired per round: (S + D) ÷ (pipe client + server) of the same round.
  const perRound = (ours?.cpuRuns ?? []).map((c, i) => c / (pipe?.cpuRuns?.[i] ?? NaN));
  const ratio = spread(perRound);
  const side = (s: Spread | undefined) => (s && s.n ? s.median / perGiB : NaN);
  const oursS = side(ours?.sideCpuSec?.server);
  const oursD = side(ours?.sideCpuSec?.client);
  const nb = (c: typeof k) => (c ? `${f2(side(c.sideCpuSec?.client))} + ${f2(side(c.sideCpuSec?.server))} = ${f2(side(c.cpuSec))}` : 'n/a');
  out.push({
    id: 'bulk-cpu-vs-node-pipe',
    target: `1 GiB mixed image: CPU-seconds per GiB of both agents (S + D) ≤ the Node socket pipe's (client + server)`,
    measured: `S ${f2(oursS)} + D ${f2(oursD)} = ${f2(oursS + oursD)} CPU-s/GiB; ${f2(ratio.median)}× the pipe's (rounds ${f2(ratio.min)}–${f2(ratio.max)})`,
    baseline: `pipe (TCP) client ${f2(side(pipe?.sideCpuSec?.client))} + server ${f2(side(pipe?.sideCpuSec?.server))} = ${f2(side(pipe?.cpuSec))}; nbdcopy client + server: from nbdkit ${nb(k)}, from qemu-nbd ${nb(q)}`,
    met: ratio.n > 0 ? within(ratio.median, TARGET.bulkCpuVsNodePipe) : null,
  });
}

function latencyTargets(r: BenchResults, out: TargetCheck[]): void {
  const l = r.latency;
  if (!l) return;
  const idle = l.idle.client;
  const misses = (n: number) => `${n} misses`;
  out.push({
    id: 'demand-idle-p99',
    target: `demand miss through D's export, 4 KiB, stream not started: p99 ≤ ${TARGET.demandIdleP99Ms} ms`,
    measured: `p99 ${f3(idle.p99)} ms client side (${misses(idle.count)}; ${f3(l.idle.store.p99)} ms inside D's store)`,
    baseline: `local 64 KiB qemu-nbd read p99 ${f3(l.qemuNbd?.client.p99)} ms`,
    met: idle.count > 0 ? within(idle.p99, TARGET.demandIdleP99Ms) : null,
  });
  out.push({
    id: 'demand-idle-p50',
    target: `demand miss through D's export, 4 KiB, stream not started: p50 ≤ ${TARGET.demandIdleP50Ms} ms`,
    measured: `p50 ${f3(idle.p50)} ms client side (${misses(idle.count)})`,
    baseline: `local 64 KiB qemu-nbd read p50 ${f3(l.qemuNbd?.client.p50)} ms`,
    met: idle.count > 0 ? within(idle.p50, TARGET.demandIdleP50Ms) : null,
  });
  const stream = l.bulk.client;
  const floor = l.qemuNbd?.client;
  const ratio = floor && floor.count > 0 ? stream.p99 / floor.p99 : NaN;
  const rates = spread((l.bulk.streamDuringReads ?? []).map((w) => w.miBps));
  const fast = rates.n > 0 ? rates.median >= TARGET.streamMiBps : null;
  const why: string[] = [];
  if (ok(ratio) && ratio > TARGET.demandStreamVsLocal) why.push(`p99 is ${f2(ratio)}× the local floor`);
  if (fast === false) why.push(`the stream ran at ${fx(rates.median, 0)} MiB/s < ${TARGET.streamMiBps} MiB/s while the reads happened, so the latency was not measured under the load the target asks for`);
  out.push({
    id: 'demand-stream-vs-local',
    target: `demand miss, 4 KiB, stream running at ≥ ${TARGET.streamMiBps} MiB/s during the reads: p99 ≤ ${TARGET.demandStreamVsLocal}× the p99 of a local 64 KiB qemu-nbd read of the same image`,
    measured:
      `p99 ${f3(stream.p99)} ms = ${f2(ratio)}× the floor (${misses(stream.count)}, p50 ${f3(stream.p50)} ms); ` +
      `stream ${sp(rates, 0)} MiB/s over the reads' window (whole migration ${sp(l.bulk.bulkMiBps, 0)} MiB/s)` +
      (why.length ? `; not met: ${why.join('; ')}` : ''),
    baseline: floor ? `qemu-nbd 64 KiB p99 ${f3(floor.p99)} ms (p50 ${f3(floor.p50)}, ${floor.count} reads)` : 'not measured',
    met: ok(ratio) && fast !== null ? ratio <= TARGET.demandStreamVsLocal && fast : null,
  });
  out.push({
    id: 'demand-hol',
    target: `extra: demand miss p99 with the stream running ≤ ${TARGET.demandHolRatio}× the p99 with the stream not started`,
    measured: `${f2(l.holRatioP99)}× (p99 ${f3(stream.p99)} ms with the stream)`,
    baseline: `stream not started p99 ${f3(idle.p99)} ms`,
    met: within(l.holRatioP99, TARGET.demandHolRatio),
  });
}

function demoTargets(r: BenchResults, out: TargetCheck[]): void {
  const d = r.demo;
  if (!d) return;
  const p99 = d.guestReadP99Ms;
  out.push({
    id: 'demo-guest-read-p99',
    target: `the demo's simulated guest on D: read p99 ≤ ${TARGET.demoGuestReadP99Ms} ms`,
    measured: `p99 ${sp(p99)} ms over ${p99.n} run(s)${d.failures ? ` (${d.failures} failed)` : ''}; p50 ${sp(d.guestReadP50Ms)} ms; D's demand fetch p99 ${sp(d.demandP99Ms)} ms`,
    baseline: r.latency?.qemuNbd ? `local 64 KiB qemu-nbd read p99 ${f3(r.latency.qemuNbd.client.p99)} ms` : '—',
    met: p99.n > 0 ? within(p99.median, TARGET.demoGuestReadP99Ms) : null,
  });
}

/** The paths' goodput and demand targets: at least `goodput` MiB/s; p99 (and p50 when given) within RTT + the margins. */
function wanPathTargets(r: BenchResults, out: TargetCheck[], id: WanScenario['id'], lim: { goodput: number; p99: number; p50?: number }): void {
  const sc = r.wan!.scenarios.find((s) => s.id === id);
  const none = r.wan!.scenarios.find((s) => s.id === 'none');
  if (!sc) return;
  const plain = sc.tls ? r.wan!.scenarios.find((s) => s.id === id.replace(/-tls$/, '')) : undefined;
  const vsPlain = (fig: string) => (plain ? `; without TLS ${fig}` : '');
  const g = sc.goodputMiBps;
  const link = sc.rateBytesPerSec ? `${fx(sc.rateBytesPerSec / MiB, 0)} MiB/s bottleneck` : 'no cap';
  out.push({
    id: `wan-${id}-goodput`,
    target: `WAN ${sc.label}: bulk goodput (bytes streamed ÷ cut-over→complete) ≥ ${lim.goodput} MiB/s`,
    measured: `${sp(g, 1)} MiB/s over ${g.n} run(s)${sc.failures ? ` (${sc.failures} failed)` : ''}`,
    baseline: `the link's ${link}; no delay ${sp(none?.goodputMiBps, 1)} MiB/s${vsPlain(`${sp(plain?.goodputMiBps, 1)} MiB/s`)}`,
    met: g.n > 0 && !sc.failures ? g.median >= lim.goodput : sc.failures ? false : null,
  });
  const d = sc.demand;
  const enough = d.count > 0;
  const fl = sc.floor;
  const demandBase = `the path idle (64 B there, 64 KiB back, same emulator) p50 ${f2(fl?.p50)} / p99 ${f2(fl?.p99)} ms; no delay p50 ${f2(none?.demand.p50)} / p99 ${f2(none?.demand.p99)} ms`;
  const quantiles: Array<['p99' | 'p50', number | undefined]> = [['p99', lim.p99], ['p50', lim.p50]];
  for (const [q, margin] of quantiles) {
    if (margin === undefined) continue;
    out.push({
      id: `wan-${id}-demand-${q}`,
      target: `WAN ${sc.label}: demand miss (4 KiB through D's export) while the stream runs, ${q} ≤ RTT + ${margin} ms = ${sc.rttMs + margin} ms`,
      measured: `${q} ${f2(d[q])} ms (${d.count} misses; p50 ${f2(d.p50)}, p99 ${f2(d.p99)}, max ${f2(d.max)} ms)`,
      baseline: demandBase + vsPlain(`${q} ${f2(plain?.demand[q])} ms`),
      met: enough ? d[q] <= sc.rttMs + margin : null,
    });
  }
}

function wanTargets(r: BenchResults, out: TargetCheck[]): void {
  const w = r.wan;
  if (!w) return;
  const none = w.scenarios.find((s) => s.id === 'none');
  const rtt20 = w.scenarios.find((s) => s.id === 'rtt20');
  out.push({
    id: 'wan-rtt20-whole',
    target: `WAN 20 ms RTT, no rate cap, default options: whole migration ≤ ${TARGET.wanRtt20VsNone}× the no-delay path's (paired per rep)`,
    measured: `${sp(w.rtt20OverNone)}×; 20 ms RTT ${sp(rtt20?.wholeSec)} s${rtt20?.failures ? ` (${rtt20.failures} failed)` : ''}`,
    baseline: `no delay (through the same proxy) ${sp(none?.wholeSec)} s`,
    met: rtt20?.failures ? false : w.rtt20OverNone.n > 0 ? within(w.rtt20OverNone.median, TARGET.wanRtt20VsNone) : null,
  });
  const at100 = { goodput: TARGET.wan100GoodputMiBps, p99: TARGET.wan100P99OverRttMs, p50: TARGET.wan100P50OverRttMs };
  wanPathTargets(r, out, 'rtt20-100', at100);
  wanPathTargets(r, out, 'rtt80-50', { goodput: TARGET.wan50GoodputMiBps, p99: TARGET.wan50P99OverRttMs });
  wanPathTargets(r, out, 'rtt20-100-tls', at100);
}

export function evaluateTargets(r: BenchResults): TargetCheck[] {
  const out: TargetCheck[] = [];
  latencyTargets(r, out);
  demoTargets(r, out);
  bulkTargets(r, out);
  if (r.sparse) {
    const s = r.sparse;
    out.push({
      id: 'sparse-vs-data',
      target: `4 GiB image with 10% data: wall time ≤ ${TARGET.sparseVsData}× the time to move its data alone`,
      measured: `${f2(s.ratioWhole.median)}× whole-process (rounds ${f2(s.ratioWhole.min)}–${f2(s.ratioWhole.max)}); cut-over→complete ${f2(s.ratioTransfer.median)}×; sparse ${f2(s.oursSparse.wallSec.median)} s`,
      baseline: `its data alone ${f2(s.oursDense.wallSec.median)} s`,
      met: within(s.ratioWhole.median, TARGET.sparseVsData),
    });
  }
  if (r.downtime) {
    const cell = r.downtime.find((c) => c.ramBytes === DOWNTIME_CELL.ramBytes && c.dirtyPagesPerSec === DOWNTIME_CELL.dirtyPagesPerSec);
    if (cell) {
      out.push({
        id: 'downtime',
        target: `cut-over downtime ≤ ${TARGET.downtimeMs} ms at 1 GiB RAM and 1 000 dirty pages/s`,
        measured: `${f2(cell.downtimeMs.median)} ms median (${f2(cell.downtimeMs.min)}–${f2(cell.downtimeMs.max)}, n=${cell.downtimeMs.n})`,
        baseline: '—',
        met: cell.downtimeMs.n > 0 && cell.downtimeMs.max <= TARGET.downtimeMs,
      });
    }
  }
  if (r.rss && r.rss.length > 0) {
    const maxS = Math.max(...r.rss.map((p) => p.sourceMiB));
    const maxD = Math.max(...r.rss.map((p) => p.destMiB));
    const sizes = r.rss.map((p) => p.image.size);
    const first = r.rss[0]!;
    const last = r.rss[r.rss.length - 1]!;
    const growth = (a: number, b: number) => b / a;
    out.push({
      id: 'rss-cap',
      target: `peak RSS of each agent ≤ ${TARGET.rssMiB} MiB`,
      measured: `S ${maxS.toFixed(0)} MiB, D ${maxD.toFixed(0)} MiB (largest over ${r.rss.map((p) => `${p.image.size / GiB} GiB`).join(', ')})`,
      baseline: '—',
      met: maxS <= TARGET.rssMiB && maxD <= TARGET.rssMiB,
    });
    const has16 = sizes.includes(RSS_LARGEST_IMAGE);
    out.push({
      id: 'rss-flat',
      target: `peak RSS flat from 1 to 16 GiB (largest image ≤ ${TARGET.rssGrowth}× the 1 GiB figure)`,
      measured: `${first.image.size / GiB}→${last.image.size / GiB} GiB: S ${first.sourceMiB.toFixed(0)}→${last.sourceMiB.toFixed(0)} MiB (${f2(growth(first.sourceMiB, last.sourceMiB))}×), D ${first.destMiB.toFixed(0)}→${last.destMiB.toFixed(0)} MiB (${f2(growth(first.destMiB, last.destMiB))}×)${has16 ? '' : '; 16 GiB not run (use --big)'}`,
      baseline: `the ${first.image.size / GiB} GiB image's own figure`,
      met: growth(first.sourceMiB, last.sourceMiB) <= TARGET.rssGrowth && growth(first.destMiB, last.destMiB) <= TARGET.rssGrowth ? (has16 ? true : null) : false,
    });
  }
  wanTargets(r, out);
  return out;
}
