// The block-size rule S's command line and D's BEGIN check share.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BULK_CHUNK_BYTES, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE } from '../../src/protocol/constants.js';
import { isValidBlockSize } from '../../src/protocol/geometry.js';
import { fcParams } from '../helpers/fc.js';

describe('isValidBlockSize', () => {
  it('takes every power of two from 4 KiB to one bulk chunk (256 KiB), and nothing around them', () => {
    expect([MIN_BLOCK_SIZE, MAX_BLOCK_SIZE]).toEqual([4096, BULK_CHUNK_BYTES]);
    const valid = [4096, 8192, 16384, 32768, 65536, 131072, 262144];
    for (const b of valid) expect(isValidBlockSize(b), String(b)).toBe(true);
    for (const b of [0, -4096, 1, 2048, 4095, 4097, 3 * 1024, 12288, 262143, 262145, 524288, 4096.5, Number.NaN, Infinity]) {
      expect(isValidBlockSize(b), String(b)).toBe(false);
    }
  });

  it('property: valid exactly when a power of two within the bounds', () => {
    fc.assert(
      fc.property(fc.integer({ min: -1, max: 2 * MAX_BLOCK_SIZE }), (b) => {
        const power = b > 0 && Number.isInteger(Math.log2(b));
        expect(isValidBlockSize(b)).toBe(power && b >= MIN_BLOCK_SIZE && b <= MAX_BLOCK_SIZE);
      }),
      fcParams(),
    );
  });
});
