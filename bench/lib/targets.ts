// The issue's targets, evaluated from one run's figures (ratios within the run). Each says met / not met,
// the measured value and the limit; "n/a" when its tier did not run.
import type { BenchResults, TargetCheck } from './results.js';
import { spread } from './stats.js';
import { GiB } from './units.js';

/** The issue's targets, each a limit on a ratio or figure measured in the same run. */
const TARGET = {
  /** Whole-process time against the faster nbdcopy: no slower than the tool an operator would use instead. */
  bulkVsNbdcopy: 1.0,
  /** Whole-process time against a plain Node socket pipe: our framing and bookkeeping cost at most 15 %. */
  bulkVsNodePipe: 1.15,
  /** A sparse image against moving its data alone: holes and zeroes cost at most 30 %. */
  sparseVsData: 1.3,
  /** Demand read p99 under full bulk against idle: bulk may at most double a guest's wait. */
  demandHolRatio: 2,
  /** Demand read p99 under full bulk, in ms: a guest read stays below a disk seek. */
  demandP99Ms: 1,
  /** Cut-over downtime, in ms, at the reference cell below. */
  downtimeMs: 50,
  /** Peak RSS of each agent, in MiB: memory independent of the image size. */
  rssMiB: 128,
  /** Peak RSS growth from the smallest to the largest image. */
  rssGrowth: 1.15,
} as const;

/** The downtime target's reference cell: 1 GiB of RAM dirtied at 1 000 pages/s. */
const DOWNTIME_CELL = { ramBytes: GiB, dirtyPagesPerSec: 1000 } as const;
/** The largest image of the RSS tier (--big): the flatness target is judged only when it ran. */
const RSS_LARGEST_IMAGE = 16 * GiB;

const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');

export function evaluateTargets(r: BenchResults): TargetCheck[] {
  const out: TargetCheck[] = [];
  const bulk = r.bulk;
  if (bulk) {
    const by = (id: string) => bulk.contenders.find((c) => c.id === id);
    const ours = by('postcopy')!;
    const q = by('nbdcopy-qemu');
    const k = by('nbdcopy-nbdkit');
    const pipe = by('pipe-tcp');
    // Paired per round against the faster nbdcopy of that round.
    const vsFaster = spread(ours.runs.map((w, i) => w / Math.min(q?.runs[i] ?? NaN, k?.runs[i] ?? NaN)));
    out.push({
      id: 'bulk-vs-nbdcopy',
      target: `1 GiB mixed image into D's file: whole-process time ≤ 1.0× nbdcopy into a file from the faster of qemu-nbd and nbdkit`,
      measured: `${f2(vsFaster.median)}× (rounds ${f2(vsFaster.min)}–${f2(vsFaster.max)}); ours ${f2(ours.wallSec.median)} s, nbdcopy-qemu ${f2(q?.wallSec.median ?? NaN)} s, nbdcopy-nbdkit ${f2(k?.wallSec.median ?? NaN)} s`,
      met: vsFaster.median <= TARGET.bulkVsNbdcopy,
    });
    out.push({
      id: 'bulk-vs-node-pipe',
      target: '1 GiB mixed image: whole-process time ≤ 1.15× a plain Node socket pipe (TCP) writing with positional writeSync',
      measured: `${f2(pipe?.oursOverThis?.median ?? NaN)}× (rounds ${f2(pipe?.oursOverThis?.min ?? NaN)}–${f2(pipe?.oursOverThis?.max ?? NaN)}); pipe ${f2(pipe?.wallSec.median ?? NaN)} s`,
      met: (pipe?.oursOverThis?.median ?? Infinity) <= TARGET.bulkVsNodePipe,
    });
  }
  if (r.sparse) {
    const s = r.sparse;
    out.push({
      id: 'sparse-vs-data',
      target: '4 GiB image with 10% data: wall time ≤ 1.3× the time to move its data alone',
      measured: `${f2(s.ratioWhole.median)}× whole-process (rounds ${f2(s.ratioWhole.min)}–${f2(s.ratioWhole.max)}); cut-over→complete ${f2(s.ratioTransfer.median)}×; sparse ${f2(s.oursSparse.wallSec.median)} s vs data alone ${f2(s.oursDense.wallSec.median)} s`,
      met: s.ratioWhole.median <= TARGET.sparseVsData,
    });
  }
  if (r.latency) {
    const l = r.latency;
    const p99 = l.bulk.client.p99;
    out.push({
      id: 'demand-hol',
      target: 'demand 4 KiB read p99 under full bulk ≤ 2× the p99 with no bulk running',
      measured: `${f2(l.holRatioP99)}× (p99 ${f2(p99)} ms under bulk vs ${f2(l.idle.client.p99)} ms idle, client side, misses only)`,
      met: l.holRatioP99 <= TARGET.demandHolRatio,
    });
    out.push({
      id: 'demand-p99-1ms',
      target: 'demand 4 KiB read p99 under full bulk ≤ 1 ms',
      measured: `${f2(p99)} ms client side (${f2(l.bulk.store.p99)} ms inside D's store)`,
      met: p99 <= TARGET.demandP99Ms,
    });
  }
  if (r.downtime) {
    const cell = r.downtime.find((c) => c.ramBytes === DOWNTIME_CELL.ramBytes && c.dirtyPagesPerSec === DOWNTIME_CELL.dirtyPagesPerSec);
    if (cell) {
      out.push({
        id: 'downtime',
        target: 'cut-over downtime ≤ 50 ms at 1 GiB RAM and 1 000 dirty pages/s',
        measured: `${f2(cell.downtimeMs.median)} ms median (${f2(cell.downtimeMs.min)}–${f2(cell.downtimeMs.max)}, n=${cell.downtimeMs.n})`,
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
      target: 'peak RSS of each agent ≤ 128 MiB',
      measured: `S ${maxS.toFixed(0)} MiB, D ${maxD.toFixed(0)} MiB (largest over ${r.rss.map((p) => `${p.image.size / GiB} GiB`).join(', ')})`,
      met: maxS <= TARGET.rssMiB && maxD <= TARGET.rssMiB,
    });
    const has16 = sizes.includes(RSS_LARGEST_IMAGE);
    out.push({
      id: 'rss-flat',
      target: 'peak RSS flat from 1 to 16 GiB (largest image ≤ 1.15× the 1 GiB figure)',
      measured: `${first.image.size / GiB}→${last.image.size / GiB} GiB: S ${first.sourceMiB.toFixed(0)}→${last.sourceMiB.toFixed(0)} MiB (${f2(growth(first.sourceMiB, last.sourceMiB))}×), D ${first.destMiB.toFixed(0)}→${last.destMiB.toFixed(0)} MiB (${f2(growth(first.destMiB, last.destMiB))}×)${has16 ? '' : '; 16 GiB not run (use --big)'}`,
      met: growth(first.sourceMiB, last.sourceMiB) <= TARGET.rssGrowth && growth(first.destMiB, last.destMiB) <= TARGET.rssGrowth ? (has16 ? true : null) : false,
    });
  }
  return out;
}
