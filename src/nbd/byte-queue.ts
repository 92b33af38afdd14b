// A FIFO of received Buffers that decoders read fixed-size pieces from without copying
// when a piece lies inside one chunk (the ws receiver's approach). Pure: no I/O.

export class ByteQueue {
  #chunks: Buffer[] = [];
  #length = 0;

  get length(): number {
    return this.#length;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /** Remove and return the first n bytes (n <= length): a view when they lie in one chunk, else one copy. */
  take(n: number): Buffer {
    if (n > this.#length) throw new RangeError(`take(${n}) with ${this.#length} buffered`);
    if (n === 0) return Buffer.alloc(0);
    const first = this.#chunks[0]!;
    if (first.length >= n) {
      this.#consume(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    for (const chunk of this.#chunks) {
      if (filled >= n) break;
      filled += chunk.copy(out, filled, 0, Math.min(chunk.length, n - filled));
    }
    this.#consume(n);
    return out;
  }

  /** Drop up to n bytes without keeping them; returns how many were dropped. */
  skip(n: number): number {
    const dropped = Math.min(n, this.#length);
    this.#consume(dropped);
    return dropped;
  }

  /**
   * Drop the first n bytes (n <= length): whole chunks go in one splice (a shift per chunk is quadratic when
   * many small chunks are buffered, as the frame decoder found), the last one is cut to a view.
   */
  #consume(n: number): void {
    let left = n;
    let used = 0;
    while (left > 0 && this.#chunks[used]!.length <= left) left -= this.#chunks[used++]!.length;
    this.#chunks.splice(0, used);
    if (left > 0) this.#chunks[0] = this.#chunks[0]!.subarray(left);
    this.#length -= n;
  }

  /** Copy of the first n bytes (n <= length) without consuming them: for small headers. */
  peek(n: number): Buffer {
    const first = this.#chunks[0];
    if (first && first.length >= n) return first.subarray(0, n);
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    for (const chunk of this.#chunks) {
      if (filled >= n) break;
      filled += chunk.copy(out, filled, 0, Math.min(chunk.length, n - filled));
    }
    return out;
  }
}

/** u64 read as a number: exact below 2^53, and anything above still compares past any real size. */
export function readU64(buf: Buffer, at: number): number {
  return Number(buf.readBigUInt64BE(at));
}
