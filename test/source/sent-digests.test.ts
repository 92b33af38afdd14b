// What S knows D holds: each block counted once, the short last block by its own length; and the crc of each block as
// it left (the final check's reference), from a crc computed here with node:zlib, not by the code under test.
import { crc32 } from 'node:zlib';
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

describe('SentDigests.get (the crc S compares D\'s digest with)', () => {
  const bs = 4096;
  /** Block b of a test image: bytes that differ per block and per offset. */
  const blockBytes = (b: number, len = bs) => Buffer.from(Array.from({ length: len }, (_, i) => (b * 31 + i * 7) & 0xff));

  it('a block never recorded has no crc; a recorded one has the crc of exactly its bytes', () => {
    const sent = new SentDigests(8 * bs, bs);
    for (let b = 0; b < 8; b++) expect(sent.get(b)).toBeUndefined();
    sent.recordData(0, Buffer.concat([blockBytes(0), blockBytes(1)]));
    expect(sent.get(0)).toBe(crc32(blockBytes(0)) >>> 0);
    expect(sent.get(1)).toBe(crc32(blockBytes(1)) >>> 0);
    for (let b = 2; b < 8; b++) expect(sent.get(b)).toBeUndefined();
  });

  it('a reply at an offset records the blocks it wholly covers, each with its own bytes; partial blocks at either end are not recorded', () => {
    const sent = new SentDigests(16 * bs, bs);
    // [5.5 blocks, 9.5 blocks): blocks 6, 7 and 8 whole, halves of 5 and 9.
    const offset = 5 * bs + bs / 2;
    const data = Buffer.concat([blockBytes(5).subarray(bs / 2), blockBytes(6), blockBytes(7), blockBytes(8), blockBytes(9).subarray(0, bs / 2)]);
    sent.recordData(offset, data);
    expect([5, 6, 7, 8, 9].map((b) => sent.get(b))).toEqual([undefined, crc32(blockBytes(6)) >>> 0, crc32(blockBytes(7)) >>> 0, crc32(blockBytes(8)) >>> 0, undefined]);
    expect(sent.knownBytes).toBe(3 * bs);
    // Block-aligned at a later offset.
    sent.recordData(12 * bs, Buffer.concat([blockBytes(12), blockBytes(13)]));
    expect([sent.get(12), sent.get(13), sent.get(14)]).toEqual([crc32(blockBytes(12)) >>> 0, crc32(blockBytes(13)) >>> 0, undefined]);
  });

  it('a block recorded again keeps the latest crc, counted once', () => {
    const sent = new SentDigests(4 * bs, bs);
    sent.recordData(bs, blockBytes(1));
    sent.recordData(bs, blockBytes(2));
    expect(sent.get(1)).toBe(crc32(blockBytes(2)) >>> 0);
    sent.recordZero(bs, bs);
    expect(sent.get(1)).toBe(crc32(Buffer.alloc(bs)) >>> 0);
    expect(sent.knownBytes).toBe(bs);
  });

  it('zero runs: each whole block the crc of its zeroes; the short last block the crc of its own length of zeroes', () => {
    const size = 3 * bs + 100;
    const sent = new SentDigests(size, bs);
    sent.recordZero(bs / 2, size - bs / 2);
    expect([0, 1, 2, 3].map((b) => sent.get(b))).toEqual([undefined, crc32(Buffer.alloc(bs)) >>> 0, crc32(Buffer.alloc(bs)) >>> 0, crc32(Buffer.alloc(100)) >>> 0]);
    expect(sent.knownBytes).toBe(2 * bs + 100);
  });

  it('data in the short last block: the crc of its bytes; a reply that stops short of it records nothing there', () => {
    const size = 2 * bs + 10;
    const sent = new SentDigests(size, bs);
    sent.recordData(2 * bs, blockBytes(2, 9));
    expect(sent.get(2)).toBeUndefined();
    sent.recordData(2 * bs, blockBytes(2, 10));
    expect(sent.get(2)).toBe(crc32(blockBytes(2, 10)) >>> 0);
    expect(sent.knownBytes).toBe(10);
  });

  it('blocks in every bit position of a byte are told apart', () => {
    const sent = new SentDigests(20 * bs, bs);
    for (const b of [0, 3, 7, 8, 13, 19]) sent.recordData(b * bs, blockBytes(b));
    for (let b = 0; b < 20; b++) expect(sent.get(b), `block ${b}`).toBe([0, 3, 7, 8, 13, 19].includes(b) ? crc32(blockBytes(b)) >>> 0 : undefined);
  });

  it('a 64 GiB image at 64 KiB blocks is one small record (a crc per block), its last block recorded like any other', () => {
    const size = 64 * 1024 ** 3;
    const big = 64 * 1024;
    const sent = new SentDigests(size, big);
    const last = size / big - 1;
    sent.recordZero(last * big, big);
    expect(sent.get(last)).toBe(crc32(Buffer.alloc(big)) >>> 0);
    expect(sent.get(last - 1)).toBeUndefined();
    expect(sent.knownBytes).toBe(big);
  });
});
