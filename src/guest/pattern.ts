// The self-describing disk pattern (STYLE 13): each 8-byte word names its own absolute offset and the
// generation that wrote it, so a wrong block read back says exactly where it came from.
//
// Word at disk offset o (a multiple of 8), generation g, big-endian:
//   u32 hi = (g << 16) | floor(o / 2^32)      (g < 65536, o < 2^48)
//   u32 lo = o mod 2^32

export const PATTERN_WORD = 8;
export const PATTERN_MAX_GENERATION = 0xffff;
const TWO_POW_32 = 4294967296;
/** Offsets must fit the 16 bits left in `hi` beside the generation. */
const MAX_OFFSET = 2 ** 48;

/** What a pattern word says about itself. */
export interface PatternOrigin {
  offset: number;
  generation: number;
}

export interface PatternCheck {
  ok: boolean;
  /** Absolute disk offset of the first word that is not the expected pattern. */
  firstBadOffset?: number;
  /** When the bad word is itself a pattern word (its neighbour agrees): the offset it was written for. */
  foundOffset?: number;
  /** ...and the generation that wrote it. */
  foundGeneration?: number;
}

function checkArgs(buf: Uint8Array, diskOffset: number, generation: number): void {
  if (diskOffset % PATTERN_WORD !== 0 || buf.length % PATTERN_WORD !== 0) {
    throw new RangeError(`pattern ranges must be 8-byte aligned (offset ${diskOffset}, length ${buf.length})`);
  }
  if (!Number.isSafeInteger(diskOffset) || diskOffset < 0 || diskOffset + buf.length > MAX_OFFSET) {
    throw new RangeError(`pattern offset ${diskOffset} outside [0, 2^48)`);
  }
  if (!Number.isInteger(generation) || generation < 0 || generation > PATTERN_MAX_GENERATION) {
    throw new RangeError(`pattern generation ${generation} outside [0, 65535]`);
  }
}

function view(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Fill `buf` with the pattern for the disk range starting at `diskOffset`, written by `generation`. */
export function fillPattern(buf: Uint8Array, diskOffset: number, generation: number): void {
  checkArgs(buf, diskOffset, generation);
  const dv = view(buf);
  const gen = generation * 65536;
  let high = Math.floor(diskOffset / TWO_POW_32);
  let hi = gen + high;
  let lo = diskOffset - high * TWO_POW_32;
  for (let p = 0; p < buf.length; p += 8) {
    dv.setUint32(p, hi, false);
    dv.setUint32(p + 4, lo, false);
    lo += 8;
    // lo steps by 8 from a multiple of 8, so it lands on 2^32 exactly when it wraps.
    if (lo === TWO_POW_32) {
      lo = 0;
      high++;
      hi = gen + high;
    }
  }
}

/** A fresh buffer holding the pattern for [diskOffset, diskOffset + length). */
export function patternBuffer(diskOffset: number, length: number, generation: number): Buffer {
  const buf = Buffer.allocUnsafe(length);
  fillPattern(buf, diskOffset, generation);
  return buf;
}

/**
 * Decode the word at byte `pos` of `buf` as a pattern word. It counts as one only when the offset is
 * 8-aligned and a neighbouring word in `buf` (next, else previous) continues the same run: that keeps
 * random data and zeroes (which decode to "offset 0") from being reported as pattern.
 */
export function decodePatternWord(buf: Uint8Array, pos: number): PatternOrigin | undefined {
  if (pos < 0 || pos + 8 > buf.length) return undefined;
  const dv = view(buf);
  const at = (p: number): PatternOrigin => {
    const hi = dv.getUint32(p, false);
    return { generation: hi >>> 16, offset: (hi & 0xffff) * TWO_POW_32 + dv.getUint32(p + 4, false) };
  };
  const w = at(pos);
  if (w.offset % 8 !== 0) return undefined;
  let n: PatternOrigin | undefined;
  let delta = 8;
  if (pos + 16 <= buf.length) n = at(pos + 8);
  else if (pos >= 8) {
    n = at(pos - 8);
    delta = -8;
  }
  if (n === undefined || n.generation !== w.generation || n.offset !== w.offset + delta) return undefined;
  return w;
}

/** Check that `buf` holds exactly the pattern of (diskOffset, generation); on failure say what is there. */
export function checkPattern(buf: Uint8Array, diskOffset: number, generation: number): PatternCheck {
  checkArgs(buf, diskOffset, generation);
  const dv = view(buf);
  const gen = generation * 65536;
  let high = Math.floor(diskOffset / TWO_POW_32);
  let hi = gen + high;
  let lo = diskOffset - high * TWO_POW_32;
  for (let p = 0; p < buf.length; p += 8) {
    if (dv.getUint32(p, false) !== hi || dv.getUint32(p + 4, false) !== lo) {
      const res: PatternCheck = { ok: false, firstBadOffset: diskOffset + p };
      const found = decodePatternWord(buf, p);
      if (found) {
        res.foundOffset = found.offset;
        res.foundGeneration = found.generation;
      }
      return res;
    }
    lo += 8;
    if (lo === TWO_POW_32) {
      lo = 0;
      high++;
      hi = gen + high;
    }
  }
  return { ok: true };
}

/** One line for logs: "pattern gen 3 of offset 0x1000", "zeroes" or "other data". */
export function describeFound(check: PatternCheck, buf?: Uint8Array, at?: number): string {
  if (check.foundOffset !== undefined) return `pattern gen ${check.foundGeneration} of offset ${check.foundOffset}`;
  if (buf && at !== undefined && at + 8 <= buf.length && buf.subarray(at, at + 8).every((b) => b === 0)) return 'zeroes';
  return 'other data';
}
