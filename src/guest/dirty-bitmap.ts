// Which RAM pages changed since the RAM sender last took them: one bit per page, with a running count
// so "how much is left" (the pre-copy convergence test) is O(1).

export class DirtyBitmap {
  readonly pageCount: number;
  #words: Uint32Array;
  #count = 0;

  constructor(pageCount: number, allDirty = false) {
    this.pageCount = pageCount;
    this.#words = new Uint32Array(Math.ceil(pageCount / 32));
    if (allDirty) this.setAll();
  }

  get count(): number {
    return this.#count;
  }

  /** Mark one page dirty. */
  set(page: number): void {
    const w = page >>> 5;
    const bit = 1 << (page & 31);
    const old = this.#words[w]!;
    if ((old & bit) === 0) {
      this.#words[w] = old | bit;
      this.#count++;
    }
  }

  has(page: number): boolean {
    return (this.#words[page >>> 5]! & (1 << (page & 31))) !== 0;
  }

  setAll(): void {
    this.#words.fill(0xffffffff);
    const tail = this.pageCount & 31;
    // Bits past the last page must stay clear, or take() would return pages that do not exist.
    if (tail !== 0) this.#words[this.#words.length - 1] = (2 ** tail - 1) >>> 0;
    this.#count = this.pageCount;
  }

  /** Return every dirty page, ascending, and clear them all. */
  take(): Uint32Array {
    const out = new Uint32Array(this.#count);
    let n = 0;
    const words = this.#words;
    for (let w = 0; w < words.length; w++) {
      let v = words[w]!;
      if (v === 0) continue;
      words[w] = 0;
      const base = w * 32;
      while (v !== 0) {
        // Lowest set bit first keeps the result sorted.
        const low = v & -v;
        out[n++] = base + (31 - Math.clz32(low));
        v = (v ^ low) >>> 0;
      }
    }
    this.#count = 0;
    return out;
  }
}
