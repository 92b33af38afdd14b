// Demo tier: `postcopy demo` as a user runs it (1 GiB image, S's simulated guest moving to D mid-migration),
// a few times. The figure is the guest's own read latency on D while its disk is still arriving (D's summary
// `guest.readLatency`, read from the events file the demo keeps in its --dir), beside D's demand fetch
// latency and stage timings from the same summary.
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { lastEvent, timed } from '../lib/proc.js';
import { poolStages, readStages, type StageStats, type StageTable } from '../lib/stages.js';
import { spread, type Spread } from '../lib/stats.js';
import { sec } from '../lib/units.js';

/** The CLI built with the bench (dist/bench/src/cli/main.js): the same sources as the agents measured elsewhere. */
const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export interface DemoResult {
  runs: number;
  failures: number;
  /** The simulated guest's read latency on D, ms: each run's p50 / p99 / max, and read count. */
  guestReadP50Ms: Spread;
  guestReadP99Ms: Spread;
  guestReadMaxMs: Spread;
  guestReads: number[];
  /** D's demand fetch latency (all misses, guest's and verifier's), each run's p99. */
  demandP99Ms: Spread;
  downtimeMs: Spread;
  wallSec: Spread;
  stages: StageTable;
}

const num = (x: unknown) => (typeof x === 'number' && Number.isFinite(x) ? x : NaN);

export async function runDemo(o: { workDir: string; runs: number }, log: (l: string) => void): Promise<DemoResult> {
  const p50: number[] = [];
  const p99: number[] = [];
  const max: number[] = [];
  const reads: number[] = [];
  const demand: number[] = [];
  const downtime: number[] = [];
  const wall: number[] = [];
  const dStages: Array<Record<string, StageStats> | null> = [];
  const sStages: Array<Record<string, StageStats> | null> = [];
  let failures = 0;
  for (let i = 0; i < o.runs; i++) {
    const dir = join(o.workDir, 'demo');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const r = await timed(process.execPath, [MAIN, 'demo', '--dir', dir, '--seed', String(i + 1)], { log: join(o.workDir, `demo-${i + 1}.log`) });
    const ds = (lastEvent(join(dir, 'dest-events.jsonl'), 'summary') ?? null) as Record<string, unknown> | null;
    const ss = (lastEvent(join(dir, 'source-events.jsonl'), 'summary') ?? null) as Record<string, unknown> | null;
    rmSync(dir, { recursive: true, force: true });
    const guest = (ds?.guest ?? {}) as Record<string, unknown>;
    const lat = (guest.readLatency ?? {}) as Record<string, unknown>;
    if (r.code !== 0 || !ds || !(num(lat.count) > 0)) {
      failures++;
      log(`  demo ${i + 1}: FAILED (exit ${r.code}${ds ? ', no guest reads in D\'s summary' : ', no summary from D'}); log ${join(o.workDir, `demo-${i + 1}.log`)}`);
      continue;
    }
    p50.push(num(lat.p50Ms));
    p99.push(num(lat.p99Ms));
    max.push(num(lat.maxMs));
    reads.push(num(lat.count));
    demand.push(num((ds.demandLatency as Record<string, unknown> | undefined)?.p99Ms));
    downtime.push(num(ss?.downtimeMs));
    wall.push(sec(r.wallMs));
    dStages.push(readStages(ds, 'demandStages'));
    sStages.push(readStages(ss, 'urgentStages'));
    log(`  demo ${i + 1}: guest reads on D ${num(lat.count)}: p50 ${num(lat.p50Ms).toFixed(2)} p99 ${num(lat.p99Ms).toFixed(2)} max ${num(lat.maxMs).toFixed(2)} ms; D's demand p99 ${demand[demand.length - 1]!.toFixed(2)} ms; ${sec(r.wallMs).toFixed(1)} s`);
  }
  return {
    runs: o.runs,
    failures,
    guestReadP50Ms: spread(p50),
    guestReadP99Ms: spread(p99),
    guestReadMaxMs: spread(max),
    guestReads: reads,
    demandP99Ms: spread(demand),
    downtimeMs: spread(downtime),
    wallSec: spread(wall),
    stages: { dest: poolStages(dStages), source: poolStages(sStages) },
  };
}
