// The self-describing pattern: what is filled checks back, and a wrong block says where it came from.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkPattern, decodePatternWord, fillPattern, patternBuffer } from '../../src/guest/pattern.js';
import { fcAssert } from './helpers/fc-params.js';

// Test-only encoder written independently of the one under test (BigInt, one word at a time).
function referenceWord(offset: number, gen: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE((BigInt(gen) << 48n) | BigInt(offset));
  return b;
}

const alignedOffset = fc.integer({ min: 0, max: 2 ** 44 }).map((w) => w * 8);
const generation = fc.integer({ min: 0, max: 0xffff });
const words = fc.integer({ min: 1, max: 600 });

describe('pattern', () => {
  it('matches an independent encoder, word by word, across the 2^32 boundary', () => {
    const start = 2 ** 32 - 16;
    const buf = patternBuffer(start, 32, 0xabcd);
    for (let i = 0; i < 4; i++) expect(buf.subarray(i * 8, i * 8 + 8)).toEqual(referenceWord(start + i * 8, 0xabcd));
    expect(buf.subarray(16, 24).toString('hex')).toBe('abcd000100000000');
  });

  it('round-trips fill and check', () => {
    fcAssert(
      fc.property(alignedOffset, generation, words, (off, gen, n) => {
        const buf = patternBuffer(off, n * 8, gen);
        expect(buf.subarray(0, 8)).toEqual(referenceWord(off, gen));
        expect(checkPattern(buf, off, gen)).toEqual({ ok: true });
      }),
    );
  });

  it('reports a block of the wrong offset with the offset it was written for', () => {
    fcAssert(
      fc.property(alignedOffset, alignedOffset, generation, fc.integer({ min: 2, max: 512 }), (want, got, gen, n) => {
        fc.pre(want !== got);
        const buf = patternBuffer(got, n * 8, gen);
        expect(checkPattern(buf, want, gen)).toEqual({ ok: false, firstBadOffset: want, foundOffset: got, foundGeneration: gen });
      }),
    );
  });

  it('reports a stale generation with the generation found', () => {
    fcAssert(
      fc.property(alignedOffset, generation, generation, (off, want, got) => {
        fc.pre(want !== got);
        const buf = patternBuffer(off, 4096, got);
        expect(checkPattern(buf, off, want)).toEqual({ ok: false, firstBadOffset: off, foundOffset: off, foundGeneration: got });
      }),
    );
  });

  it('pinpoints a single corrupted word and does not call zeroes or noise a pattern', () => {
    const buf = patternBuffer(1 << 20, 4096, 5);
    buf.fill(0, 800, 808);
    expect(checkPattern(buf, 1 << 20, 5)).toEqual({ ok: false, firstBadOffset: (1 << 20) + 800 });
    expect(checkPattern(Buffer.alloc(4096), 4096, 1)).toEqual({ ok: false, firstBadOffset: 4096 });
    const noise = Buffer.from(Array.from({ length: 64 }, (_, i) => (i * 37 + 11) & 0xff));
    expect(decodePatternWord(noise, 0)).toBeUndefined();
  });

  it('decodes the last word of a buffer from its predecessor', () => {
    const buf = patternBuffer(8192, 64, 9);
    expect(decodePatternWord(buf, 56)).toEqual({ offset: 8192 + 56, generation: 9 });
  });

  it('rejects unaligned ranges and out-of-range generations', () => {
    expect(() => fillPattern(Buffer.alloc(8), 4, 1)).toThrow(RangeError);
    expect(() => fillPattern(Buffer.alloc(12), 0, 1)).toThrow(RangeError);
    expect(() => fillPattern(Buffer.alloc(8), 0, 65536)).toThrow(RangeError);
  });

  it('fills 4 KiB in microseconds', () => {
    const buf = Buffer.alloc(4096);
    const n = 20_000;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) fillPattern(buf, i * 4096, 3);
    const us = ((performance.now() - t0) * 1000) / n;
    // Generous bound for slow CI machines; typically ~3 µs.
    expect(us).toBeLessThan(50);
  });
});
