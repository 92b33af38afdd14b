// Final verification: passes on a correct overlay, and pinpoints each kind of wrong block.
import { closeSync, copyFileSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { patternBuffer } from '../../src/guest/pattern.js';
import { compareImages, verifyMigration } from '../../src/guest/verify.js';

const dir = mkdtempSync(join(tmpdir(), 'pc-verify-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const SIZE = 9 << 20;
const src = join(dir, 'src.img');
const dst = join(dir, 'dst.img');
const { layout } = generateDemoImage(src, SIZE, 3);

// The guest's writes: a few scattered units, one rewritten, some at the very end of the disk.
const writeMap: Array<[number, number]> = [
  [0, 1],
  [17, 2],
  [18, 1],
  [1000, 7],
  [SIZE / 4096 - 1, 65535],
];

/** Write `bytes` into the destination image at `offset`. */
function poke(offset: number, bytes: Buffer): void {
  const fd = openSync(dst, 'r+');
  writeSync(fd, bytes, 0, bytes.length, offset);
  closeSync(fd);
}

beforeEach(() => {
  copyFileSync(src, dst);
  for (const [u, g] of writeMap) poke(u * 4096, patternBuffer(u * 4096, 4096, g));
});

describe('verifyMigration', () => {
  it('passes when the destination is the source overlaid with the guest writes', async () => {
    const r = await verifyMigration({ sourceImage: src, destImage: dst, writeMap });
    expect(r).toMatchObject({ ok: true, mismatchedBlocks: 0, mismatches: [], unitsOverlaid: 5, blocksChecked: SIZE / 65536 });
  });

  it('reports a unit with a stale generation', async () => {
    poke(17 * 4096, patternBuffer(17 * 4096, 4096, 1));
    const r = await verifyMigration({ sourceImage: src, destImage: dst, writeMap });
    expect(r.ok).toBe(false);
    // The generation sits in the word's second byte: that is the first byte to differ.
    expect(r.mismatches).toEqual([{ blockOffset: 65536, offset: 17 * 4096 + 1, expected: 'pattern gen 2', found: { offset: 17 * 4096, generation: 1 } }]);
  });

  it('reports a guest write that landed at the wrong offset, from both ends', async () => {
    // The write of unit 1000 also (wrongly) landed on unit 500, inside a stretch that should hold source data.
    poke(500 * 4096 + 8, patternBuffer(1000 * 4096 + 8, 4088, 7));
    const r = await verifyMigration({ sourceImage: src, destImage: dst, writeMap, blockSize: 4096 });
    expect(r.mismatchedBlocks).toBe(1);
    expect(r.blocksChecked).toBe(SIZE / 4096);
    expect(r.mismatches[0]).toMatchObject({ blockOffset: 500 * 4096, expected: 'source', found: { offset: 1000 * 4096 + 8, generation: 7 } });
  });

  it('reports source data missing (a block never fetched reads as zeroes)', async () => {
    const run = layout.find((r) => r.kind === 'data' && r.offset > 4 << 20)!;
    poke(run.offset, Buffer.alloc(4096));
    const r = await verifyMigration({ sourceImage: src, destImage: dst, writeMap });
    expect(r.mismatches[0]).toMatchObject({ offset: run.offset, expected: 'source', foundZeroes: true });
    expect(r.mismatches[0]!.found).toBeUndefined();
  });

  it('reports a guest write that never arrived', async () => {
    poke(0, readFileSync(src).subarray(0, 4096));
    const r = await verifyMigration({ sourceImage: src, destImage: dst, writeMap });
    expect(r.mismatches[0]).toMatchObject({ blockOffset: 0, expected: 'pattern gen 1' });
  });

  it('fails on a size mismatch', async () => {
    truncateSync(dst, SIZE - 4096);
    const r = await verifyMigration({ sourceImage: src, destImage: dst, writeMap: [] });
    expect(r.ok).toBe(false);
    expect(r.sizes).toEqual({ source: SIZE, dest: SIZE - 4096 });
  });
});

describe('compareImages', () => {
  it('finds equal images equal and the first differing byte otherwise', async () => {
    const copy = join(dir, 'copy.img');
    copyFileSync(src, copy);
    expect(await compareImages(src, copy)).toEqual({ ok: true, sizes: { a: SIZE, b: SIZE } });
    const img = readFileSync(copy);
    img[5_000_001] = img[5_000_001]! ^ 0x40;
    img[6_000_000] = img[6_000_000]! ^ 0x01;
    writeFileSync(copy, img);
    expect(await compareImages(src, copy)).toEqual({ ok: false, sizes: { a: SIZE, b: SIZE }, firstDifference: 5_000_001 });
    truncateSync(copy, 1 << 20);
    expect((await compareImages(src, copy)).firstDifference).toBe(1 << 20);
  });
});
