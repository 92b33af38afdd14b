// Keeps S's zero scan just ahead of D's bulk stream and hands the data it reads to the block server through the
// read-ahead cache, so a data byte is read from the image once, not once by the scan and again to be sent. The
// scan waits while the cache holds a lead's worth of data not yet asked for; through zeroes it runs freely, and
// the zero chunks it has found (or the extent map has) are answered without reading them (D may ask before it
// hears of them).
import { bitBytes, hasBit, setBit } from '../common/bits.js';
import type { BufferPool } from '../common/buffer-pool.js';
import { SCAN_CHUNK } from '../image/constants.js';
import type { ScanHooks } from '../image/extent-scan.js';
import type { ReadAheadCache } from './read-cache.js';

/** Data the scan may hold for the stream; the read-ahead cache must hold at least this much. */
export const SCAN_LEAD_BYTES = 8 * 1024 * 1024;
/** A stream that has not moved for this long (D busy elsewhere, link down): the scan goes on regardless. */
const STREAM_IDLE_MS = 50;

export class ScanPacer implements ScanHooks {
  readonly #pool: BufferPool;
  readonly #cache: ReadAheadCache;
  /** End of the furthest bulk request D has made. */
  #streamEnd = 0;
  #wake: (() => void) | null = null;
  readonly #idleMs: number;
  /** Bit per SCAN_CHUNK of the image: found all zero (by the scan or the block server). */
  readonly #zeroChunks: Uint8Array;
  /** Bit per SCAN_CHUNK: the block server read it first and found data (sent; the scan need not read it). */
  readonly #dataChunks: Uint8Array;

  constructor(pool: BufferPool, cache: ReadAheadCache, imageSize: number, opts: { streamIdleMs?: number } = {}) {
    this.#pool = pool;
    this.#cache = cache;
    this.#zeroChunks = new Uint8Array(bitBytes(Math.ceil(imageSize / SCAN_CHUNK)));
    this.#dataChunks = new Uint8Array(this.#zeroChunks.length);
    this.#idleMs = opts.streamIdleMs ?? STREAM_IDLE_MS;
  }

  /** The block server saw a bulk request ending at `end`: it is about to take what the scan holds for it. */
  noteStream(end: number): void {
    this.#streamEnd = Math.max(this.#streamEnd, end);
    this.#wake?.();
  }

  buffer(): Buffer {
    return this.#pool.take();
  }

  /** The scan found [offset, offset+length) zero (a range inside one scan chunk; false when not known). */
  isKnownZero(offset: number, length: number): boolean {
    const c = Math.floor(offset / SCAN_CHUNK);
    return Math.floor((offset + length - 1) / SCAN_CHUNK) === c && hasBit(this.#zeroChunks, c);
  }

  /** The block server read a whole scan chunk (aligned, SCAN_CHUNK bytes) before the scan got there. */
  noteServed(offset: number, zero: boolean): void {
    setBit(zero ? this.#zeroChunks : this.#dataChunks, offset / SCAN_CHUNK);
  }

  known(offset: number): 'zero' | 'data' | undefined {
    const c = offset / SCAN_CHUNK;
    if (hasBit(this.#zeroChunks, c)) return 'zero';
    return hasBit(this.#dataChunks, c) ? 'data' : undefined;
  }

  /** The extent map says the chunk is zero: the block server answers it without a read, as for one the scan read. */
  mapped(offset: number): void {
    setBit(this.#zeroChunks, offset / SCAN_CHUNK);
  }

  read(offset: number, data: Buffer, hasData: boolean): void {
    if (!hasData) setBit(this.#zeroChunks, offset / SCAN_CHUNK);
    // Data not yet asked for waits in the cache for its request; the rest (zeroes, or already streamed) goes back.
    if (hasData && offset >= this.#streamEnd) this.#cache.put(offset, data);
    else this.#pool.give(data);
  }

  async pace(): Promise<void> {
    await new Promise<void>((r) => setImmediate(r));
    while (this.#cache.bytes >= SCAN_LEAD_BYTES) {
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
