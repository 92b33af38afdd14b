// Demand-latency tier: 4 KiB reads through D's NBD export (Unix socket, our own NbdClient, one read at a time)
// of blocks D does not hold yet, so each one takes the copy-on-read path: urgent BLOCK_REQ to S, BLOCK_DATA
// back, written, bit set, read locally, answered. Measured in two modes on the same image:
//   bulk (stream running): D's background stream runs at full speed meanwhile (default --bulk-window); the
//         stream's own rate over the reads' window comes from D's progress events;
//   idle: D's background stream is held (bench/agent.ts PCB_NO_BULK), so the link carries the demand fetches
//         alone: the same path, the same processes, nothing queued ahead of them. After the reads the bench
//         releases the stream (SIGUSR2) so the migration completes and both agents write their summaries.
// Reads go to data blocks in descending order from the image's end while the stream (which continues just past
// each miss, then wraps to the start) fills the image from below, so they stay misses until the two meet; D logs
// per read whether the block was missing (bench/agent.ts PCB_READ_LOG) and only misses are counted.
// The local floor, in the same run: after each stream rep, as many 64 KiB reads of the same image, one at a time
// at random data blocks, from `qemu-nbd -r --persistent` on a Unix socket with the same NbdClient.
import { join } from 'node:path';
import { NbdClient } from '../../src/nbd/client.js';
import type { BenchImage } from '../lib/images.js';
import { EventTail, Server, freshOutput, lastEvent, readEvents, sleep, start, waitConnectable } from '../lib/proc.js';
import { poolStages, readStages, type StageStats, type StageTable } from '../lib/stages.js';
import { latencySummary, spread, type LatencySummary, type Spread } from '../lib/stats.js';
import { bulkSamples, windowRate, type WindowRate } from '../lib/window-rate.js';
import { cleanRun, migrate, type AgentStats } from './migrate.js';
import { KiB, mib, sec } from '../lib/units.js';

export const READ = 4096;
const BLOCK = 64 * KiB;
/** D's progress events every this many ms: the stream rate over the reads' window is taken from them. */
const PROGRESS_MS = 100;

export interface LatencyMode {
  /** Client-side (what a guest on the export sees), reads that were misses, pooled over reps. */
  client: LatencySummary;
  /** Inside D's store (BlockStore.read), the same reads. */
  store: LatencySummary;
  /** p99 of each rep (client side). */
  p99PerRep: Spread;
  reads: number;
  hits: number;
  /** D's own demandLatency (count, p50Ms, p99Ms, maxMs) from its summary. */
  destSummaryDemand: Array<Record<string, number>>;
  /** Bulk bytes / (cut-over → complete) over the whole migration, bulk mode only. */
  bulkMiBps: Spread;
  /** Bulk mode: the stream's rate over the reads' window (first → last read) per rep, from D's progress events. */
  streamDuringReads?: WindowRate[];
  /** Per-stage timings from D's and S's summaries, pooled over reps (absent stages: the agents do not report them). */
  stages?: StageTable;
  /** Each rep's garbage collections per agent: the pauses an urgent reply can wait through. */
  gc?: Array<RunOut['gc']>;
}

export interface LocalFloor {
  what: string;
  /** Client-side latency of the 64 KiB reads, pooled over reps. */
  client: LatencySummary;
  p99PerRep: Spread;
}

export interface LatencyResult {
  image: string;
  reps: number;
  bulk: LatencyMode;
  idle: LatencyMode;
  /** 64 KiB reads from qemu-nbd on the same image, as many as the stream mode's misses, in the same run. */
  qemuNbd?: LocalFloor;
  /** bulk p99 / idle p99 (client side), pooled; and p50. */
  holRatioP99: number;
  holRatioP50: number;
}

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

/** Every whole 64 KiB block inside the image's data runs. */
function dataBlocks(image: BenchImage): number[] {
  const blocks: number[] = [];
  for (const r of image.dataRuns) {
    for (let b = Math.ceil(r.offset / BLOCK); (b + 1) * BLOCK <= r.offset + r.length; b++) blocks.push(b);
  }
  return blocks;
}

/** 4 KiB read offsets in data blocks, descending from the image's end, skipping 0–2 blocks between reads. */
export function missTargets(image: BenchImage, seed: number): number[] {
  const blocks = dataBlocks(image).sort((a, b) => b - a);
  const rnd = rng(seed);
  const out: number[] = [];
  for (let i = 0; i < blocks.length; i += 1 + Math.floor(rnd() * 3)) out.push(blocks[i]! * BLOCK + Math.floor(rnd() * (BLOCK / READ)) * READ);
  return out;
}

