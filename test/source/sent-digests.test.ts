// What S knows D holds: each block counted once, the short last block by its own length.
import { describe, expect, it } from 'vitest';
import { SentDigests } from '../../src/source/sent-digests.js';

describe('SentDigests.knownBytes (the base of "bytes only on S")', () => {
  it('counts each whole block once, zero or data, the short last block by its length', () => {
    const bs = 4096;
    const sent = new SentDigests(3 * bs + 100, bs);
    expect(sent.knownBytes).toBe(0);
    sent.recordData(0, Buffer.alloc(bs, 1));
    sent.recordData(0, Buffer.alloc(bs, 2));
    expect(sent.knownBytes).toBe(bs);
    // A part of a block is not the block.
    sent.recordData(bs, Buffer.alloc(bs / 2, 3));
    expect(sent.knownBytes).toBe(bs);
    sent.recordZero(bs, 2 * bs + 100);
    expect(sent.knownBytes).toBe(3 * bs + 100);
  });
});
