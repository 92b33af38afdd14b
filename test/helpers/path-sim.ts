// A simulated path between D and S for D's real streamer, fetcher and path model, on vitest's fake clock: each
// BLOCK_REQ reaches S after half the round trip; S answers at once in frames of up to 256 KiB; each frame joins a
// FIFO bottleneck (departs at the link's rate after everything queued ahead of it), then takes the other half of
// the round trip. The harness records the bottleneck's queue delay per frame, demand-read latencies and goodput,
// so the controller's behaviour on a WAN can be checked deterministically (no real time, no machine noise).
// Call within vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'performance', 'Date'] }).
import { vi } from 'vitest';
import { Fetcher, type FetchSink } from '../../src/dest/fetcher.js';
import { Streamer } from '../../src/dest/streamer.js';
import type { BlockStore } from '../../src/dest/block-store.js';
import type { Link } from '../../src/link/link.js';
import { pathLimitsUpTo } from '../../src/dest/path-constants.js';
import { BULK_CHUNK_BYTES, CLASS_BULK, CLASS_URGENT } from '../../src/protocol/constants.js';
import type { BlockClass, Message } from '../../src/protocol/messages.js';
import type { Logger } from '../../src/common/logger.js';
import type { BulkRateLimit } from '../../src/common/token-bucket.js';
import { pino } from 'pino';

export const SIM_BLOCK = 64 * 1024;

export interface SimPath {
  rttMs: number;
  /** Bytes per ms at the bottleneck (S → D); Infinity: none. */
  rate: number;
}

export interface SimOptions {
  blocks: number;
  path: SimPath;
  /** --bulk-window (default: the agent's default). */
  maxWindowBytes?: number;
  /** A guest's demand read every this many ms (one at a time, at a missing block far from the stream); none if absent. */
  demandEveryMs?: number;
  /** Change the path at these times (ms since start). */
  changes?: Array<{ atMs: number; path: SimPath }>;
  /** Give up after this long (simulated). */
  limitMs?: number;
  /** D's cap on bulk (--max-bandwidth). */
  bulkRate?: BulkRateLimit;
}

export interface SimResult {
  /** Start → every block present (ms), or NaN if the limit came first. */
  doneMs: number;
  /** Bulk payload bytes per ms over the run. */
  goodput: number;
  /** Each frame's wait in the bottleneck's queue (ms), with the time it arrived there. */
  queueDelays: Array<[number, number]>;
  /** Each demand read: [issued at, latency ms]. */
  demand: Array<[number, number]>;
  /** Every 10 ms: [ms, window, pacing bytes/ms or null, phase, bytes present]. */
  trace: Array<[number, number, number | null, string, number]>;
  maxWindowSeen: number;
  fetcher: Fetcher;
}

const silent: Logger = pino({ level: 'silent' });

/** The store's part the streamer and the harness use: missing, in flight, present. */
class SimStore {
  readonly blockSize = SIM_BLOCK;
  readonly present: Uint8Array;
  readonly inflight: Uint8Array;
  presentCount = 0;
  readonly writesPaused = false;
  onWritable: () => void = () => {};
  constructor(
    readonly blockCount: number,
    readonly fetcher: Fetcher,
  ) {
    this.present = new Uint8Array(blockCount);
    this.inflight = new Uint8Array(blockCount);
  }
  isPresent(b: number): boolean {
    return this.present[b] === 1;
  }
  isInflight(b: number): boolean {
    return this.inflight[b] === 1;
  }
  nextMissing(from: number): number {
    for (let b = Math.max(0, from); b < this.blockCount; b++) if (this.present[b] === 0) return b;
    return -1;
  }
  fetchBulk(first: number, count: number): void {
    this.fetch(first, count, CLASS_BULK, () => {});
  }
  fetch(first: number, count: number, cls: BlockClass, done: () => void): void {
    for (let b = first; b < first + count; b++) this.inflight[b] = 1;
    const sink: FetchSink = {
      onData: () => {},
      onZero: () => {},
      onDone: () => {
        for (let b = first; b < first + count; b++) {
          this.inflight[b] = 0;
          if (this.present[b] === 0) this.presentCount++;
          this.present[b] = 1;
        }
        done();
      },
      onError: (e) => {
        throw e;
      },
    };
    this.fetcher.request(first * SIM_BLOCK, count * SIM_BLOCK, cls, sink);
  }
}

