// Bit arrays: one bit per item (block, page), eight to a byte, item i at bit (i & 7) of byte i >> 3. The one copy
// of this arithmetic for the present-bitmap (whose file holds exactly these bytes), the sent digests and the
// guest's dirty pages.

const BITS_PER_BYTE = 8;
/** A byte with every bit set: a run of eight items skipped in one step. */
const FULL_BYTE = 0xff;

/** Bytes that hold `count` bits. */
export function bitBytes(count: number): number {
  return Math.ceil(count / BITS_PER_BYTE);
}

export function hasBit(bits: Uint8Array, i: number): boolean {
  return (bits[i >> 3]! & (1 << (i & 7))) !== 0;
}

/** Set bit i; true when it was clear (so callers keep counts without a second look). */
export function setBit(bits: Uint8Array, i: number): boolean {
  const mask = 1 << (i & 7);
  const old = bits[i >> 3]!;
  bits[i >> 3] = old | mask;
  return (old & mask) === 0;
}

/** Clear bit i; true when it was set. */
export function clearBit(bits: Uint8Array, i: number): boolean {
  const mask = 1 << (i & 7);
  const old = bits[i >> 3]!;
  bits[i >> 3] = old & ~mask;
  return (old & mask) !== 0;
}

/** Clear the bits at `count` and past it in the last byte (bits that stand for no item). */
export function clearTail(bits: Uint8Array, count: number): void {
  // An index past the end (an empty array) is ignored by a typed array.
  bits[bits.length - 1]! &= FULL_BYTE >> (bits.length * BITS_PER_BYTE - count);
}

/** Set the first `count` bits, leaving every bit past them clear. */
export function setFirst(bits: Uint8Array, count: number): void {
  bits.fill(FULL_BYTE);
  clearTail(bits, count);
}

/** How many bits are set. */
export function countSet(bits: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < bits.length; i++) {
    for (let v = bits[i]!; v !== 0; v &= v - 1) n++;
  }
  return n;
}

/** The first clear bit at or after `from` and below `count`, or -1. Skips whole bytes of set bits. */
export function nextClear(bits: Uint8Array, from: number, count: number): number {
  for (let i = from; i < count; ) {
    if ((i & 7) === 0 && bits[i >> 3] === FULL_BYTE) {
      i += BITS_PER_BYTE;
      continue;
    }
    if (!hasBit(bits, i)) return i;
    i++;
  }
  return -1;
}

/** Every set bit's index, ascending, and clear them all. */
export function takeSet(bits: Uint8Array, countHint = countSet(bits)): Uint32Array {
  const out = new Uint32Array(countHint);
  let n = 0;
  for (let byte = 0; byte < bits.length; byte++) {
    let v = bits[byte]!;
    if (v === 0) continue;
    bits[byte] = 0;
    const base = byte * BITS_PER_BYTE;
    // Lowest set bit first keeps the result sorted.
    for (let bit = 0; v !== 0; bit++, v >>= 1) if (v & 1) out[n++] = base + bit;
  }
  return out.subarray(0, n);
}
