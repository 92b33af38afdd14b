// The RAM digest both sides agree on at cut-over: a crc32 per page, kept up to date as pages are
// sent or received, hashed together at the end (hashing all of RAM in the downtime window would cost too much).
import { createHash } from 'node:crypto';
import { crc32 } from './crc32.js';

const ZERO_PAGE_CRC = (size: number) => crc32(Buffer.alloc(size));

export class PageDigest {
  readonly #crcs: Uint32Array;
  readonly #zeroCrc: number;

  constructor(pageCount: number, pageSize: number) {
    this.#crcs = new Uint32Array(pageCount);
    this.#zeroCrc = ZERO_PAGE_CRC(pageSize);
    this.#crcs.fill(this.#zeroCrc);
  }

  setPage(index: number, page: Buffer): void {
    this.#crcs[index] = crc32(page);
  }

  /** Whether the page's last known content was all zeroes. */
  isZero(index: number): boolean {
    return this.#crcs[index] === this.#zeroCrc;
  }

  setZero(index: number): void {
    this.#crcs[index] = this.#zeroCrc;
  }

  digest(): string {
    return createHash('sha256').update(new Uint8Array(this.#crcs.buffer, this.#crcs.byteOffset, this.#crcs.byteLength)).digest('hex');
  }
}
