// Demand-latency tier: 4 KiB reads through D's NBD export (Unix socket, our own NbdClient, one read at a time)
// of blocks D does not hold yet, so each one takes the copy-on-read path: urgent BLOCK_REQ to S, BLOCK_DATA
// back, written, bit set, read locally, answered. Measured twice on the same image:
//   bulk: D's background stream runs at full speed meanwhile (default --bulk-window);
//   idle: D's background stream never starts (bench/agent.ts PCB_NO_BULK), so the link carries the demand
//         fetches alone: the same path, the same processes, nothing queued ahead of them.
// Reads go to data blocks in descending order from the image's end while the stream (which continues just past
// each miss, then wraps to the start) fills the image from below, so they stay misses until the two meet; D logs
// per read whether the block was missing (bench/agent.ts PCB_READ_LOG) and only misses are counted.
import { join } from 'node:path';
import { NbdClient } from '../../src/nbd/client.js';
import type { BenchImage } from '../lib/images.js';
import { lastEvent, sleep } from '../lib/proc.js';
import { latencySummary, spread, type LatencySummary, type Spread } from '../lib/stats.js';
import { cleanRun, migrate } from './migrate.js';
import { KiB, mib, sec } from '../lib/units.js';

const READ = 4096;
const BLOCK = 64 * KiB;

export interface LatencyMode {
  /** Client-side (what a guest on the export sees), reads that were misses, pooled over reps. */
  client: LatencySummary;
  /** Inside D's store (BlockStore.read), the same reads. */
  store: LatencySummary;
  /** p99 of each rep (client side). */
  p99PerRep: Spread;
  reads: number;
  hits: number;
  /** D's own demandLatencyMs from its summary (bulk mode only: idle never completes). */
  destSummaryDemand: Array<Record<string, number>>;
  /** Bulk bytes / (cut-over → complete), bulk mode only. */
  bulkMiBps: Spread;
}

export interface LatencyResult {
  image: string;
  reps: number;
  bulk: LatencyMode;
  idle: LatencyMode;
  /** bulk p99 / idle p99 (client side), pooled; and p50. */
  holRatioP99: number;
  holRatioP50: number;
}

function targets(image: BenchImage, seed: number): number[] {
  const blocks: number[] = [];
  for (const r of image.dataRuns) {
    for (let b = Math.ceil(r.offset / BLOCK); (b + 1) * BLOCK <= r.offset + r.length; b++) blocks.push(b);
  }
  blocks.sort((a, b) => b - a);
  let x = seed >>> 0 || 1;
  const rnd = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
  const out: number[] = [];
  for (let i = 0; i < blocks.length; i += 1 + Math.floor(rnd() * 3)) out.push(blocks[i]! * BLOCK + Math.floor(rnd() * (BLOCK / READ)) * READ);
  return out;
}

async function oneRun(image: BenchImage, mode: 'bulk' | 'idle', rep: number, o: { workDir: string; idleReads: number }) {
  const sock = join(o.workDir, `lat-${mode}.nbd.sock`);
  const client: Array<[number, number]> = [];
  const label = `lat-${mode}`;
  const m = await migrate({
    workDir: o.workDir,
    image: image.path,
    label,
    destArgs: ['--nbd-socket', sock, '--progress-interval', '100'],
    destEnv: { PCB_READ_LOG: '1', ...(mode === 'idle' ? { PCB_NO_BULK: '1' } : {}) },
    afterCutover: async ({ dest, source, destEvents }) => {
      const nbd = await NbdClient.connect({ socketPath: sock }, 'disk');
      let complete = false;
      const watch = setInterval(() => {
        if (lastEvent(destEvents, 'complete')) complete = true;
      }, 20);
      try {
        const list = targets(image, 1000 + rep);
        const limit = mode === 'idle' ? Math.min(o.idleReads, list.length) : list.length;
        for (let i = 0; i < limit && !complete; i++) {
          const off = list[i]!;
          const t0 = performance.now();
          await nbd.read(off, READ);
          client.push([off, performance.now() - t0]);
        }
      } finally {
        clearInterval(watch);
        await nbd.close();
      }
      if (mode === 'bulk') {
        // The migration finishes by itself; D then serves the local image until SIGTERM.
        while (!lastEvent(destEvents, 'complete')) await sleep(10);
        dest.child.kill('SIGTERM');
      } else {
        dest.child.kill('SIGTERM');
        await dest.exited;
        source.child.kill('SIGTERM');
      }
    },
  });
  cleanRun(o.workDir, label);
  const missing = new Map<number, [number, number]>();
  for (const [off, miss, ms] of m.dest?.reads ?? []) missing.set(off, [miss, ms]);
  const cl: number[] = [];
  const st: number[] = [];
  let hits = 0;
  for (const [off, ms] of client) {
    const d = missing.get(off);
    if (!d) continue;
    if (d[0] === 1) {
      cl.push(ms);
      st.push(d[1]);
    } else hits++;
  }
  const ds = (m.destSummary ?? {}) as Record<string, unknown>;
  return {
    client: cl,
    store: st,
    hits,
    reads: client.length,
    demand: (ds.demandLatencyMs as Record<string, number> | undefined) ?? null,
    bulkMiBps: mode === 'bulk' ? mib(Number(ds.bytesFetchedBulk ?? NaN)) / sec(m.transferMs) : NaN,
  };
}

export async function runLatency(image: BenchImage, o: { workDir: string; reps: number; idleReads: number }, log: (l: string) => void): Promise<LatencyResult> {
  const acc = {
    bulk: { client: [] as number[], store: [] as number[], p99: [] as number[], reads: 0, hits: 0, demand: [] as Array<Record<string, number>>, mibps: [] as number[] },
    idle: { client: [] as number[], store: [] as number[], p99: [] as number[], reads: 0, hits: 0, demand: [] as Array<Record<string, number>>, mibps: [] as number[] },
  };
  for (let rep = 0; rep < o.reps; rep++) {
    for (const mode of rep % 2 === 0 ? (['bulk', 'idle'] as const) : (['idle', 'bulk'] as const)) {
      const r = await oneRun(image, mode, rep, o);
      const a = acc[mode];
      a.client.push(...r.client);
      a.store.push(...r.store);
      a.p99.push(latencySummary(r.client).p99);
      a.reads += r.reads;
      a.hits += r.hits;
      if (r.demand) a.demand.push(r.demand);
      if (Number.isFinite(r.bulkMiBps)) a.mibps.push(r.bulkMiBps);
      const s = latencySummary(r.client);
      log(`  ${mode} rep ${rep + 1}: ${r.client.length} misses (${r.hits} hits) p50 ${s.p50.toFixed(3)} p99 ${s.p99.toFixed(3)} max ${s.max.toFixed(3)} ms${mode === 'bulk' ? `, bulk ${r.bulkMiBps.toFixed(0)} MiB/s` : ''}`);
    }
  }
  const mk = (a: (typeof acc)['bulk']): LatencyMode => ({
    client: latencySummary(a.client),
    store: latencySummary(a.store),
    p99PerRep: spread(a.p99),
    reads: a.reads,
    hits: a.hits,
    destSummaryDemand: a.demand,
    bulkMiBps: spread(a.mibps),
  });
  const bulk = mk(acc.bulk);
  const idle = mk(acc.idle);
  return { image: image.path, reps: o.reps, bulk, idle, holRatioP99: bulk.client.p99 / idle.client.p99, holRatioP50: bulk.client.p50 / idle.client.p50 };
}
