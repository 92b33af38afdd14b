// D's present bitmap on its own, through its public API: bits in memory (present) versus bits in the file
// (durable), what commit / clear / forget do to each, and the file format, read and written byte for byte
// against a test-only spelling of it (bitmapFile below), never against the code under test.
import { existsSync, fdatasyncSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, realpathSync, rmSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StateError, UsageError } from '../../src/common/errors.js';
import { PresentBitmap } from '../../src/dest/present-bitmap.js';
import { expectRejects, expectThrows } from '../helpers/errors.js';

const BS = 65536;

/**
 * The bitmap file as DESIGN.md §4 lays it out: "PCBITMAP" · version u32 BE · blockSize u32 BE · blockCount u64 BE ·
 * 8 reserved bytes, then one bit per block, block b at byte b>>3, bit (b & 7) counted from the least significant.
 */
function bitmapFile(o: { blockSize: number; blockCount: number; set?: readonly number[]; magic?: string; version?: number; tail?: number }): Buffer {
  const header = Buffer.alloc(32);
  header.write(o.magic ?? 'PCBITMAP', 0, 'latin1');
  header.writeUInt32BE(o.version ?? 1, 8);
  header.writeUInt32BE(o.blockSize, 12);
  header.writeBigUInt64BE(BigInt(o.blockCount), 16);
  const bits = Buffer.alloc(Math.ceil(o.blockCount / 8));
  for (const b of o.set ?? []) bits[Math.floor(b / 8)]! |= 2 ** (b % 8);
  // Bits past the last block, as a torn or foreign file might hold them.
  if (o.tail !== undefined) bits[bits.length - 1]! |= o.tail;
  return Buffer.concat([header, bits]);
}

/** The blocks whose bit is set in a bitmap file's bit array (the file's bytes, read independently). */
function bitsInFile(file: Buffer, blockCount: number): number[] {
  const out: number[] = [];
  for (let b = 0; b < blockCount; b++) if ((file[32 + Math.floor(b / 8)]! >> b % 8) & 1) out.push(b);
  return out;
}

/** What the bitmap reports for every block: [present blocks, durable blocks]. */
function state(bm: PresentBitmap): { present: number[]; durable: number[]; presentCount: number; durableCount: number; complete: boolean } {
  const present: number[] = [];
  const durable: number[] = [];
  for (let b = 0; b < bm.blockCount; b++) {
    if (bm.has(b)) present.push(b);
    if (bm.isDurable(b)) durable.push(b);
  }
  return { present, durable, presentCount: bm.presentCount, durableCount: bm.durableCount, complete: bm.complete };
}