/** `count` 64 KiB reads, one at a time, at random data blocks, from a running qemu-nbd: client-side ms each. */
async function localReads(socketPath: string, image: BenchImage, count: number, seed: number): Promise<number[]> {
  const blocks = dataBlocks(image);
  const rnd = rng(seed);
  const nbd = await NbdClient.connect({ socketPath }, 'disk');
  const out: number[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const off = blocks[Math.floor(rnd() * blocks.length)]! * BLOCK;
      const t0 = performance.now();
      await nbd.read(off, BLOCK);
      out.push(performance.now() - t0);
    }
  } finally {
    await nbd.close();
  }
  return out;
}

interface RunOut {
  client: number[];
  store: number[];
  hits: number;
  reads: number;
  demand: Record<string, number> | null;
  bulkMiBps: number;
  window: WindowRate | null;
  destStages: Record<string, StageStats> | null;
  sourceStages: Record<string, StageStats> | null;
  /** Each agent's garbage collections during the run (bench/agent.ts). */
  gc: { dest: AgentStats['gc'] | null; source: AgentStats['gc'] | null };
}

async function oneRun(image: BenchImage, mode: 'bulk' | 'idle', rep: number, o: { workDir: string; idleReads: number }): Promise<RunOut> {
  const sock = join(o.workDir, `lat-${mode}.nbd.sock`);
  const client: Array<[number, number]> = [];
  const label = `lat-${mode}`;
  let windowMs: [number, number] = [NaN, NaN];
  const m = await migrate({
    workDir: o.workDir,
    image: image.path,
    label,
    destArgs: ['--nbd-socket', sock, '--progress-interval', String(PROGRESS_MS)],
    destEnv: { PCB_READ_LOG: '1', ...(mode === 'idle' ? { PCB_NO_BULK: '1' } : {}) },
    afterCutover: async ({ dest, destEvents }) => {
      const nbd = await NbdClient.connect({ socketPath: sock }, 'disk');
      let complete = false;
      // Only the new bytes of D's events are read per poll: this process is the client being timed.
      const tail = new EventTail(destEvents);
      const watch = setInterval(() => {
        if (tail.has('complete')) complete = true;
      }, 20);
      try {
        const list = missTargets(image, 1000 + rep);
        const limit = mode === 'idle' ? Math.min(o.idleReads, list.length) : list.length;
        const w0 = Date.now();
        for (let i = 0; i < limit && !complete; i++) {
          const off = list[i]!;
          const t0 = performance.now();
          await nbd.read(off, READ);
          client.push([off, performance.now() - t0]);
        }
        windowMs = [w0, Date.now()];
      } finally {
        clearInterval(watch);
        await nbd.close();
      }
      // Idle: let the held stream go, so the migration completes and both agents write their summaries.
      if (mode === 'idle') dest.child.kill('SIGUSR2');
      // D then serves the local image until SIGTERM; S exits by itself.
      while (!lastEvent(destEvents, 'complete')) await sleep(10);
      dest.child.kill('SIGTERM');
    },
  });
  cleanRun(o.workDir, label);
  const logged = new Map<number, [number, number]>();
  for (const [off, miss, ms] of m.dest?.reads ?? []) logged.set(off, [miss, ms]);
  const cl: number[] = [];
  const st: number[] = [];
  let hits = 0;
  for (const [off, ms] of client) {
    const d = logged.get(off);
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
    demand: (ds.demandLatency as Record<string, number> | undefined) ?? null,
    bulkMiBps: mode === 'bulk' ? mib(Number(ds.bytesFetchedBulk ?? NaN)) / sec(m.transferMs) : NaN,
    window: mode === 'bulk' ? windowRate(bulkSamples(readEvents(m.destEvents)), windowMs[0], windowMs[1]) : null,
    destStages: readStages(m.destSummary, 'demandStages'),
    sourceStages: readStages(m.sourceSummary, 'urgentStages'),
    gc: { dest: m.dest?.gc ?? null, source: m.source?.gc ?? null },
  };
}

