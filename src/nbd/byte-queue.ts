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

  /** Remove and return the first n bytes (n <= length): a view when possible, else one copy. */
  take(n: number): Buffer {
    if (n > this.#length) throw new RangeError(`take(${n}) with ${this.#length} buffered`);
    if (n === 0) return Buffer.alloc(0);
    const first = this.#chunks[0]!;
    if (first.length === n) {
      this.#chunks.shift();
      this.#length -= n;
      return first;
    }
    if (first.length > n) {
      this.#chunks[0] = first.subarray(n);
      this.#length -= n;
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[0]!;
      const want = n - filled;
      if (chunk.length <= want) {
        chunk.copy(out, filled);
        filled += chunk.length;
        this.#chunks.shift();
      } else {
        chunk.copy(out, filled, 0, want);
        this.#chunks[0] = chunk.subarray(want);
        filled += want;
      }
    }
    this.#length -= n;
    return out;
  }

  /** Drop up to n bytes without keeping them; returns how many were dropped. */
  skip(n: number): number {
    let dropped = 0;
    while (dropped < n && this.#chunks.length > 0) {
      const chunk = this.#chunks[0]!;
      const want = n - dropped;
      if (chunk.length <= want) {
        dropped += chunk.length;
        this.#chunks.shift();
      } else {
        this.#chunks[0] = chunk.subarray(want);
        dropped += want;
      }
    }
    this.#length -= dropped;
    return dropped;
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
