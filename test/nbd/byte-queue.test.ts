// ByteQueue: what take, skip and peek return for any chunking (chunk boundaries, partial takes, many small
// chunks), checked against one flat copy of the same bytes.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ByteQueue } from '../../src/nbd/byte-queue.js';
import { fcParams } from '../helpers/fc.js';

/** Bytes 0, 1, 2, … so a byte out of place says where it came from. */
function counting(n: number, from = 0): Buffer {
  return Buffer.from(Array.from({ length: n }, (_, i) => (from + i) & 0xff));
}

describe('ByteQueue', () => {
  it('takes across chunk boundaries, in one copy, and keeps the rest of a partly taken chunk', () => {
    const q = new ByteQueue();
    q.push(counting(3, 0));
    q.push(counting(4, 3));
    q.push(counting(5, 7));
    expect(q.take(2)).toEqual(counting(2, 0)); // inside the first chunk
    expect(q.take(6)).toEqual(counting(6, 2)); // rest of the first, all of the second, one byte of the third
    expect(q.length).toBe(4);
    expect(q.peek(2)).toEqual(counting(2, 8));
    expect(q.take(4)).toEqual(counting(4, 8));
    expect(q.length).toBe(0);
  });

  it('returns a view, not a copy, when the bytes lie in one chunk', () => {
    const q = new ByteQueue();
    const chunk = counting(8);
    q.push(chunk);
    const head = q.take(8);
    expect(head.buffer).toBe(chunk.buffer);
    expect(head.byteOffset).toBe(chunk.byteOffset);
  });

  it('takes exactly a whole chunk, then the next chunk from its start', () => {
    const q = new ByteQueue();
    q.push(counting(4, 0));
    q.push(counting(4, 4));
    expect(q.take(4)).toEqual(counting(4, 0));
    expect(q.take(4)).toEqual(counting(4, 4));
  });

  it('refuses to take more than it holds, and skip stops at what it holds', () => {
    const q = new ByteQueue();
    q.push(counting(3));
    expect(() => q.take(4)).toThrow(RangeError);
    expect(q.skip(10)).toBe(3);
    expect(q.length).toBe(0);
    expect(q.take(0)).toHaveLength(0);
  });

  it('takes many one-byte chunks in one piece', () => {
    const q = new ByteQueue();
    const count = 100_000;
    for (let i = 0; i < count; i++) q.push(Buffer.of(i & 0xff));
    expect(q.take(count - 1)).toEqual(counting(count - 1));
    expect(q.length).toBe(1);
    expect(q.take(1)).toEqual(Buffer.of((count - 1) & 0xff));
  });

  it('for any chunking and any sequence of take/skip/peek, gives the bytes a flat buffer gives', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('take' as const), n: fc.nat(40) }),
      fc.record({ kind: fc.constant('skip' as const), n: fc.nat(40) }),
      fc.record({ kind: fc.constant('peek' as const), n: fc.nat(40) }),
    );
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 12 }), { maxLength: 30 }), fc.array(op, { maxLength: 30 }), (chunks, ops) => {
        const q = new ByteQueue();
        for (const c of chunks) q.push(Buffer.from(c));
        let flat = Buffer.concat(chunks.map((c) => Buffer.from(c)));
        for (const { kind, n } of ops) {
          const want = Math.min(n, flat.length);
          if (kind === 'take') {
            expect(q.take(want)).toEqual(flat.subarray(0, want));
            flat = flat.subarray(want);
          } else if (kind === 'skip') {
            expect(q.skip(n)).toBe(want);
            flat = flat.subarray(want);
          } else {
            expect(q.peek(want)).toEqual(flat.subarray(0, want));
          }
          expect(q.length).toBe(flat.length);
        }
      }),
      fcParams(),
    );
  });
});