/** "D 14 GCs (3 major, p99 5.1 ms)" for a rep's log line: pauses the urgent path waits through. */
function gcLine(gc: { dest: AgentStats['gc'] | null; source: AgentStats['gc'] | null }): string {
  const one = (who: string, g: AgentStats['gc'] | null | undefined) => (g ? `${who} ${g.count} GCs (${g.major} major, p99 ${g.p99Ms.toFixed(1)} ms, max ${g.maxMs.toFixed(1)} ms)` : `${who} GCs n/a`);
  return `${one('D', gc.dest)}, ${one('S', gc.source)}`;
}

export async function runLatency(image: BenchImage, o: { workDir: string; reps: number; idleReads: number }, log: (l: string) => void): Promise<LatencyResult> {
  const fresh = () => ({ runs: [] as RunOut[] });
  const acc = { bulk: fresh(), idle: fresh() };
  const floor: number[][] = [];
  const qSock = join(o.workDir, 'lat-qemu-nbd.sock');
  const qemu = new Server('qemu-nbd', start('qemu-nbd', ['-r', '--persistent', '-f', 'raw', '-x', 'disk', '-k', qSock, image.path], { log: join(o.workDir, 'lat-qemu-nbd.log') }));
  try {
    await waitConnectable({ path: qSock });
    for (let rep = 0; rep < o.reps; rep++) {
      for (const mode of rep % 2 === 0 ? (['bulk', 'idle'] as const) : (['idle', 'bulk'] as const)) {
        const r = await oneRun(image, mode, rep, o);
        acc[mode].runs.push(r);
        const s = latencySummary(r.client);
        const w = r.window ? `, stream ${r.window.miBps.toFixed(0)} MiB/s over the ${r.window.windowSec.toFixed(2)} s of reads (whole migration ${r.bulkMiBps.toFixed(0)} MiB/s)` : '';
        log(`  ${mode === 'bulk' ? 'stream' : 'idle'} rep ${rep + 1}: ${r.client.length} misses (${r.hits} hits) p50 ${s.p50.toFixed(3)} p99 ${s.p99.toFixed(3)} max ${s.max.toFixed(3)} ms${w}; stages: D ${r.destStages ? 'yes' : 'n/a'}, S ${r.sourceStages ? 'yes' : 'n/a'}; ${gcLine(r.gc)}`);
        if (mode === 'bulk' && r.client.length > 0) {
          // The floor: as many local reads as this rep's misses, after the run's writeback (sync), so it is not in them.
          freshOutput();
          const q = await localReads(qSock, image, r.client.length, 2000 + rep);
          floor.push(q);
          const qs = latencySummary(q);
          log(`  qemu-nbd 64 KiB rep ${rep + 1}: ${q.length} reads p50 ${qs.p50.toFixed(3)} p99 ${qs.p99.toFixed(3)} max ${qs.max.toFixed(3)} ms`);
        }
      }
    }
  } finally {
    await qemu.stop();
  }
  const mk = (runs: RunOut[]): LatencyMode => ({
    client: latencySummary(runs.flatMap((r) => r.client)),
    store: latencySummary(runs.flatMap((r) => r.store)),
    p99PerRep: spread(runs.map((r) => latencySummary(r.client).p99)),
    reads: runs.reduce((a, r) => a + r.reads, 0),
    hits: runs.reduce((a, r) => a + r.hits, 0),
    destSummaryDemand: runs.flatMap((r) => (r.demand ? [r.demand] : [])),
    bulkMiBps: spread(runs.map((r) => r.bulkMiBps)),
    ...(runs.some((r) => r.window) ? { streamDuringReads: runs.flatMap((r) => (r.window ? [r.window] : [])) } : {}),
    stages: { dest: poolStages(runs.map((r) => r.destStages)), source: poolStages(runs.map((r) => r.sourceStages)) },
    gc: runs.map((r) => r.gc),
  });
  const bulk = mk(acc.bulk.runs);
  const idle = mk(acc.idle.runs);
  return {
    image: image.path,
    reps: o.reps,
    bulk,
    idle,
    qemuNbd: {
      what: '64 KiB reads, one at a time at random data blocks, from qemu-nbd -r --persistent on a Unix socket (our NbdClient)',
      client: latencySummary(floor.flat()),
      p99PerRep: spread(floor.map((q) => latencySummary(q).p99)),
    },
    holRatioP99: bulk.client.p99 / idle.client.p99,
    holRatioP50: bulk.client.p50 / idle.client.p50,
  };
}