/** S and the bottleneck: BLOCK_REQs in, BLOCK_DATA frames out after the path's delays. */
class SimLink {
  closed = false;
  path: SimPath;
  #lastDeparture = 0;
  readonly queueDelays: Array<[number, number]> = [];
  readonly #deliver: (msg: Message, firstByteAt: number) => void;
  constructor(path: SimPath, deliver: (msg: Message, firstByteAt: number) => void) {
    this.path = path;
    this.#deliver = deliver;
  }
  batch(fn: () => void): void {
    fn();
  }
  ping(): void {}
  send(msg: Message, onSent?: () => void): void {
    onSent?.();
    if (msg.type !== 'BLOCK_REQ') return;
    const half = this.path.rttMs / 2;
    setTimeout(() => this.#serve(msg), half);
  }
  #serve(req: Extract<Message, { type: 'BLOCK_REQ' }>): void {
    const now = performance.now();
    for (let at = req.offset; at < req.offset + req.length; at += BULK_CHUNK_BYTES) {
      const len = Math.min(BULK_CHUNK_BYTES, req.offset + req.length - at);
      const start = Math.max(now, this.#lastDeparture);
      const departure = start + (Number.isFinite(this.path.rate) ? len / this.path.rate : 0);
      this.#lastDeparture = departure;
      this.queueDelays.push([now, start - now]);
      const done = at + len >= req.offset + req.length;
      // The payload's length is what the fetcher checks and counts; a shared zero buffer of that length stands in.
      const frame: Message = { type: 'BLOCK_DATA', id: req.id, offset: at, data: zeros(len), done, urgent: req.cls === CLASS_URGENT };
      // Its first byte left the bottleneck at `start` and arrives half a round trip later (what the real link reads).
      const firstByteAt = start + this.path.rttMs / 2;
      setTimeout(() => this.#deliver(frame, firstByteAt), departure + this.path.rttMs / 2 - now);
    }
  }
}

const zeroBuffers = new Map<number, Buffer>();
function zeros(n: number): Buffer {
  let b = zeroBuffers.get(n);
  if (!b) zeroBuffers.set(n, (b = Buffer.alloc(n)));
  return b;
}

/** Run one simulated migration to the end (or the limit) and say what the path saw. */
export function simulate(o: SimOptions): SimResult {
  const rate = o.bulkRate ? { bulkRate: o.bulkRate } : {};
  const fetcher = new Fetcher(silent, { path: pathLimitsUpTo(o.maxWindowBytes), ...rate });
  const store = new SimStore(o.blocks, fetcher);
  const link = new SimLink(o.path, (msg, firstByteAt) => {
    if (msg.type === 'BLOCK_DATA' || msg.type === 'BLOCK_ZERO' || msg.type === 'BLOCK_ERR') fetcher.onReply(msg, firstByteAt);
  });
  const streamer = new Streamer(store as unknown as BlockStore, fetcher, { batchBytes: BULK_CHUNK_BYTES, ...rate });
  fetcher.onSettled = () => streamer.fill();
  fetcher.attach(link as unknown as Link);
  const t0 = performance.now();
  // The link's first PING, as the agent sends on attach.
  setTimeout(() => fetcher.path.onRtt(o.path.rttMs, performance.now()), o.path.rttMs);
  streamer.start();

  const demand: Array<[number, number]> = [];
  const trace: SimResult['trace'] = [];
  let maxWindowSeen = 0;
  let demandNext = o.demandEveryMs === undefined ? Infinity : o.demandEveryMs;
  let demandBusy = false;
  const limit = o.limitMs ?? 60_000;
  const changes = [...(o.changes ?? [])].sort((a, b) => a.atMs - b.atMs);
  let bulkDone = NaN;
  for (let t = 0; t < limit; t++) {
    vi.advanceTimersByTime(1);
    const now = performance.now() - t0;
    while (changes.length > 0 && changes[0]!.atMs <= now) link.path = changes.shift()!.path;
    if (t % 10 === 0) {
      const w = streamer.windowBytes;
      maxWindowSeen = Math.max(maxWindowSeen, w);
      trace.push([now, w, fetcher.path.pacingRate(performance.now()), fetcher.path.phase, store.presentCount * SIM_BLOCK]);
    }
    if (!demandBusy && now >= demandNext) {
      // The guest reads the last missing block not in flight (far from the stream, which runs from the start).
      let b = o.blocks - 1;
      while (b >= 0 && (store.isPresent(b) || store.isInflight(b))) b--;
      if (b >= 0) {
        demandBusy = true;
        const issued = performance.now();
        streamer.hint(b);
        store.fetch(b, 1, CLASS_URGENT, () => {
          demand.push([issued - t0, performance.now() - issued]);
          demandBusy = false;
          demandNext = performance.now() - t0 + o.demandEveryMs!;
        });
      }
    }
    if (store.presentCount === o.blocks) {
      bulkDone = now;
      break;
    }
  }
  streamer.stop();
  const bytes = store.presentCount * SIM_BLOCK;
  const span = Number.isNaN(bulkDone) ? limit : bulkDone;
  return { doneMs: bulkDone, goodput: bytes / span, queueDelays: link.queueDelays, demand, trace, maxWindowSeen, fetcher };
}

/** Bytes per ms that arrived between two times of the run (from the 10 ms trace). */
export function goodputBetween(r: SimResult, fromMs: number, toMs: number): number {
  const at = (ms: number) => r.trace.find(([t]) => t >= ms) ?? r.trace[r.trace.length - 1]!;
  const a = at(fromMs);
  const b = at(toMs);
  return (b[4] - a[4]) / (b[0] - a[0]);
}

/** The q-quantile (0..1) of a list of numbers. */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}
