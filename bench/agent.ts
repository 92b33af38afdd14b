// Runs `postcopy dest|source` exactly as dist/…/cli/main.js does, plus bench-only instrumentation set by
// environment variables (no change to the agents' code):
//   PCB_STATS=FILE     at exit, write this process's rusage (CPU, peak RSS) as JSON
//   PCB_READ_LOG=1     with PCB_STATS: record each export read on D (offset, block missing?, ms inside the store)
//   PCB_NO_BULK=1      D's background stream is held ("no bulk running": demand fetches alone on the link) until
//                      SIGUSR2, when it starts as it would have at cut-over: the migration then completes by itself,
//                      so D and S still write their summaries (and their stage timings) for the idle run
//   PCB_MEM=1          with PCB_STATS: sample process.memoryUsage() every 100 ms and keep the sample of highest RSS
//                      (where peak memory goes: V8 heap, Buffers outside it, the rest)
import { writeFileSync } from 'node:fs';
import type { ReadTrace } from '../src/common/block-device.js';
import { BlockStore } from '../src/dest/block-store.js';
import { Streamer } from '../src/dest/streamer.js';

const statsFile = process.env.PCB_STATS;
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
        ...(peakMemory ? { peakMemory } : {}),
      }),
    );
  });
}

await import('../src/cli/main.js');
