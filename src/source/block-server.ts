// S's block server: answers D's block requests on one link, urgent ones at once, bulk ones as the link has room,
// in chunks small enough that an urgent reply waits behind one chunk at most; zero chunks go as BLOCK_ZERO.
import type { SourceImage } from '../common/block-device.js';
import { ProtocolError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { Link } from '../link/link.js';
import { BULK_CHUNK_BYTES, CLASS_URGENT } from '../protocol/constants.js';
import { encodeBlockData, encodeMessage, type MessageOf } from '../protocol/messages.js';
import { isAllZero } from '../common/zero.js';
import type { BufferPool } from '../common/buffer-pool.js';
import type { BulkRateLimit } from '../common/token-bucket.js';
import type { ReadAheadCache } from './read-cache.js';
import type { SentDigests } from './sent-digests.js';
import type { UrgentStages } from './urgent-stages.js';

import { EIO, MAX_OUTSTANDING_REQUESTS } from './constants.js';

export { MAX_OUTSTANDING_REQUESTS };

export interface BlockServerStats {
  urgentRequests: number;
  bulkRequests: number;
  bytesSent: number;
  zeroBytesSkipped: number;
}

export class BlockServer {
  readonly #link: Link;
  readonly #image: SourceImage;
  readonly #cache: ReadAheadCache;
  readonly #log: Logger;
  readonly #outstanding = new Set<number>();
  readonly stats: BlockServerStats;

  readonly #sent: SentDigests;
  readonly #urgentStages: UrgentStages;
  /** True once the guest on S is paused for good: only then may bytes be cached or remembered as final. */
  readonly #imageStable: () => boolean;
  /** BULK_CHUNK_BYTES buffers for reads, given back once sent (shared with the zero scan). */
  readonly #readBuffers: BufferPool;
  /** Told of each bulk request's end (the zero scan keeps just ahead of the stream). */
  onBulkRequest: (end: number) => void = () => {};
  /** True when a range is known to read as zeroes (found by the zero scan): answered without a read. */
  knownZero: (offset: number, length: number) => boolean = () => false;
  /** Told of each whole BULK_CHUNK_BYTES chunk read from the image once it no longer changes (the scan skips it). */
  onChunkRead: (offset: number, zero: boolean) => void = () => {};
  /** Told of the data bytes of each reply frame sent, by class (S's progress view: demand vs bulk). */
  onDataSent: (bytes: number, urgent: boolean) => void = () => {};
  /** The operator's cap on bulk data bytes (--max-bandwidth, the service's share); urgent replies never wait on it. */
  bulkRate: BulkRateLimit | null = null;

  constructor(
    link: Link,
    image: SourceImage,
    cache: ReadAheadCache,
    log: Logger,
    stats: BlockServerStats,
    sent: SentDigests,
    imageStable: () => boolean,
    readBuffers: BufferPool,
    urgentStages: UrgentStages,
  ) {
    this.#urgentStages = urgentStages;
    this.#readBuffers = readBuffers;
    this.#sent = sent;
    this.#imageStable = imageStable;
    this.#link = link;
    this.#image = image;
    this.#cache = cache;
    this.#log = log;
    this.stats = stats;
  }

  /** Validate a request synchronously (throwing cuts the peer off) and serve it in the background. */
  handle(req: MessageOf<'BLOCK_REQ'>): void {
    const receivedAt = performance.now();
    if (req.offset + req.length > this.#image.size) {
      throw new ProtocolError('PC_ERR_OUT_OF_RANGE', `request ${req.id}: ${req.offset}+${req.length} > ${this.#image.size}`);
    }
    if (this.#outstanding.has(req.id)) throw new ProtocolError('PC_ERR_MALFORMED', `request id ${req.id} already outstanding`);
    if (this.#outstanding.size >= MAX_OUTSTANDING_REQUESTS) throw new ProtocolError('PC_ERR_MALFORMED', 'too many outstanding requests');
    this.#outstanding.add(req.id);
    void this.#serve(req, receivedAt).finally(() => this.#outstanding.delete(req.id));
  }

  get outstanding(): number {
    return this.#outstanding.size;
  }

  async #serve(req: MessageOf<'BLOCK_REQ'>, receivedAt: number): Promise<void> {
    const urgent = req.cls === CLASS_URGENT;
    const end = req.offset + req.length;
    // An urgent request's stages: its last read done, and its last frame taken by the socket.
    let readAt = receivedAt;
    const lastSent = (done: boolean) => (urgent && done ? () => this.#urgentStages.served(receivedAt, readAt, performance.now()) : undefined);
    if (urgent) this.stats.urgentRequests++;
    else {
      this.stats.bulkRequests++;
      this.onBulkRequest(end);
    }
    // Before cut-over (D's pass-through reads) S's guest still writes: read fresh, cache nothing, record nothing.
    const stable = this.#imageStable();
    try {
      // Consecutive zero chunks go out as one BLOCK_ZERO: a hole costs one small frame, not one per chunk.
      let zeroFrom = -1;
      const flushZero = (upTo: number, done: boolean) => {
        if (zeroFrom < 0) return;
        this.#link.sendFrame(encodeMessage({ type: 'BLOCK_ZERO', id: req.id, offset: zeroFrom, length: upTo - zeroFrom, done, urgent }), urgent, undefined, lastSent(done));
        zeroFrom = -1;
      };
      // Chunks end on BULK_CHUNK_BYTES boundaries: the zero scan caches whole chunks of that size.
      const zeroChunk = (pos: number, n: number) => {
        if (stable) this.#sent.recordZero(pos, n);
        this.stats.zeroBytesSkipped += n;
        if (zeroFrom < 0) zeroFrom = pos;
        if (pos + n >= end) flushZero(end, true);
      };
      for (let pos = req.offset, n = 0; pos < end; pos += n) {
        n = Math.min(BULK_CHUNK_BYTES - (pos % BULK_CHUNK_BYTES), end - pos);
        // Zeroes the scan has found are not read again (D asked before it heard of them).
        if (stable && this.knownZero(pos, n)) {
          zeroChunk(pos, n);
          continue;
        }
        if (!urgent) await this.#link.waitBulkSpace();
        if (this.#link.closed) return;
        const cached = stable ? this.#cache.take(pos, n) : undefined;
        const pooled = cached === undefined && this.#image.readInto ? this.#readBuffers.take() : undefined;
        let data: Buffer;
        try {
          data = cached ?? (pooled ? await this.#readChunk(pooled, pos, n, urgent) : await this.#image.read(pos, n));
        } catch (e) {
          if (pooled) this.#readBuffers.give(pooled);
          throw e;
        }
        if (urgent) readAt = performance.now();
        // A pooled buffer (ours, or a whole one the scan cached) goes back once the socket is done with it.
        const whole = pooled ?? data;
        const done = pos + n >= end;
        const release = () => void this.#readBuffers.give(whole);
        if (this.#link.closed) return;
        const zero = isAllZero(data);
        if (stable && n === BULK_CHUNK_BYTES && cached === undefined) this.onChunkRead(pos, zero); // a whole, aligned chunk
        if (zero) {
          this.#readBuffers.give(whole);
          zeroChunk(pos, n);
        } else {
          // Only data costs the cap: a zero run goes as one small BLOCK_ZERO frame.
          const wait = urgent ? undefined : this.bulkRate?.take(n);
          if (wait) {
            await wait;
            if (this.#link.closed) return void this.#readBuffers.give(whole);
          }
          flushZero(pos, false);
          if (stable) this.#sent.recordData(pos, data);
          this.stats.bytesSent += n;
          this.onDataSent(n, urgent);
          this.#link.sendFrame(encodeBlockData(req.id, pos, data, done, urgent), urgent, release, lastSent(done));
        }
      }
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      this.#log.warn({ err: e, id: req.id, offset: req.offset }, 'block read failed on source');
      if (!this.#link.closed) this.#link.send({ type: 'BLOCK_ERR', id: req.id, errno: EIO, message });
    }
  }

  /**
   * One chunk into a pooled buffer. An urgent read is done here and now (a page-cache hit is cheaper than a hop
   * through the thread pool, where it would also queue behind bulk reads); bulk reads go to the thread pool, so
   * the event loop stays free for the next urgent request.
   */
  #readChunk(buf: Buffer, pos: number, n: number, urgent: boolean): Promise<Buffer> | Buffer {
    const image = this.#image;
    if (urgent && image.readIntoNow) return image.readIntoNow(buf, pos, n);
    return image.readInto!(buf, pos, n);
  }
}
