// Keeps S's zero scan just ahead of D's bulk stream and hands the data it reads to the block server through the
// read-ahead cache, so a data byte is read from the image once, not once by the scan and again to be sent.
import type { BufferPool } from '../common/buffer-pool.js';
import type { ScanHooks } from './extent-scan.js';
import type { ReadAheadCache } from './read-cache.js';

/** How far ahead of the stream the scan may read; the read-ahead cache must hold at least this much. */
export const SCAN_LEAD_BYTES = 16 * 1024 * 1024;
/** A stream that has not moved for this long (D busy elsewhere, link down): the scan goes on regardless. */
const STREAM_IDLE_MS = 50;

export class ScanPacer implements ScanHooks {
  readonly #pool: BufferPool;
  readonly #cache: ReadAheadCache;
  /** End of the furthest bulk request D has made. */
  #streamEnd = 0;
  #wake: (() => void) | null = null;
  readonly #idleMs: number;

  constructor(pool: BufferPool, cache: ReadAheadCache, opts: { streamIdleMs?: number } = {}) {
    this.#pool = pool;
    this.#cache = cache;
    this.#idleMs = opts.streamIdleMs ?? STREAM_IDLE_MS;
  }

  /** The block server saw a bulk request for [offset, end). */
  noteStream(_offset: number, end: number): void {
    if (end <= this.#streamEnd) return;
    this.#streamEnd = end;
    this.#wake?.();
  }

  buffer(): Buffer {
    return this.#pool.take();
  }

  read(offset: number, data: Buffer, hasData: boolean): void {
    // Data not yet asked for waits in the cache for its request; the rest (zeroes, or already streamed) goes back.
    if (hasData && offset >= this.#streamEnd) this.#cache.put(offset, data);
    else this.#pool.give(data);
  }

  async pace(offset: number): Promise<void> {
    await new Promise<void>((r) => setImmediate(r));
    while (offset >= this.#streamEnd + SCAN_LEAD_BYTES) {
      const moved = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), this.#idleMs);
        this.#wake = () => {
          clearTimeout(timer);
          resolve(true);
        };
      });
      this.#wake = null;
      if (!moved) return;
    }
  }
}
