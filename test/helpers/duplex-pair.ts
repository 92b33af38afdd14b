// An in-memory socket pair (after ws's test/duplex-pair.js): what one side writes the other reads, with
// real backpressure. A write completes only once the peer's readable buffer has room, so with a small
// highWaterMark and a peer that does not read, the writer's writableLength grows just as a TCP socket's
// does when the kernel buffers are full. end() reaches the peer as 'end'; destroy() as 'end' then 'close'.
import { Duplex } from 'node:stream';

export interface DuplexPairOptions {
  /** Readable and writable high-water mark of each side, in bytes (default 16 KiB, as for node:stream). */
  highWaterMark?: number;
}

export class DuplexSide extends Duplex {
  other!: DuplexSide;
  #pendingWrite: (() => void) | null = null;
  /** Bytes this side has written that the peer has accepted into its readable buffer. */
  bytesWritten = 0;

  constructor(hwm: number) {
    super({ readableHighWaterMark: hwm, writableHighWaterMark: hwm, allowHalfOpen: true });
  }

  override _read(): void {
    // The reader wants more: let the peer's held write complete.
    const cb = this.other.#pendingWrite;
    if (cb) {
      this.other.#pendingWrite = null;
      cb();
    }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.other.destroyed || this.other.readableEnded) {
      cb(Object.assign(new Error('write after the peer went away'), { code: 'EPIPE' }));
      return;
    }
    this.bytesWritten += chunk.length;
    // push() returns false when the peer's buffer is at its high-water mark: hold the callback until it reads.
    if (this.other.push(chunk)) cb();
    else this.#pendingWrite = () => cb();
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (!this.other.destroyed) this.other.push(null);
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // Like a socket's close: the peer reads EOF, and any write we were holding is released.
    if (!this.other.destroyed && !this.other.readableEnded) this.other.push(null);
    for (const side of [this, this.other]) {
      const held = side.#pendingWrite;
      side.#pendingWrite = null;
      held?.();
    }
    cb(err);
  }
}

/** Two connected in-memory duplex streams. */
export function duplexPair(opts: DuplexPairOptions = {}): [DuplexSide, DuplexSide] {
  const hwm = opts.highWaterMark ?? 16 * 1024;
  const a = new DuplexSide(hwm);
  const b = new DuplexSide(hwm);
  a.other = b;
  b.other = a;
  return [a, b];
}
