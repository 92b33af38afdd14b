// What S has sent, block by block: the crc32 of each block's bytes as they left, so the final check compares
// D's digests without reading the whole image a second time.
import { crc32 } from '../common/crc32.js';
import { bitBytes, hasBit, setBit } from '../common/bits.js';

export class SentDigests {
  readonly blockSize: number;
  readonly #size: number;
  readonly #crcs: Uint32Array;
  readonly #known: Uint8Array;
  readonly #zeroCrc: number;
  #knownBytes = 0;

  constructor(size: number, blockSize: number) {
    this.blockSize = blockSize;
    this.#size = size;
    const blocks = Math.ceil(size / blockSize);
    this.#crcs = new Uint32Array(blocks);
    this.#known = new Uint8Array(bitBytes(blocks));
    this.#zeroCrc = crc32(Buffer.alloc(blockSize));
  }

  /** Record the blocks wholly inside [offset, offset+data.length) (a part of a reply). */
  recordData(offset: number, data: Buffer): void {
    this.#each(offset, data.length, (b, at, len) => this.#set(b, crc32(data.subarray(at, at + len))));
  }

  recordZero(offset: number, length: number): void {
    this.#each(offset, length, (b, _at, len) => this.#set(b, len === this.blockSize ? this.#zeroCrc : crc32(Buffer.alloc(len))));
  }

  /** The crc of block b as sent, if it was. */
  get(b: number): number | undefined {
    return hasBit(this.#known, b) ? this.#crcs[b] : undefined;
  }

  /** Bytes of the blocks recorded so far (each counted once). */
  get knownBytes(): number {
    return this.#knownBytes;
  }

  #set(b: number, crc: number): void {
    this.#crcs[b] = crc;
    if (setBit(this.#known, b)) this.#knownBytes += Math.min(this.blockSize, this.#size - b * this.blockSize);
  }

  /** Call fn for each whole block (the image's short last block counts) inside the range. */
  #each(offset: number, length: number, fn: (block: number, at: number, len: number) => void): void {
    const bs = this.blockSize;
    for (let b = Math.ceil(offset / bs); b * bs < offset + length; b++) {
      const start = b * bs;
      const len = Math.min(bs, this.#size - start);
      if (start + len > offset + length) break;
      fn(b, start - offset, len);
    }
  }
}
