// Runs `postcopy dest|source` exactly as dist/…/cli/main.js does, plus bench-only instrumentation set by
// environment variables (no change to the agents' code):
//   PCB_STATS=FILE     at exit, write this process's rusage (CPU, peak RSS) as JSON
//   PCB_READ_LOG=1     with PCB_STATS: record each export read on D (offset, block missing?, ms inside the store)
//   PCB_NO_BULK=1      D's background stream is held ("no bulk running": demand fetches alone on the link) until
//                      SIGUSR2, when it starts as it would have at cut-over: the migration then completes by itself,
//                      so D and S still write their summaries (and their stage timings) for the idle run
//   PCB_MEM=1          with PCB_STATS: sample process.memoryUsage() every 100 ms and keep the sample of highest RSS
//                      (where peak memory goes: V8 heap, Buffers outside it, the rest)
//   PCB_LOOP_DELAY=1   with PCB_STATS: the event loop's delay (perf_hooks, 1 ms resolution: it wakes the loop every
//                      millisecond, so not for runs whose timings are reported)
// Garbage collections (count, major ones, pauses) go into PCB_STATS always: observing them costs nothing measurable.
import { writeFileSync } from 'node:fs';
import { constants as perfConstants, createHistogram, monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import type { ReadTrace } from '../src/common/block-device.js';
import { BlockStore } from '../src/dest/block-store.js';
import { Streamer } from '../src/dest/streamer.js';

const statsFile = process.env.PCB_STATS;
/** GC pauses in µs, and how many were major (mark-sweep-compact, incremental marking included). */
const gcPauses = createHistogram();
let gcMajor = 0;
let gcTotalMs = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    gcPauses.record(Math.max(1, Math.round(e.duration * 1000)));
    gcTotalMs += e.duration;
    const kind = (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind ?? 0;
    if (kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR || kind === perfConstants.NODE_PERFORMANCE_GC_INCREMENTAL) gcMajor++;
  }
}).observe({ entryTypes: ['gc'] });
const loopDelay = process.env.PCB_LOOP_DELAY === '1' ? monitorEventLoopDelay({ resolution: 1 }) : null;
loopDelay?.enable();
const reads: Array<[number, number, number]> = [];
let peakMemory: NodeJS.MemoryUsage | null = null;
if (process.env.PCB_MEM === '1') {
  setInterval(() => {
    const m = process.memoryUsage();
    if (!peakMemory || m.rss > peakMemory.rss) peakMemory = m;
  }, 100).unref();
}

if (process.env.PCB_NO_BULK === '1') {
  const original = Streamer.prototype.start;
  let held: Streamer | null = null;
  let released = false;
  Streamer.prototype.start = function start(this: Streamer): void {
    if (released) original.call(this);
    else held = this;
  };
  process.on('SIGUSR2', () => {
    released = true;
    if (held) original.call(held);
  });
}

if (process.env.PCB_READ_LOG === '1') {
  const original = BlockStore.prototype.read;
  BlockStore.prototype.read = async function read(this: BlockStore, offset: number, length: number, trace?: ReadTrace): Promise<Buffer> {
    const missing = this.mode === 'copy-on-read' && !this.isPresent(Math.floor(offset / this.blockSize));
    const t0 = performance.now();
    const data = await original.call(this, offset, length, trace);
    reads.push([offset, missing ? 1 : 0, performance.now() - t0]);
    return data;
  };
}

if (statsFile) {
  process.on('exit', (code) => {
    const ru = process.resourceUsage();
    writeFileSync(
      statsFile,
      JSON.stringify({
        code,
        pid: process.pid,
        cpuUserSec: ru.userCPUTime / 1e6,
        cpuSysSec: ru.systemCPUTime / 1e6,
        maxRssKiB: ru.maxRSS,
        reads,
        gc: { count: gcPauses.count, major: gcMajor, totalMs: gcTotalMs, p99Ms: gcPauses.count ? gcPauses.percentile(99) / 1000 : 0, maxMs: gcPauses.count ? gcPauses.max / 1000 : 0 },
        ...(loopDelay ? { loopDelayMs: { p50: loopDelay.percentile(50) / 1e6, p99: loopDelay.percentile(99) / 1e6, max: loopDelay.max / 1e6 } } : {}),
        ...(peakMemory ? { peakMemory } : {}),
      }),
    );
  });
}

await import('../src/cli/main.js');