let dir: string;
let path: string;
const open: PresentBitmap[] = [];
const track = (bm: PresentBitmap) => (open.push(bm), bm);

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'pc-bitmap-'));
  path = join(dir, 'bitmap');
});
afterEach(() => {
  for (const bm of open.splice(0)) bm.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('create', () => {
  it.each([1, 7, 8, 9, 20, 64])('%i blocks: an empty file of the documented layout, every block missing', (count) => {
    const bm = track(PresentBitmap.create(path, BS, count));
    expect(bm.blockCount).toBe(count);
    expect(bm.blockSize).toBe(BS);
    expect(readFileSync(path).toString('hex')).toBe(bitmapFile({ blockSize: BS, blockCount: count }).toString('hex'));
    expect(state(bm)).toEqual({ present: [], durable: [], presentCount: 0, durableCount: 0, complete: false });
    expect(bm.nextMissing(0)).toBe(0);
  });

  it('replaces a stale file, and a planted symlink is replaced, not written through', () => {
    writeFileSync(path, bitmapFile({ blockSize: BS, blockCount: 16, set: [1, 2, 3] }));
    track(PresentBitmap.create(path, BS, 16));
    expect(bitsInFile(readFileSync(path), 16)).toEqual([]);
    const target = join(dir, 'target');
    writeFileSync(target, 'not a bitmap');
    const link = join(dir, 'link');
    symlinkSync(target, link);
    track(PresentBitmap.create(link, BS, 16));
    expect(readFileSync(target, 'utf8')).toBe('not a bitmap');
  });
});

describe('present and durable bits', () => {
  it('markPresent sets one block in memory only, counted once; the file is untouched until commit', () => {
    const bm = track(PresentBitmap.create(path, BS, 20));
    const before = readFileSync(path).toString('hex');
    for (const b of [0, 7, 8, 9, 19, 9]) bm.markPresent(b);
    expect(state(bm)).toEqual({ present: [0, 7, 8, 9, 19], durable: [], presentCount: 5, durableCount: 0, complete: false });
    expect(readFileSync(path).toString('hex')).toBe(before);
  });

  it('complete once every block is present (and not before)', () => {
    const bm = track(PresentBitmap.create(path, BS, 10));
    for (let b = 0; b < 9; b++) bm.markPresent(b);
    expect(bm.complete).toBe(false);
    bm.markPresent(9);
    expect(bm.complete).toBe(true);
    expect(bm.nextMissing(0)).toBe(-1);
  });

  it('a commit whose write or sync fails leaves its blocks not durable: forget() takes them back, a later commit writes only its own', async () => {
    for (const fails of ['write', 'sync'] as const) {
      let failNext = true;
      const io = {
        write: (fd: number, data: Buffer, at: number) => {
          if (fails === 'write' && failNext) throw Object.assign(new Error('EIO'), { code: 'EIO', syscall: 'write' });
          writeSync(fd, data, 0, data.length, at);
        },
        sync: async (fd: number) => {
          if (fails === 'sync' && failNext) throw Object.assign(new Error('EIO'), { code: 'EIO', syscall: 'fdatasync' });
          fdatasyncSync(fd);
        },
      };
      rmSync(path, { force: true });
      const bm = track(PresentBitmap.create(path, BS, 20, io));
      for (const b of [3, 4, 5]) bm.markPresent(b);
      await expect(bm.commit([3, 4])).rejects.toThrow('EIO');
      failNext = false;
      expect(state(bm), fails).toMatchObject({ durable: [], durableCount: 0 });
      bm.forget([3, 4]);
      await bm.commit([5]);
      expect(state(bm), fails).toMatchObject({ present: [5], durable: [5], durableCount: 1 });
      expect(bitsInFile(readFileSync(path), 20), fails).toEqual([5]);
    }
  });

  it('commit writes the bits of the blocks named, and only those, to the file', async () => {
    const bm = track(PresentBitmap.create(path, BS, 20));
    for (const b of [1, 8, 15, 19]) bm.markPresent(b);
    await bm.commit([8, 19]);
    expect(state(bm)).toEqual({ present: [1, 8, 15, 19], durable: [8, 19], presentCount: 4, durableCount: 2, complete: false });
    expect(readFileSync(path).toString('hex')).toBe(bitmapFile({ blockSize: BS, blockCount: 20, set: [8, 19] }).toString('hex'));
    // Committing a durable block again counts it once; the others join it.
    await bm.commit([19, 1, 15, 1]);
    expect(state(bm)).toEqual({ present: [1, 8, 15, 19], durable: [1, 8, 15, 19], presentCount: 4, durableCount: 4, complete: false });
    expect(bitsInFile(readFileSync(path), 20)).toEqual([1, 8, 15, 19]);
  });

  it('commit of a block that is not present is refused (PC_ERR_STATE, naming the block), and nothing reaches the file', async () => {
    const bm = track(PresentBitmap.create(path, BS, 20));
    bm.markPresent(2);
    const err = await expectRejects(bm.commit([2, 11]), StateError, 'PC_ERR_STATE');
    expect(err.message).toContain('block 11 committed but not present');
    expect(bitsInFile(readFileSync(path), 20)).toEqual([]);
  });

  it('an empty commit or clear does no I/O at all (it resolves even on a closed bitmap)', async () => {
    const bm = PresentBitmap.create(path, BS, 20);
    bm.close();
    await expect(bm.commit([])).resolves.toBeUndefined();
    await expect(bm.clear([])).resolves.toBeUndefined();
    // A non-empty one does write: on a closed bitmap that is an error.
    bm.markPresent(3);
    await expect(bm.commit([3])).rejects.toThrow();
  });

  it('clear takes blocks back to missing in memory and in the file, whether durable, present only, or neither', async () => {
    const bm = track(PresentBitmap.create(path, BS, 20));
    for (const b of [0, 3, 9, 12, 17]) bm.markPresent(b);
    await bm.commit([0, 3, 9]);
    await bm.clear([3, 12, 5]);
    expect(state(bm)).toEqual({ present: [0, 9, 17], durable: [0, 9], presentCount: 3, durableCount: 2, complete: false });
    expect(bitsInFile(readFileSync(path), 20)).toEqual([0, 9]);
    // Cleared blocks can come back.
    bm.markPresent(3);
    await bm.commit([3]);
    expect(bitsInFile(readFileSync(path), 20)).toEqual([0, 3, 9]);
    expect(bm.durableCount).toBe(3);
  });

  it('forget takes back present blocks that never became durable, in memory only; durable and missing blocks are left alone', async () => {
    const bm = track(PresentBitmap.create(path, BS, 20));
    for (const b of [2, 4, 6, 16]) bm.markPresent(b);
    await bm.commit([4, 16]);
    const file = readFileSync(path).toString('hex');
    bm.forget([2, 4, 10, 6]);
    expect(state(bm)).toEqual({ present: [4, 16], durable: [4, 16], presentCount: 2, durableCount: 2, complete: false });
    expect(readFileSync(path).toString('hex')).toBe(file);
  });

  // Linux shows a process's open files in /proc/self/fd (elsewhere this is skipped, and reported so).
  it.runIf(existsSync('/proc/self/fd'))('close releases the file: no descriptor is left open on it (created or loaded)', () => {
    const openOn = (file: string) =>
      readdirSync('/proc/self/fd').filter((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`) === file;
        } catch {
          return false;
        }
      }).length;
    const bm = PresentBitmap.create(path, BS, 8);
    const real = realpathSync(path);
    expect(openOn(real)).toBe(1);
    bm.close();
    expect(openOn(real)).toBe(0);
    const again = PresentBitmap.load(path, BS, 8);
    expect(openOn(real)).toBe(1);
    again.close();
    expect(openOn(real)).toBe(0);
  });

  it('close is idempotent', () => {
    const bm = PresentBitmap.create(path, BS, 8);
    bm.close();
    expect(() => bm.close()).not.toThrow();
  });
});

describe('nextMissing', () => {
  it('finds the first missing block at or after `from`, across full bytes, partial bytes and the end', () => {
    const bm = track(PresentBitmap.create(path, BS, 30));
    // Bytes: 0 full, 1 full but block 13, 2 full, 3 holds blocks 24..29 with 27 missing.
    for (let b = 0; b < 30; b++) if (b !== 13 && b !== 27) bm.markPresent(b);
    expect(bm.nextMissing(0)).toBe(13);
    expect(bm.nextMissing(3)).toBe(13); // from inside a full byte
    expect(bm.nextMissing(13)).toBe(13);
    expect(bm.nextMissing(14)).toBe(27);
    expect(bm.nextMissing(20)).toBe(27); // from inside a full byte, missing block in a later byte
    expect(bm.nextMissing(28)).toBe(-1);
    expect(bm.nextMissing(30)).toBe(-1);
    bm.markPresent(13);
    expect(bm.nextMissing(0)).toBe(27);
  });

  it('a missing block at the start of a byte, or in the middle of an otherwise full one, is found', () => {
    const bm = track(PresentBitmap.create(path, BS, 24));
    for (let b = 0; b < 24; b++) if (b !== 8 && b !== 21) bm.markPresent(b);
    expect(bm.nextMissing(0)).toBe(8);
    expect(bm.nextMissing(9)).toBe(21);
    expect(bm.nextMissing(16)).toBe(21);
    // From inside a full byte whose successor has a missing block before `from + 8`.
    const bm2 = track(PresentBitmap.create(join(dir, 'b2'), BS, 24));
    for (let b = 0; b < 24; b++) if (b !== 9) bm2.markPresent(b);
    expect(bm2.nextMissing(5)).toBe(9);
  });
});

describe('load', () => {
  it('reloads the durable bits of a file, as present and durable, counted', () => {
    writeFileSync(path, bitmapFile({ blockSize: BS, blockCount: 20, set: [0, 5, 8, 19] }));
    const bm = track(PresentBitmap.load(path, BS, 20));
    expect(bm.blockCount).toBe(20);
    expect(bm.blockSize).toBe(BS);
    expect(state(bm)).toEqual({ present: [0, 5, 8, 19], durable: [0, 5, 8, 19], presentCount: 4, durableCount: 4, complete: false });
    expect(bm.nextMissing(0)).toBe(1);
  });

  it('a full file loads complete', () => {
    writeFileSync(path, bitmapFile({ blockSize: BS, blockCount: 16, set: Array.from({ length: 16 }, (_, b) => b) }));
    const bm = track(PresentBitmap.load(path, BS, 16));
    expect(bm.complete).toBe(true);
    expect(bm.presentCount).toBe(16);
  });

  it('bits past the last block are ignored (cleared), whatever the file holds there', async () => {
    writeFileSync(path, bitmapFile({ blockSize: BS, blockCount: 10, set: [1, 9], tail: 0xfc }));
    const bm = track(PresentBitmap.load(path, BS, 10));
    expect(state(bm)).toEqual({ present: [1, 9], durable: [1, 9], presentCount: 2, durableCount: 2, complete: false });
    // Completing it takes exactly the ten blocks.
    for (let b = 0; b < 10; b++) bm.markPresent(b);
    expect(bm.complete).toBe(true);
    // The next commit writes the cleared tail back.
    await bm.commit([0]);
    expect(readFileSync(path).subarray(32).toString('hex')).toBe(bitmapFile({ blockSize: BS, blockCount: 10, set: [0, 1, 9] }).subarray(32).toString('hex'));
  });

  it('what a commit or clear wrote is what a restart loads; present-only bits are lost', async () => {
    const bm = PresentBitmap.create(path, BS, 40);
    for (const b of [1, 2, 3, 30, 39]) bm.markPresent(b);
    await bm.commit([1, 2, 30, 39]);
    await bm.clear([2]);
    bm.close();
    const again = track(PresentBitmap.load(path, BS, 40));
    expect(state(again)).toEqual({ present: [1, 30, 39], durable: [1, 30, 39], presentCount: 3, durableCount: 3, complete: false });
    // And it goes on from there: its commits land in the same file.
    again.markPresent(0);
    await again.commit([0]);
    expect(bitsInFile(readFileSync(path), 40)).toEqual([0, 1, 30, 39]);
  });

  it('a file of exactly header + bits loads; one byte short is truncated (PC_ERR_STATE_DIR)', () => {
    const full = bitmapFile({ blockSize: BS, blockCount: 17, set: [16] });
    writeFileSync(path, full);
    track(PresentBitmap.load(path, BS, 17));
    writeFileSync(path, full.subarray(0, full.length - 1));
    const err = expectThrows(() => PresentBitmap.load(path, BS, 17), UsageError, 'PC_ERR_STATE_DIR');
    expect(err.message).toContain(`bitmap ${path} is truncated`);
  });

  it.each([
    ['a bad magic', { magic: 'PCBITMAQ' }],
    ['another version', { version: 2 }],
  ])('%s: PC_ERR_STATE_DIR bad header', (_name, o) => {
    writeFileSync(path, bitmapFile({ blockSize: BS, blockCount: 16, ...o }));
    const err = expectThrows(() => PresentBitmap.load(path, BS, 16), UsageError, 'PC_ERR_STATE_DIR');
    expect(err.message).toContain(`bitmap ${path} has a bad header`);
  });

  it.each([
    ['another block size', { blockSize: BS / 2, blockCount: 16 }],
    ['another block count', { blockSize: BS, blockCount: 24 }],
  ])('%s: PC_ERR_STATE_DIR another geometry', (_name, o) => {
    writeFileSync(path, bitmapFile(o));
    const err = expectThrows(() => PresentBitmap.load(path, BS, 16), UsageError, 'PC_ERR_STATE_DIR');
    expect(err.message).toContain(`bitmap ${path} is for another geometry`);
  });

  it('a missing file, or a symlink in its place, is not loaded', () => {
    expect(() => PresentBitmap.load(path, BS, 16)).toThrow();
    const target = join(dir, 'target');
    writeFileSync(target, bitmapFile({ blockSize: BS, blockCount: 16 }));
    symlinkSync(target, path);
    expect(() => PresentBitmap.load(path, BS, 16)).toThrow();
    expect(existsSync(target)).toBe(true);
  });
});
