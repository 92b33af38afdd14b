// A stackable fault layer around a socket (STYLE.md 12): wraps any Duplex and, on command or at a byte count,
// cuts the connection (even mid-frame), stalls one direction, delays chunks, or flips a bit. With a hook, each
// chunk in either direction is handed to it and it decides (phase-aimed faults: test/faults/phase-faults.ts).
import { Duplex } from 'node:stream';

/** Which way a chunk crosses the wrapped socket: 'in' is read through us, 'out' written through us. */
export type ChunkDir = 'in' | 'out';

/** A hook's decision on one chunk. */
export interface ChunkVerdict {
  /** The bytes that cross: a prefix of the chunk, possibly with a bit flipped. */
  data: Buffer;
  /** After `data`: cut the connection (both directions), or stall this direction for good (a silent link). */
  then?: 'cut' | 'stall';
  /** From this chunk on, hold every chunk in this direction this many ms (order kept). */
  delayMs?: number;
}

export interface FaultPlan {
  /** Destroy the connection once this many bytes have been written through us (outbound). */
  cutAfterWritten?: number;
  /** Destroy the connection once this many bytes have been read through us (inbound). */
  cutAfterRead?: number;
  /** Flip one bit of the inbound byte at this index. */
  flipInboundByte?: number;
  /** Delay each inbound chunk by this many ms. */
  inboundDelayMs?: number;
  /** Stop delivering inbound data after this many bytes (a half-open, silent link). */
  stallInboundAfter?: number;
  /** Inspect each outbound chunk; return true to cut the connection before it is written. */
  cutBeforeWrite?: (chunk: Buffer) => boolean;
  /** Decide every chunk in both directions (the byte-count fields above are then ignored). */
  hook?: (dir: ChunkDir, chunk: Buffer) => ChunkVerdict;
}

export class FaultDuplex extends Duplex {
  readonly #inner: Duplex;
  readonly #plan: FaultPlan;
  #written = 0;
  #read = 0;
  #cut = false;
  /** Resolves when every delayed inbound chunk has been pushed (keeps order with the end of stream). */
  #delivered: Promise<void> = Promise.resolve();
  /** With a hook: directions stalled for good, and the delay it set for each. */
  readonly #stalled = { in: false, out: false };
  readonly #delayMs = { in: 0, out: 0 };

  constructor(inner: Duplex, plan: FaultPlan = {}) {
    super();
    this.#inner = inner;
    this.#plan = plan;
    inner.on('data', (chunk: Buffer) => this.#onInbound(chunk));
    // End of stream goes after any data still held back by a delay.
    inner.on('end', () => void this.#delivered.then(() => this.push(null)));
    inner.on('close', () => void this.#delivered.then(() => this.destroy()));
    inner.on('error', (e) => this.destroy(e));
    inner.on('drain', () => this.emit('drain'));
  }

  get writableLength(): number {
    return this.#inner.writableLength + super.writableLength;
  }

  /** Cut the connection now (both directions), like a reset. */
  cut(): void {
    if (this.#cut) return;
    this.#cut = true;
    this.#inner.destroy();
    this.destroy();
  }

  setNoDelay(v: boolean): void {
    (this.#inner as { setNoDelay?: (v: boolean) => void }).setNoDelay?.(v);
  }

  override _read(): void {
    this.#inner.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.#cut) return cb();
    const p = this.#plan;
    if (p.hook) return this.#writeHooked(p.hook, chunk, cb);
    if (p.cutBeforeWrite?.(chunk)) {
      this.cut();
      return cb();
    }
    if (p.cutAfterWritten !== undefined && this.#written + chunk.length >= p.cutAfterWritten) {
      const part = chunk.subarray(0, Math.max(0, p.cutAfterWritten - this.#written));
      this.#written += part.length;
      this.#inner.write(part, () => this.cut());
      return cb();
    }
    this.#written += chunk.length;
    this.#inner.write(chunk, (err) => cb(err));
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.#inner.end(cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.#inner.destroy();
    cb(err);
  }

  #writeHooked(hook: NonNullable<FaultPlan['hook']>, chunk: Buffer, cb: (err?: Error | null) => void): void {
    if (this.#stalled.out) return cb();
    const v = hook('out', chunk);
    if (v.delayMs !== undefined) this.#delayMs.out = v.delayMs;
    if (v.then === 'stall') this.#stalled.out = true;
    const write = () => {
      if (this.#cut) return cb();
      if (v.then === 'cut') {
        if (v.data.length > 0) this.#inner.write(v.data, () => this.cut());
        else this.cut();
        return cb();
      }
      if (v.data.length === 0) return cb();
      this.#inner.write(v.data, (err) => cb(err));
    };
    // One write at a time reaches _write, so holding its callback keeps the order.
    if (this.#delayMs.out > 0) setTimeout(write, this.#delayMs.out);
    else write();
  }

  #inboundHooked(hook: NonNullable<FaultPlan['hook']>, chunk: Buffer): void {
    if (this.#stalled.in) return;
    const v = hook('in', chunk);
    if (v.delayMs !== undefined) this.#delayMs.in = v.delayMs;
    if (v.then === 'stall') this.#stalled.in = true;
    const deliver = () => {
      if (this.#cut || this.destroyed) return;
      if (v.data.length > 0 && !this.push(v.data) && v.then === undefined) this.#inner.pause();
      if (v.then === 'cut') this.cut();
    };
    const delay = this.#delayMs.in;
    if (delay > 0) {
      this.#delivered = this.#delivered.then(() => new Promise<void>((resolve) => setTimeout(() => resolve(deliver()), delay)));
    } else {
      deliver();
    }
  }

  #onInbound(chunk: Buffer): void {
    if (this.#cut) return;
    const p = this.#plan;
    if (p.hook) return this.#inboundHooked(p.hook, chunk);
    let data = chunk;
    if (p.stallInboundAfter !== undefined) {
      const room = p.stallInboundAfter - this.#read;
      if (room <= 0) return;
      if (data.length > room) data = data.subarray(0, room);
    }
    if (p.flipInboundByte !== undefined && p.flipInboundByte >= this.#read && p.flipInboundByte < this.#read + data.length) {
      data = Buffer.from(data);
      data[p.flipInboundByte - this.#read]! ^= 0x10;
    }
    if (p.cutAfterRead !== undefined && this.#read + data.length >= p.cutAfterRead) {
      const part = data.subarray(0, Math.max(0, p.cutAfterRead - this.#read));
      this.#read += part.length;
      if (part.length > 0) this.push(part);
      this.cut();
      return;
    }
    this.#read += data.length;
    if (p.inboundDelayMs) {
      const delay = p.inboundDelayMs;
      this.#delivered = this.#delivered.then(
        () =>
          new Promise<void>((resolve) =>
            setTimeout(() => {
              if (!this.#cut && !this.destroyed) this.push(data);
              resolve();
            }, delay),
          ),
      );
    } else if (!this.push(data)) {
      this.#inner.pause();
    }
  }
}
