// D's background streamer: keeps a window of bulk requests in flight for the blocks still missing,
// contiguous blocks batched into one request, continuing just past the latest demand miss (locality).
import type { Fetcher } from './fetcher.js';
import type { BlockStore } from './block-store.js';

export interface StreamerOptions {
  /** Bulk bytes in flight at most. */
  windowBytes: number;
  /** Largest single bulk request. */
  batchBytes: number;
}

export class Streamer {
  readonly #store: BlockStore;
  readonly #fetcher: Fetcher;
  readonly #opts: StreamerOptions;
  #cursor = 0;
  #running = false;
  #filling = false;

  constructor(store: BlockStore, fetcher: Fetcher, opts: StreamerOptions) {
    this.#store = store;
    this.#fetcher = fetcher;
    this.#opts = opts;
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
  }

  /**
   * Top the window up. Called on start, after each finished request, and after a reconnect. It waits until
   * half the window is free and then sends the requests together: a request per reply would cost a system
   * call on each side for a few dozen bytes.
   */
  fill(): void {
    if (!this.#running || this.#filling) return;
    if (this.#fetcher.bulkBytesInFlight > this.#opts.windowBytes / 2) return;
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
    let wrapped = false;
    while (this.#fetcher.serving && this.#fetcher.bulkBytesInFlight < this.#opts.windowBytes) {
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
