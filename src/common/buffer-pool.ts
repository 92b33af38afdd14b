// Fixed-size Buffers handed out and given back, so a hot read path does not allocate (and page-fault, and
// garbage-collect) a fresh buffer per chunk. Bounded: buffers given back beyond the cap are left to the GC,
// and a buffer never given back (a link closed with it queued, evicted from a cache) is simply replaced.
export class BufferPool {
  readonly bufferBytes: number;
  readonly #maxIdle: number;
  readonly #idle: Buffer[] = [];
  /** Memory this pool handed out: only a view of all of one of these may come back. */
  readonly #own = new WeakSet<ArrayBufferLike>();
  /** Buffers allocated over the pool's life (a test and the bench read it). */
  allocated = 0;

  constructor(bufferBytes: number, maxIdle: number) {
    this.bufferBytes = bufferBytes;
    this.#maxIdle = maxIdle;
  }

  take(): Buffer {
    const b = this.#idle.pop();
    if (b) return b;
    this.allocated++;
    const fresh = Buffer.allocUnsafeSlow(this.bufferBytes);
    this.#own.add(fresh.buffer);
    return fresh;
  }

  /**
   * Give back a buffer from take() once nothing refers to its bytes any more. Anything else (another buffer,
   * or only part of one of ours, whose rest may still be in use) is ignored: false.
   */
  give(b: Buffer): boolean {
    if (!this.#own.has(b.buffer) || b.byteOffset !== 0 || b.length !== this.bufferBytes) return false;
    if (this.#idle.length < this.#maxIdle) this.#idle.push(b);
    return true;
  }

  get idle(): number {
    return this.#idle.length;
  }
}
