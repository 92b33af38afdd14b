// The dirty bitmap: take() returns each dirty page once, sorted, and clears.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DirtyBitmap } from '../../src/guest/dirty-bitmap.js';
import { fcAssert } from './helpers/fc-params.js';

describe('DirtyBitmap', () => {
  it('takes exactly the set pages, ascending, then nothing', () => {
    fcAssert(
      fc.property(fc.integer({ min: 1, max: 2000 }).chain((n) => fc.tuple(fc.constant(n), fc.array(fc.nat(n - 1)))), ([n, pages]) => {
        const b = new DirtyBitmap(n);
        for (const p of pages) b.set(p);
        const want = [...new Set(pages)].sort((x, y) => x - y);
        expect(b.count).toBe(want.length);
        expect([...b.take()]).toEqual(want);
        expect(b.count).toBe(0);
        expect(b.take().length).toBe(0);
      }),
    );
  });

  it('starts all dirty without phantom pages past the end', () => {
    const b = new DirtyBitmap(70, true);
    expect(b.count).toBe(70);
    expect([...b.take()]).toEqual(Array.from({ length: 70 }, (_, i) => i));
  });
});
