// D's background streamer: keeps bulk requests in flight for the blocks still missing, contiguous blocks batched
// into one request, continuing just past the latest demand miss (locality). How much is in flight and how fast
// requests go out follow the path model (path-estimator.ts): the window is about the bandwidth-delay product and
// requests are paced at the bottleneck's rate, so a long link is filled and no standing queue builds ahead of demand
// replies. While the guest waits on demand reads, bulk leaves headroom (BENCHMARKS.md, "WAN").
import type { Fetcher } from './fetcher.js';
import type { BlockStore } from './block-store.js';
import type { BulkRateLimit } from '../common/token-bucket.js';
import { SYSTEM_CLOCK, type DestClock } from './dest-clock.js';
import { PACED_REQUEST_MS, PACING_BURST_MS } from './path-constants.js';
import { DEMAND_QUIET_MS, STREAM_REFILL_FRACTION, STREAM_REFILL_MAX_BYTES } from './store-constants.js';

export interface StreamerOptions {
  /** Largest single bulk request. */
  batchBytes: number;
  /** How long after the last demand miss the guest counts as waiting (default 100 ms, at least two round trips). */
  demandQuietMs?: number;
  /** The clock and the pacing timer (default: the system's; tests bring their own). */
  clock?: DestClock;
  /** The cap the path's pacing keeps under (the fetcher's path reads it): a change re-paces at once. */
  bulkRate?: BulkRateLimit;
}

export class Streamer {
  readonly #store: BlockStore;
  readonly #fetcher: Fetcher;
  readonly #opts: StreamerOptions;
  readonly #clock: DestClock;
  #cursor = 0;
  #running = false;
  #filling = false;
  #lastDemandAt = -Infinity;
  #timer: unknown = null;
  #offRate: (() => void) | null = null;

  constructor(store: BlockStore, fetcher: Fetcher, opts: StreamerOptions) {
    this.#store = store;
    this.#fetcher = fetcher;
    this.#opts = opts;
    this.#clock = opts.clock ?? SYSTEM_CLOCK;
    // Paused while the image's disk fails (nothing fetched could be kept); the store says when it takes writes again.
    store.onWritable = () => this.fill();
  }

  start(): void {
    this.#running = true;
    // A new cap: a wake-up timed for the old rate is dropped and the window refilled at the new one.
    this.#offRate ??= this.#opts.bulkRate?.onChange(() => {
      this.#cancelTimer();
      this.fill();
    }) ?? null;
    this.fill();
  }

  stop(): void {
    this.#running = false;
    this.#offRate?.();
    this.#offRate = null;
    this.#cancelTimer();
  }

  #cancelTimer(): void {
    if (this.#timer !== null) this.#clock.clearTimer(this.#timer);
    this.#timer = null;
  }

  /** After a demand miss at `block`, the guest will likely read on from there. */
  hint(block: number): void {
    this.#cursor = block + 1;
    this.#lastDemandAt = this.#clock.now();
  }

  /** The guest waited on a demand read lately (within two round trips, and at least the quiet time). */
  get guestWaiting(): boolean {
    const rtt = this.#fetcher.path.srttMs ?? 0;
    return this.#clock.now() - this.#lastDemandAt < Math.max(this.#opts.demandQuietMs ?? DEMAND_QUIET_MS, 2 * rtt);
  }

  /** The window now (the path model's, with headroom while the guest waits). */
  get windowBytes(): number {
    const path = this.#fetcher.path;
    path.setHeadroom(this.guestWaiting);
    return path.windowBytes(this.#clock.now());
  }

  /** Top the window up. Called on start, after each finished request, when pacing lets more go, and after a reconnect. */
  fill(): void {
    if (!this.#running || this.#filling || this.#store.writesPaused) return;
    const window = this.windowBytes;
    const rate = this.#fetcher.path.pacingRate(this.#clock.now());
    const requestBytes = this.#requestBytes(rate);
    // Requests go in batches (a request per reply would cost a system call on each side for a few dozen bytes): once
    // half the window is free, at most 1 MiB, and when paced no more than the pacing lets go at once.
    const batch = Math.min(window * (1 - STREAM_REFILL_FRACTION), STREAM_REFILL_MAX_BYTES, rate === null ? Infinity : Math.max(requestBytes, rate * PACING_BURST_MS));
    if (window - this.#fetcher.bulkBytesInFlight < batch) return;
    this.#filling = true;
    try {
      this.#fetcher.batch(() => this.#fillWindow(window, rate, requestBytes));
    } finally {
      this.#filling = false;
    }
  }

  #fillWindow(window: number, rate: number | null, requestBytes: number): void {
    const store = this.#store;
    const path = this.#fetcher.path;
    const maxBlocks = Math.max(1, Math.floor(requestBytes / store.blockSize));
    let wrapped = false;
    while (this.#fetcher.serving && this.#fetcher.bulkBytesInFlight < window) {
      const allowance = path.allowance(this.#clock.now(), 2 * requestBytes);
      if (rate !== null && allowance <= 0) {
        this.#wakeWhenPaced(rate, allowance);
        return;
      }
      const b = this.#nextCandidate(this.#cursor);
      if (b < 0) {
        if (wrapped || this.#cursor === 0) {
          // Room in the window and nothing to ask for: what is measured now says nothing of the path's limit.
          path.markAppLimited();
          return;
        }
        wrapped = true;
        this.#cursor = 0;
        continue;
      }
      let n = 1;
      while (n < maxBlocks && b + n < store.blockCount && !store.isPresent(b + n) && !store.isInflight(b + n)) n++;
      store.fetchBulk(b, n);
      this.#cursor = b + n;
    }
  }

  /** Paced, a request carries a couple of milliseconds of the rate (small bursts at the bottleneck); unpaced, a batch. */
  #requestBytes(rate: number | null): number {
    const { batchBytes } = this.#opts;
    if (rate === null) return batchBytes;
    return Math.min(batchBytes, Math.max(this.#store.blockSize, rate * PACED_REQUEST_MS));
  }

  /** The allowance is spent: come back when a block's worth has accrued (timers run late; the allowance allows for it). */
  #wakeWhenPaced(rate: number, allowance: number): void {
    if (this.#timer !== null) return;
    const ms = Math.max(1, (this.#store.blockSize - allowance) / rate);
    this.#timer = this.#clock.setTimer(ms, () => {
      this.#timer = null;
      this.fill();
    });
  }

  #nextCandidate(from: number): number {
    for (let b = this.#store.nextMissing(from); b >= 0; b = this.#store.nextMissing(b + 1)) {
      if (!this.#store.isInflight(b)) return b;
    }
    return -1;
  }
}
