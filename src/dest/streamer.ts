// D's background streamer: keeps a window of bulk requests in flight for the blocks still missing,
// contiguous blocks batched into one request, continuing just past the latest demand miss (locality).
// While the guest is waiting on demand reads the window shrinks, so a demand reply queues behind little bulk
// data (BENCHMARKS.md), and it grows back once the guest has been quiet a while.
import type { Fetcher } from './fetcher.js';
import type { BlockStore } from './block-store.js';
import { DEMAND_QUIET_MS, DEMAND_WINDOW_BYTES, STREAM_REFILL_FRACTION } from './store-constants.js';

export interface StreamerOptions {
  /** Bulk bytes in flight at most. */
  windowBytes: number;
  /** Largest single bulk request. */
  batchBytes: number;
  /** The window while demand reads are recent (default: min(window, 512 KiB)). */
  demandWindowBytes?: number;
  /** How long after the last demand miss the smaller window holds (default 100 ms). */
  demandQuietMs?: number;
  /** Clock (tests). */
  now?: () => number;
}

export class Streamer {
  readonly #store: BlockStore;
  readonly #fetcher: Fetcher;
  readonly #opts: StreamerOptions;
  #cursor = 0;
  #running = false;
  #filling = false;
  #lastDemandAt = -Infinity;
  readonly #now: () => number;

  constructor(store: BlockStore, fetcher: Fetcher, opts: StreamerOptions) {
    this.#store = store;
    this.#fetcher = fetcher;
    this.#opts = opts;
    this.#now = opts.now ?? (() => performance.now());
    // Paused while the image's disk fails (nothing fetched could be kept); the store says when it takes writes again.
    store.onWritable = () => this.fill();
  }

  start(): void {
    this.#running = true;
    this.fill();
  }

  stop(): void {
    this.#running = false;
  }

  /** After a demand miss at `block`, the guest will likely read on from there. */
  hint(block: number): void {
    this.#cursor = block + 1;
    this.#lastDemandAt = this.#now();
  }

  /** The window now: smaller while the guest has recently waited on a demand read. */
  get windowBytes(): number {
    const { windowBytes, demandWindowBytes, demandQuietMs } = this.#opts;
    const demandRecent = this.#now() - this.#lastDemandAt < (demandQuietMs ?? DEMAND_QUIET_MS);
    return demandRecent ? Math.min(windowBytes, demandWindowBytes ?? DEMAND_WINDOW_BYTES) : windowBytes;
  }

  /**
   * Top the window up. Called on start, after each finished request, and after a reconnect. It waits until
   * half the window is free and then sends the requests together: a request per reply would cost a system
   * call on each side for a few dozen bytes.
   */
  fill(): void {
    if (!this.#running || this.#filling || this.#store.writesPaused) return;
    if (this.#fetcher.bulkBytesInFlight > this.windowBytes * STREAM_REFILL_FRACTION) return;
    this.#filling = true;
    try {
      this.#fetcher.batch(() => this.#fillWindow());
    } finally {
      this.#filling = false;
    }
  }

  #fillWindow(): void {
    const store = this.#store;
    const maxBlocks = Math.max(1, Math.floor(this.#opts.batchBytes / store.blockSize));
    const windowBytes = this.windowBytes;
    let wrapped = false;
    while (this.#fetcher.serving && this.#fetcher.bulkBytesInFlight < windowBytes) {
      const b = this.#nextCandidate(this.#cursor);
      if (b < 0) {
        if (wrapped || this.#cursor === 0) break;
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

  #nextCandidate(from: number): number {
    for (let b = this.#store.nextMissing(from); b >= 0; b = this.#store.nextMissing(b + 1)) {
      if (!this.#store.isInflight(b)) return b;
    }
    return -1;
  }
}
