// Final check of a migration: D's image must equal S's image at cut-over with every unit the guest wrote
// replaced by that write's pattern. Streams both files in big chunks; reports the first few bad blocks and
// what they hold instead (a pattern word names the offset and generation it was written for).
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { decodePatternWord, fillPattern, type PatternOrigin } from './pattern.js';
import {
  VERIFY_CHUNK_BYTES as CHUNK,
  VERIFY_DEFAULT_BLOCK_BYTES,
  VERIFY_DEFAULT_MAX_REPORTED,
  VERIFY_YIELD_EVERY as YIELD_EVERY,
} from './constants.js';
import { WRITE_UNIT } from './write-map.js';


export interface VerifyOptions {
  sourceImage: string;
  destImage: string;
  writeMap: Iterable<readonly [number, number]>;
  unitSize?: number;
  /** Granularity of the report (blocksChecked, one mismatch per block). */
  blockSize?: number;
  /** How many mismatching blocks to describe (all are counted). */
  maxReported?: number;
}

export interface VerifyMismatch {
  /** Block the mismatch is in. */
  blockOffset: number;
  /** First differing byte. */
  offset: number;
  /** What should be there: the source's bytes, or the pattern of the guest's last write. */
  expected: 'source' | `pattern gen ${number}`;
  /** When the destination holds pattern words there: the offset and generation they were written for. */
  found?: PatternOrigin;
  /** The destination holds zeroes at that word. */
  foundZeroes?: boolean;
}

export interface VerifyResult {
  ok: boolean;
  blocksChecked: number;
  mismatchedBlocks: number;
  mismatches: VerifyMismatch[];
  /** Units replaced by the pattern before comparing. */
  unitsOverlaid: number;
  sizes: { source: number; dest: number };
}

export async function verifyMigration(o: VerifyOptions): Promise<VerifyResult> {
  const unitSize = o.unitSize ?? WRITE_UNIT;
  const blockSize = o.blockSize ?? VERIFY_DEFAULT_BLOCK_BYTES;
  const maxReported = o.maxReported ?? VERIFY_DEFAULT_MAX_REPORTED;
  if (unitSize % 8 !== 0 || unitSize <= 0 || blockSize <= 0) throw new RangeError('unit and block sizes must be positive, units 8-byte aligned');
  const gens = new Map<number, number>();
  for (const [u, g] of o.writeMap) gens.set(u, g);
  const units = Float64Array.from(gens.keys()).sort();
  // Chunks hold whole units and whole blocks, so neither straddles a chunk boundary.
  const step = lcm(unitSize, blockSize);
  const chunk = Math.max(step, Math.floor(CHUNK / step) * step);

  const fa = openSync(o.sourceImage, 'r');
  const fb = openSync(o.destImage, 'r');
  try {
    const sizes = { source: fstatSync(fa).size, dest: fstatSync(fb).size };
    const size = Math.min(sizes.source, sizes.dest);
    const res: VerifyResult = { ok: sizes.source === sizes.dest, blocksChecked: 0, mismatchedBlocks: 0, mismatches: [], unitsOverlaid: 0, sizes };
    const expected = Buffer.allocUnsafe(chunk);
    const found = Buffer.allocUnsafe(chunk);
    let ui = 0; // next overlay unit, in ascending order
    let sinceYield = 0;
    for (let pos = 0; pos < size; pos += chunk) {
      const len = Math.min(chunk, size - pos);
      readFully(fa, expected, len, pos);
      readFully(fb, found, len, pos);
      // Overlay the guest's writes on the source's bytes.
      while (ui < units.length && units[ui]! * unitSize < pos + len) {
        const u = units[ui++]!;
        const at = u * unitSize - pos;
        // Only a unit cut by the end of the image is short; the pattern covers its whole words.
        const end = at + (Math.min(unitSize, len - at) & ~7);
        fillPattern(expected.subarray(at, end), u * unitSize, gens.get(u)!);
        res.unitsOverlaid++;
      }
      const blocks = Math.ceil(len / blockSize);
      res.blocksChecked += blocks;
      if (!expected.subarray(0, len).equals(found.subarray(0, len))) {
        for (let b = 0; b < blocks; b++) {
          const s = b * blockSize;
          const e = Math.min(s + blockSize, len);
          if (expected.subarray(s, e).equals(found.subarray(s, e))) continue;
          res.mismatchedBlocks++;
          if (res.mismatches.length < maxReported) res.mismatches.push(describe(expected, found, s, e, pos, unitSize, gens));
        }
      }
      sinceYield += len;
      if (sinceYield >= YIELD_EVERY) {
        sinceYield = 0;
        await yieldToLoop();
      }
    }
    if (res.mismatchedBlocks > 0) res.ok = false;
    return res;
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}

function describe(expected: Buffer, found: Buffer, s: number, e: number, pos: number, unitSize: number, gens: Map<number, number>): VerifyMismatch {
  let i = s;
  while (i < e && expected[i] === found[i]) i++;
  const offset = pos + i;
  const gen = gens.get(Math.floor(offset / unitSize));
  const m: VerifyMismatch = { blockOffset: pos + s, offset, expected: gen === undefined ? 'source' : `pattern gen ${gen}` };
  // Decode the aligned word within the block, so a neighbour check never reads across the block.
  const word = i - (offset % 8);
  const origin = decodePatternWord(found.subarray(s, e), word - s);
  if (origin) m.found = origin;
  else if (word + 8 <= e && found.subarray(word, word + 8).every((b) => b === 0)) m.foundZeroes = true;
  return m;
}

export interface CompareResult {
  ok: boolean;
  sizes: { a: number; b: number };
  /** First offset where the images differ (the shorter size if one is a prefix of the other). */
  firstDifference?: number;
}

/** Plain byte equality of two images (a migration without a guest). */
export async function compareImages(a: string, b: string): Promise<CompareResult> {
  const fa = openSync(a, 'r');
  const fb = openSync(b, 'r');
  try {
    const sizes = { a: fstatSync(fa).size, b: fstatSync(fb).size };
    const size = Math.min(sizes.a, sizes.b);
    const ba = Buffer.allocUnsafe(CHUNK);
    const bb = Buffer.allocUnsafe(CHUNK);
    let sinceYield = 0;
    for (let pos = 0; pos < size; pos += CHUNK) {
      const len = Math.min(CHUNK, size - pos);
      readFully(fa, ba, len, pos);
      readFully(fb, bb, len, pos);
      if (!ba.subarray(0, len).equals(bb.subarray(0, len))) {
        let i = 0;
        while (ba[i] === bb[i]) i++;
        return { ok: false, sizes, firstDifference: pos + i };
      }
      sinceYield += len;
      if (sinceYield >= YIELD_EVERY) {
        sinceYield = 0;
        await yieldToLoop();
      }
    }
    return sizes.a === sizes.b ? { ok: true, sizes } : { ok: false, sizes, firstDifference: size };
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}

function readFully(fd: number, buf: Buffer, len: number, pos: number): void {
  let done = 0;
  while (done < len) {
    const n = readSync(fd, buf, done, len - done, pos + done);
    if (n === 0) throw new Error(`unexpected end of file at ${pos + done}`);
    done += n;
  }
}

function lcm(a: number, b: number): number {
  let x = a;
  let y = b;
  while (y !== 0) [x, y] = [y, x % y];
  return (a / x) * b;
}
