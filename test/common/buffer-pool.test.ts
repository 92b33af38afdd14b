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

  it('keeps at most maxIdle buffers and refuses a buffer that is not one of its own', () => {
    const pool = new BufferPool(1024, 1);
    const [a, b] = [pool.take(), pool.take()];
    pool.give(a);
    pool.give(b);
    expect(pool.idle).toBe(1);
    expect(() => pool.give(Buffer.alloc(512))).toThrow(/not a buffer from this pool/);
    expect(() => pool.give(Buffer.alloc(2048).subarray(1024))).toThrow(/not a buffer from this pool/);
  });
});
