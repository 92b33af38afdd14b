// The extent map boiled down to what the scan needs: which grains (ZERO_SCAN_GRAIN) no data extent touches. One bit
// per grain (32 KiB for a 16 GiB image) however many extents the map had, so its size never follows the map's.
import type { Extent } from '../common/block-device.js';
import { bitBytes, hasBit, setBit } from '../common/bits.js';

export class ZeroGrains {
  readonly size: number;
  readonly grain: number;
  readonly #grains: number;
  /** Bit per grain: some data extent touches it (it is read). */
  readonly #data: Uint8Array;

  constructor(size: number, grain: number) {
    this.size = size;
    this.grain = grain;
    this.#grains = Math.ceil(size / grain);
    this.#data = new Uint8Array(bitBytes(this.#grains));
  }

  /** [offset, offset+length) may hold data: every grain it touches is read. */
  addData(offset: number, length: number): void {
    const last = Math.floor((offset + length - 1) / this.grain);
    for (let g = Math.floor(offset / this.grain); g <= last; g++) setBit(this.#data, g);
  }

  /** Grain g reads as zeroes by the map. */
  isZero(g: number): boolean {
    return !hasBit(this.#data, g);
  }

  /** Every grain of [offset, offset+length) reads as zeroes by the map. */
  allZero(offset: number, length: number): boolean {
    const last = Math.floor((offset + length - 1) / this.grain);
    for (let g = Math.floor(offset / this.grain); g <= last; g++) if (hasBit(this.#data, g)) return false;
    return true;
  }

  /** The map's zero runs, in order, each as long as it goes (the last ends at the image's end). */
  *runs(): Generator<Extent> {
    let from = -1;
    for (let g = 0; g <= this.#grains; g++) {
      const zero = g < this.#grains && this.isZero(g);
      if (zero && from < 0) from = g;
      else if (!zero && from >= 0) {
        const offset = from * this.grain;
        yield { offset, length: Math.min(g * this.grain, this.size) - offset, zero: true };
        from = -1;
      }
    }
  }

  /** Bytes the map says are zero (whole grains, the last one as long as the image allows). */
  get zeroBytes(): number {
    let n = 0;
    for (const r of this.runs()) n += r.length;
    return n;
  }
}
