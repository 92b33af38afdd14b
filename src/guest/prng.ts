// A small deterministic PRNG (xoshiro128**, seeded by splitmix32) whose whole state is four u32s,
// so a paused guest can carry it in its device state and continue the exact same sequence elsewhere.

/** The PRNG's complete state: four u32 words, JSON-safe. */
export type PrngState = [number, number, number, number];

const TWO_POW_32 = 4294967296;
const TWO_POW_53 = 9007199254740992;

/** splitmix32 step: spreads a plain integer seed over 4 well-mixed, not-all-zero words. */
function splitmix32(x: number): [number, number] {
  x = (x + 0x9e3779b9) | 0;
  let z = x;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return [x, (z ^ (z >>> 16)) >>> 0];
}

export class Prng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  /** Seed with any safe integer; seeds in [0, 2^32) each give a distinct stream. */
  constructor(seed: number) {
    const lo = seed >>> 0;
    const hi = Math.floor(seed / TWO_POW_32);
    // High bits (negative or large seeds) are folded in after a mix of the low ones, so nearby seeds never collide.
    let x = hi === 0 ? lo : (splitmix32(lo)[1] ^ hi) >>> 0;
    const out: number[] = [];
    for (let i = 0; i < 4; i++) {
      const [nx, v] = splitmix32(x);
      x = nx;
      out.push(v);
    }
    [this.#a, this.#b, this.#c, this.#d] = out as PrngState;
    // xoshiro's one forbidden state; splitmix cannot produce it in practice, but be certain.
    if ((this.#a | this.#b | this.#c | this.#d) === 0) this.#a = 1;
  }

  /** Rebuild a generator from `state()` output; it continues the same sequence. */
  static fromState(state: readonly number[]): Prng {
    if (!Array.isArray(state) || state.length !== 4 || !state.every((w) => Number.isInteger(w) && w >= 0 && w < TWO_POW_32)) {
      throw new TypeError('PRNG state must be four u32 words');
    }
    if (state.every((w) => w === 0)) throw new TypeError('PRNG state must not be all zero');
    const p = new Prng(0);
    p.setState(state as PrngState);
    return p;
  }

  state(): PrngState {
    return [this.#a >>> 0, this.#b >>> 0, this.#c >>> 0, this.#d >>> 0];
  }

  /** Rewind or jump to a saved state (used to "peek" an operation without consuming it). */
  setState(state: PrngState): void {
    [this.#a, this.#b, this.#c, this.#d] = state;
  }

  /** xoshiro128**: a uniformly distributed u32. */
  nextU32(): number {
    const b = this.#b;
    const r = Math.imul(rotl(Math.imul(b, 5), 7), 9);
    const t = b << 9;
    this.#c ^= this.#a;
    this.#d ^= b;
    this.#b ^= this.#c;
    this.#a ^= this.#d;
    this.#c ^= t;
    this.#d = rotl(this.#d, 11);
    return r >>> 0;
  }

  /** Uniform float in [0, 1) with 53 random bits. */
  nextFloat(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / TWO_POW_53;
  }

  /** Uniform integer in [0, n), unbiased; n must be a positive safe integer. */
  nextInt(n: number): number {
    if (!Number.isSafeInteger(n) || n <= 0) throw new RangeError(`nextInt bound must be a positive safe integer, got ${n}`);
    if (n <= TWO_POW_32) {
      // Rejection sampling over u32 removes the modulo bias.
      const limit = TWO_POW_32 - (TWO_POW_32 % n);
      for (;;) {
        const v = this.nextU32();
        if (v < limit) return v % n;
      }
    }
    // Beyond 2^32 the 53-bit float's bias is below 2^-20: good enough for a workload generator.
    return Math.floor(this.nextFloat() * n);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
