// The demo image: sparse, with data, written zeroes, holes and partial zero blocks, the same for a seed.
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { generateDemoImage } from '../../src/guest/image-gen.js';

const dir = mkdtempSync(join(tmpdir(), 'pc-img-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const MIB = 1 << 20;
const ZERO_SECTOR = Buffer.alloc(512);
const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

describe('generateDemoImage', () => {
  const size = 16 * MIB + 12345; // not a multiple of anything: the tail slot is short
  const path = join(dir, 'a.img');
  const res = generateDemoImage(path, size, 7);
  const bytes = readFileSync(path);

  it('has the requested size, sparse, with every kind of run', () => {
    expect(bytes.length).toBe(size);
    expect(res.dataBytes + res.zeroBytes + res.holeBytes).toBe(size);
    expect(res.dataBytes).toBeGreaterThan(size * 0.4);
    expect(res.zeroBytes).toBeGreaterThanOrEqual(2 * MIB);
    expect(res.holeBytes).toBeGreaterThanOrEqual(2 * MIB);
    const allocated = statSync(path).blocks * 512;
    expect(allocated).toBeLessThan(size);
    expect(allocated).toBeLessThanOrEqual(size - res.holeBytes + MIB);
    expect(allocated).toBeGreaterThanOrEqual(res.dataBytes);
  });

  it('writes what its layout says, and the layout covers the image in order', () => {
    let at = 0;
    for (const r of res.layout) {
      expect(r.offset).toBe(at);
      at += r.length;
      const slice = bytes.subarray(r.offset, r.offset + r.length);
      if (r.kind === 'data') {
        // Random data: no 512-byte sector of it reads as zero.
        let zeroSectors = 0;
        for (let s = 0; s + 512 <= slice.length; s += 512) if (slice.subarray(s, s + 512).equals(ZERO_SECTOR)) zeroSectors++;
        expect(zeroSectors).toBe(0);
      } else {
        expect(slice.equals(Buffer.alloc(r.length))).toBe(true);
      }
    }
    expect(at).toBe(size);
  });

  it('has 4 KiB blocks that are partly zero, partly data', () => {
    let partial = 0;
    for (let b = 0; b + 4096 <= size; b += 4096) {
      const blk = bytes.subarray(b, b + 4096);
      let zeroSectors = 0;
      for (let s = 0; s < 8; s++) if (blk.subarray(s * 512, s * 512 + 512).equals(ZERO_SECTOR)) zeroSectors++;
      if (zeroSectors > 0 && zeroSectors < 8) partial++;
    }
    expect(partial).toBeGreaterThan(3);
  });

  it('is deterministic from the seed', () => {
    const again = join(dir, 'b.img');
    const other = join(dir, 'c.img');
    expect(generateDemoImage(again, size, 7)).toEqual(res);
    expect(sha(again)).toBe(sha(path));
    generateDemoImage(other, size, 8);
    expect(sha(other)).not.toBe(sha(path));
  });
});
