// ByteParts against the one Buffer it stands for: slices, crc, copy and equality agree for random bytes cut into
// random parts, and nothing is copied (slices are views of the parts).
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ByteParts, asParts } from '../../src/protocol/byte-parts.js';
import { fcParams } from '../helpers/fc.js';
import { cutAt } from '../helpers/wire.js';

const cutArb = fc
  .tuple(fc.uint8Array({ maxLength: 300 }), fc.array(fc.nat({ max: 300 }), { maxLength: 8 }))
  .map(([a, points]) => {
    const whole = Buffer.from(a);
    return { whole, parts: ByteParts.from(cutAt(whole, points)) };
  });

describe('ByteParts', () => {
  it('stands for the Buffer it was cut from: length, slices (clamped like subarray), crc, copy, equals', () => {
    fc.assert(
      fc.property(cutArb, fc.integer({ min: -5, max: 310 }), fc.integer({ min: -5, max: 310 }), ({ whole, parts }, a, b) => {
        expect(parts.length).toBe(whole.length);
        expect(parts.toBuffer().equals(whole)).toBe(true);
        expect(parts.crc32()).toBe(crc32(whole) >>> 0);
        // (zlib's crc32 of nothing from a running value is not always that value: only non-empty runs compared.)
        if (whole.length > 0) expect(parts.crc32(0x1234)).toBe(crc32(whole, 0x1234) >>> 0);
        const start = Math.max(0, a);
        const want = whole.subarray(start, Math.max(start, b));
        const got = parts.subarray(start, Math.max(start, b));
        expect(got.length).toBe(want.length);
        expect(got.toBuffer().equals(want)).toBe(true);
        expect(got.crc32()).toBe(crc32(want) >>> 0);
        expect(got.equals(want) && got.equals(ByteParts.from([want]))).toBe(true);
        expect(got.parts.every((p) => p.length > 0)).toBe(true);
        const out = Buffer.alloc(want.length + 2, 0xee);
        got.copy(out, 1);
        expect(out.subarray(1, 1 + want.length).equals(want)).toBe(true);
        expect([out[0], out[out.length - 1]]).toEqual([0xee, 0xee]);
        if (want.length > 0) {
          const other = Buffer.from(want);
          other[other.length - 1]! ^= 1;
          expect(got.equals(other)).toBe(false);
        }
      }),
      fcParams(),
    );
  });

  it('slices are views of the parts (no copy), and one part is handed out as itself', () => {
    const a = Buffer.alloc(10, 1);
    const b = Buffer.alloc(10, 2);
    const p = ByteParts.from([a, Buffer.alloc(0), b]);
    expect(p.parts).toHaveLength(2);
    const mid = p.subarray(5, 15);
    expect(mid.parts.map((x) => [x.buffer === a.buffer || x.buffer === b.buffer, x.length])).toEqual([[true, 5], [true, 5]]);
    expect(p.subarray(12).toBuffer().buffer).toBe(b.buffer);
    expect(asParts(a).toBuffer()).toBe(a);
    expect(asParts(p)).toBe(p);
    expect(p.subarray(3, 3)).toBe(ByteParts.EMPTY);
  });
});
