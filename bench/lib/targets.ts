// The issue's targets, evaluated from one run's figures (ratios within the run). Each says met / not met,
// the measured value and the limit; "n/a" when its tier did not run.
import type { BenchResults, TargetCheck } from './results.js';
import { spread } from './stats.js';

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
      met: vsFaster.median <= 1.0,
    });
    out.push({
      id: 'bulk-vs-node-pipe',
      target: '1 GiB mixed image: whole-process time ≤ 1.15× a plain Node socket pipe (TCP) writing with positional writeSync',
      measured: `${f2(pipe?.oursOverThis?.median ?? NaN)}× (rounds ${f2(pipe?.oursOverThis?.min ?? NaN)}–${f2(pipe?.oursOverThis?.max ?? NaN)}); pipe ${f2(pipe?.wallSec.median ?? NaN)} s`,
      met: (pipe?.oursOverThis?.median ?? Infinity) <= 1.15,
    });
  }
  if (r.sparse) {
    const s = r.sparse;
    out.push({
      id: 'sparse-vs-data',
      target: '4 GiB image with 10% data: wall time ≤ 1.3× the time to move its data alone',
      measured: `${f2(s.ratioWhole.median)}× whole-process (rounds ${f2(s.ratioWhole.min)}–${f2(s.ratioWhole.max)}); cut-over→complete ${f2(s.ratioTransfer.median)}×; sparse ${f2(s.oursSparse.wallSec.median)} s vs data alone ${f2(s.oursDense.wallSec.median)} s`,
      met: s.ratioWhole.median <= 1.3,
    });
  }
  if (r.latency) {
    const l = r.latency;
    const p99 = l.bulk.client.p99;
    out.push({
      id: 'demand-hol',
      target: 'demand 4 KiB read p99 under full bulk ≤ 2× the p99 with no bulk running',
      measured: `${f2(l.holRatioP99)}× (p99 ${f2(p99)} ms under bulk vs ${f2(l.idle.client.p99)} ms idle, client side, misses only)`,
      met: l.holRatioP99 <= 2,
    });
    out.push({
      id: 'demand-p99-1ms',
      target: 'demand 4 KiB read p99 under full bulk ≤ 1 ms',
      measured: `${f2(p99)} ms client side (${f2(l.bulk.store.p99)} ms inside D's store)`,
      met: p99 <= 1,
    });
  }
  if (r.downtime) {
    const cell = r.downtime.find((c) => c.ramBytes === 2 ** 30 && c.dirtyPagesPerSec === 1000);
    if (cell) {
      out.push({
        id: 'downtime',
        target: 'cut-over downtime ≤ 50 ms at 1 GiB RAM and 1 000 dirty pages/s',
        measured: `${f2(cell.downtimeMs.median)} ms median (${f2(cell.downtimeMs.min)}–${f2(cell.downtimeMs.max)}, n=${cell.downtimeMs.n})`,
        met: cell.downtimeMs.n > 0 && cell.downtimeMs.max <= 50,
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
      measured: `S ${maxS.toFixed(0)} MiB, D ${maxD.toFixed(0)} MiB (largest over ${r.rss.map((p) => `${p.image.size / 2 ** 30} GiB`).join(', ')})`,
      met: maxS <= 128 && maxD <= 128,
    });
    const has16 = sizes.includes(16 * 2 ** 30);
    out.push({
      id: 'rss-flat',
      target: 'peak RSS flat from 1 to 16 GiB (largest image ≤ 1.15× the 1 GiB figure)',
      measured: `${first.image.size / 2 ** 30}→${last.image.size / 2 ** 30} GiB: S ${first.sourceMiB.toFixed(0)}→${last.sourceMiB.toFixed(0)} MiB (${f2(growth(first.sourceMiB, last.sourceMiB))}×), D ${first.destMiB.toFixed(0)}→${last.destMiB.toFixed(0)} MiB (${f2(growth(first.destMiB, last.destMiB))}×)${has16 ? '' : '; 16 GiB not run (use --big)'}`,
      met: growth(first.sourceMiB, last.sourceMiB) <= 1.15 && growth(first.destMiB, last.destMiB) <= 1.15 ? (has16 ? true : null) : false,
    });
  }
  return out;
}
