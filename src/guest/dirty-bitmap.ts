// Which RAM pages changed since the RAM sender last took them: one bit per page, with a running count
// so "how much is left" (the pre-copy convergence test) is O(1).
import { bitBytes, hasBit, setBit, setFirst, takeSet } from '../common/bits.js';

export class DirtyBitmap {
  readonly pageCount: number;
  readonly #bits: Uint8Array;
  #count = 0;

  constructor(pageCount: number, allDirty = false) {
    this.pageCount = pageCount;
    this.#bits = new Uint8Array(bitBytes(pageCount));
    if (allDirty) this.setAll();
  }

  get count(): number {
    return this.#count;
  }

  /** Mark one page dirty. */
  set(page: number): void {
    if (setBit(this.#bits, page)) this.#count++;
  }

  has(page: number): boolean {
    return hasBit(this.#bits, page);
  }

  setAll(): void {
    // Bits past the last page stay clear, or take() would return pages that do not exist.
    setFirst(this.#bits, this.pageCount);
    this.#count = this.pageCount;
  }

  /** Return every dirty page, ascending, and clear them all. */
  take(): Uint32Array {
    const out = takeSet(this.#bits, this.#count);
    this.#count = 0;
    return out;
  }
}
