import { describe, expect, it } from 'vitest';
import { BufferPool } from '../../src/common/buffer-pool.js';

describe('BufferPool', () => {
  it('reuses given-back buffers and allocates only when none is idle', () => {
    const pool = new BufferPool(1024, 2);
    const a = pool.take();
    const b = pool.take();
    expect(pool.allocated).toBe(2);
    pool.give(a);
    expect(pool.take()).toBe(a);
    pool.give(b);
    pool.give(a);
    pool.give(pool.take() === a ? a : b);
    expect(pool.allocated).toBe(2);
  });

  it('keeps at most maxIdle buffers and ignores anything but a whole buffer of its own', () => {
    const pool = new BufferPool(1024, 1);
    const [a, b] = [pool.take(), pool.take()];
    expect(pool.give(a)).toBe(true);
    pool.give(b);
    expect(pool.idle).toBe(1);
    expect(pool.give(Buffer.alloc(1024))).toBe(false);
    const c = pool.take();
    expect(pool.give(c.subarray(0, 512))).toBe(false);
    expect(pool.give(c.subarray(512))).toBe(false);
    expect(pool.idle).toBe(0);
  });
});
