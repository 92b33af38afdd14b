// Fixed-size Buffers handed out and given back, so a hot read path does not allocate (and page-fault, and
// garbage-collect) a fresh buffer per chunk. Bounded: buffers given back beyond the cap are left to the GC,
// and a buffer never given back (a link closed with it queued) is simply replaced by a new one.
export class BufferPool {
  readonly bufferBytes: number;
  readonly #maxIdle: number;
  readonly #idle: Buffer[] = [];
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
    return Buffer.allocUnsafeSlow(this.bufferBytes);
  }

  /** Give back a buffer from take() once nothing refers to its bytes any more. */
  give(b: Buffer): void {
    if (b.length !== this.bufferBytes || b.byteOffset !== 0) throw new Error('BufferPool.give: not a buffer from this pool');
    if (this.#idle.length < this.#maxIdle) this.#idle.push(b);
  }

  get idle(): number {
    return this.#idle.length;
  }
}
