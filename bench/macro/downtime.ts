// Downtime tier: cut-over with S's simulated guest (no disk operations) at several RAM sizes and dirty rates;
// S's summary gives the downtime (guest paused on S until D answered "running") and the pre-copy rounds.
import type { BenchImage } from '../lib/images.js';
import { spread, type Spread } from '../lib/stats.js';
import { cleanRun, migrate } from './migrate.js';
import { mib as toMiB, sec } from '../lib/units.js';

export interface DowntimeCell {
  ramBytes: number;
  dirtyPagesPerSec: number;
  downtimeMs: Spread;
  rounds: Spread;
  finalPages: Spread;
  precopyMiB: Spread;
  converged: boolean[];
  wallSec: Spread;
  failures: number;
}

export async function runDowntime(
  image: BenchImage,
  o: { workDir: string; rams: number[]; rates: number[]; reps: (ram: number, rate: number) => number },
  log: (l: string) => void,
): Promise<DowntimeCell[]> {
  const cells: DowntimeCell[] = [];
  for (const ram of o.rams) {
    for (const rate of o.rates) {
      const dt: number[] = [];
      const rounds: number[] = [];
      const fin: number[] = [];
      const mib: number[] = [];
      const conv: boolean[] = [];
      const wall: number[] = [];
      let failures = 0;
      for (let rep = 0; rep < o.reps(ram, rate); rep++) {
        const m = await migrate({
          workDir: o.workDir,
          image: image.path,
          label: 'downtime',
          sourceArgs: ['--guest', 'sim', '--ram', String(ram), '--dirty-rate', String(rate), '--disk-ops', '0', '--seed', String(rep + 1)],
          timeoutMs: 600_000,
        });
        cleanRun(o.workDir, 'downtime');
        const s = (m.sourceSummary ?? {}) as Record<string, unknown>;
        const pre = (s.precopy ?? {}) as Record<string, unknown>;
        if (m.sourceCode !== 0 || m.destCode !== 0 || typeof s.downtimeMs !== 'number') {
          failures++;
          log(`  RAM ${ram / 2 ** 20} MiB, ${rate} pages/s: FAILED (source ${m.sourceCode}, dest ${m.destCode})`);
          continue;
        }
        dt.push(s.downtimeMs);
        rounds.push(Number(pre.rounds));
        fin.push(Number(pre.finalPages));
        mib.push(toMiB(Number(pre.bytesSent)));
        conv.push(pre.converged === true);
        wall.push(sec(m.wholeMs));
        log(`  RAM ${ram / 2 ** 20} MiB, ${rate} pages/s: downtime ${s.downtimeMs} ms, ${String(pre.rounds)} rounds, ${String(pre.finalPages)} final pages, converged ${String(pre.converged)}`);
      }
      cells.push({
        ramBytes: ram,
        dirtyPagesPerSec: rate,
        downtimeMs: spread(dt),
        rounds: spread(rounds),
        finalPages: spread(fin),
        precopyMiB: spread(mib),
        converged: conv,
        wallSec: spread(wall),
        failures,
      });
    }
  }
  return cells;
}
