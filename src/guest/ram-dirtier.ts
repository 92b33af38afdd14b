// Makes the guest's RAM change like a busy guest's: pages picked by the PRNG get new content (a header
// naming the page, its own generation and a global sequence, then pseudo-random bytes) and a dirty bit.
// Pages never picked stay all-zero, which lets the RAM sender skip them.
import { RAM_PAGE_SIZE as PAGE_SIZE } from '../protocol/constants.js';
import type { DirtyBitmap } from './dirty-bitmap.js';
import type { Prng } from './prng.js';

/** Page header: u32 page number · u32 page generation · u32 seq low · u32 seq high (little-endian). */
const HEADER_WORDS = 4;
const PAGE_NUMBER_AT = 0;
const PAGE_GENERATION_AT = 4;
const SEQ_LOW_AT = 8;
const SEQ_HIGH_AT = 12;
/** The sequence is a u64 written as two u32 halves. */
const TWO_POW_32 = 4294967296;

export class RamDirtier {
  readonly #ram: Buffer;
  readonly #prng: Prng;
  readonly #bitmap: DirtyBitmap;
  readonly #pageCount: number;
  /** One page of scratch: filled as u32s (fast), then copied into RAM, so RAM needs no alignment. */
  readonly #scratch = new Uint32Array(PAGE_SIZE / Uint32Array.BYTES_PER_ELEMENT);
  readonly #scratchBytes = Buffer.from(this.#scratch.buffer);
  /** Pages dirtied over the guest's whole life (travels in the device state). */
  seq: number;

  constructor(ram: Buffer, prng: Prng, bitmap: DirtyBitmap, seq = 0) {
    this.#ram = ram;
    this.#prng = prng;
    this.#bitmap = bitmap;
    this.#pageCount = Math.floor(ram.length / PAGE_SIZE);
    this.seq = seq;
  }

  /** Dirty `n` pages chosen by the PRNG (a page may be picked twice: real workloads rewrite hot pages). */
  dirty(n: number): void {
    if (this.#pageCount === 0) return;
    for (let i = 0; i < n; i++) this.#rewrite(this.#prng.nextInt(this.#pageCount));
  }

  /** Give a freshly booted guest's RAM its resident set: each page in use with probability `fraction`. */
  populate(fraction: number): void {
    for (let page = 0; page < this.#pageCount; page++) {
      if (this.#prng.nextFloat() < fraction) this.#rewrite(page);
    }
  }

  #rewrite(page: number): void {
    const at = page * PAGE_SIZE;
    // The page's generation lives in the page itself, so a restored guest needs no side table for it.
    const gen = (this.#ram.readUInt32LE(at + PAGE_GENERATION_AT) + 1) >>> 0;
    this.seq++;
    const s = this.#scratch;
    let x = this.#prng.nextU32() | 1; // xorshift32 must not start at 0
    for (let i = HEADER_WORDS; i < s.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      s[i] = x;
    }
    const b = this.#scratchBytes;
    b.writeUInt32LE(page, PAGE_NUMBER_AT);
    b.writeUInt32LE(gen, PAGE_GENERATION_AT);
    b.writeUInt32LE(this.seq % TWO_POW_32, SEQ_LOW_AT);
    b.writeUInt32LE(Math.floor(this.seq / TWO_POW_32), SEQ_HIGH_AT);
    b.copy(this.#ram, at);
    this.#bitmap.set(page);
  }
}
