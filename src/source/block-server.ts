// S's block server: answers D's block requests on one link, urgent ones at once, bulk ones as the link has room,
// in chunks small enough that an urgent reply waits behind one chunk at most; zero chunks go as BLOCK_ZERO.
import type { SourceImage } from '../common/block-device.js';
import { ProtocolError, isPostcopyError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { Link } from '../link/link.js';
import { BULK_CHUNK_BYTES, CLASS_URGENT } from '../protocol/constants.js';
import { encodeBlockData, encodeMessage, type MessageOf } from '../protocol/messages.js';
import { isAllZero } from '../common/zero.js';
import { BufferPool } from '../common/buffer-pool.js';
import type { ReadAheadCache } from './read-cache.js';
import type { SentDigests } from './sent-digests.js';

/** Most requests D may have outstanding at once; more is a flood and cuts D off. */
export const MAX_OUTSTANDING_REQUESTS = 4096;
const READ_AHEAD_BYTES = 1024 * 1024;
/** Read buffers kept for reuse: enough for the bulk queue and the socket's high-water mark, with room to spare. */
const POOLED_READ_BUFFERS = 48;
const EIO = 5;

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
  readonly #readBuffers = new BufferPool(BULK_CHUNK_BYTES, POOLED_READ_BUFFERS);
  readonly stats: BlockServerStats;

  readonly #sent: SentDigests;
  /** True once the guest on S is paused for good: only then may bytes be cached or remembered as final. */
  readonly #imageStable: () => boolean;

  constructor(
    link: Link,
    image: SourceImage,
    cache: ReadAheadCache,
    log: Logger,
    stats: BlockServerStats,
    sent: SentDigests,
    imageStable: () => boolean,
  ) {
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
    if (req.offset + req.length > this.#image.size) {
      throw new ProtocolError('PC_ERR_OUT_OF_RANGE', `request ${req.id}: ${req.offset}+${req.length} > ${this.#image.size}`);
    }
    if (this.#outstanding.has(req.id)) throw new ProtocolError('PC_ERR_MALFORMED', `request id ${req.id} already outstanding`);
    if (this.#outstanding.size >= MAX_OUTSTANDING_REQUESTS) throw new ProtocolError('PC_ERR_MALFORMED', 'too many outstanding requests');
    this.#outstanding.add(req.id);
    void this.#serve(req).finally(() => this.#outstanding.delete(req.id));
  }

  get outstanding(): number {
    return this.#outstanding.size;
  }

  async #serve(req: MessageOf<'BLOCK_REQ'>): Promise<void> {
    const urgent = req.cls === CLASS_URGENT;
    if (urgent) this.stats.urgentRequests++;
    else this.stats.bulkRequests++;
    const end = req.offset + req.length;
    // Before cut-over (D's pass-through reads) S's guest still writes: read fresh, cache nothing, record nothing.
    const stable = this.#imageStable();
    try {
      // Consecutive zero chunks go out as one BLOCK_ZERO: a hole costs one small frame, not one per chunk.
      let zeroFrom = -1;
      const flushZero = (upTo: number, done: boolean) => {
        if (zeroFrom < 0) return;
        this.#link.sendFrame(encodeMessage({ type: 'BLOCK_ZERO', id: req.id, offset: zeroFrom, length: upTo - zeroFrom, done, urgent }), urgent);
        zeroFrom = -1;
      };
      for (let pos = req.offset; pos < end; pos += BULK_CHUNK_BYTES) {
        if (!urgent) await this.#link.waitBulkSpace();
        if (this.#link.closed) return;
        const n = Math.min(BULK_CHUNK_BYTES, end - pos);
        const cached = stable ? this.#cache.take(pos, n) : undefined;
        const pooled = cached === undefined && this.#image.readInto ? this.#readBuffers.take() : undefined;
        let data: Buffer;
        try {
          data = cached ?? (pooled ? await this.#image.readInto!(pooled, pos, n) : await this.#image.read(pos, n));
        } catch (e) {
          if (pooled) this.#readBuffers.give(pooled);
          throw e;
        }
        const release = pooled ? () => this.#readBuffers.give(pooled) : undefined;
        if (this.#link.closed) return;
        const done = pos + n >= end;
        if (isAllZero(data)) {
          release?.();
          if (stable) this.#sent.recordZero(pos, n);
          this.stats.zeroBytesSkipped += n;
          if (zeroFrom < 0) zeroFrom = pos;
          if (done) flushZero(end, true);
        } else {
          flushZero(pos, false);
          if (stable) this.#sent.recordData(pos, data);
          this.stats.bytesSent += n;
          this.#link.sendFrame(encodeBlockData(req.id, pos, data, done, urgent), urgent, release);
        }
      }
      if (urgent && stable) void this.#readAhead(end);
    } catch (e) {
      const message = isPostcopyError(e) || e instanceof Error ? e.message : String(e);
      this.#log.warn({ err: e, id: req.id, offset: req.offset }, 'block read failed on source');
      if (!this.#link.closed) this.#link.send({ type: 'BLOCK_ERR', id: req.id, errno: EIO, message });
    }
  }

  /** D's bulk cursor jumps just past a demand miss: have those bytes ready. */
  async #readAhead(from: number): Promise<void> {
    const grain = this.#cache.grain;
    const start = Math.ceil(from / grain) * grain;
    const end = Math.min(this.#image.size, start + READ_AHEAD_BYTES);
    if (start >= end || this.#cache.has(start)) return;
    try {
      this.#cache.put(start, await this.#image.read(start, end - start));
    } catch {
      // Read-ahead is an optimisation; the real request will report the error.
    }
  }
}
