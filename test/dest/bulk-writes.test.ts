// Bulk writes off the event loop, on a real image file: a block whose write is in flight is neither missing nor
// present. The disk is held through the ImageWriteIo seam (a write is issued only when the test lets it go, as a
// slow disk would), so each race is made to happen rather than hoped for.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { imageWriteIo, type ImageWriteIo } from '../../src/common/file-io.js';
import { silentLogger } from '../../src/common/logger.js';
import { BlockStore } from '../../src/dest/block-store.js';
import type { Fetcher } from '../../src/dest/fetcher.js';
import { ScriptedFetcher } from '../helpers/scripted-fetcher.js';
import { PresentBitmap } from '../../src/dest/present-bitmap.js';
import { WRITE_WINDOW_BYTES } from '../../src/dest/store-constants.js';
import { ByteParts } from '../../src/protocol/byte-parts.js';
import { CLASS_BULK, CLASS_URGENT } from '../../src/protocol/constants.js';
import { systemError } from '../faults/fault-file-io.js';
import { turns, waitUntil } from '../helpers/wait.js';

const BS = 4096;
const BLOCKS = 8;
const SIZE = BS * BLOCKS;

/** A disk whose asynchronous writes wait, unissued, until released (or fail with `failNext`). */
class HeldDisk implements ImageWriteIo {
  readonly held: Array<{ position: number; length: number; go: () => void }> = [];
  failNext: string | null = null;
  write = imageWriteIo.write;
  writev = imageWriteIo.writev;
  sync = imageWriteIo.sync;
  async writevAsync(fd: number, parts: readonly Buffer[], position: number): Promise<void> {
    const length = parts.reduce((n, p) => n + p.length, 0);
    await new Promise<void>((go) => this.held.push({ position, length, go }));
    if (this.failNext) {
      const code = this.failNext;
      this.failNext = null;
      throw systemError(code, 'pwritev');
    }
    return imageWriteIo.writevAsync!(fd, parts, position);
  }
  release(): void {
    for (const h of this.held.splice(0)) h.go();
  }
}

/** S's bytes delivered in parts cut mid-block, as socket chunks come. */
function asChunks(bytes: Buffer): ByteParts {
  const cut = Math.min(bytes.length, 1000);
  return ByteParts.from([bytes.subarray(0, cut), bytes.subarray(cut, cut + BS), bytes.subarray(cut + BS)]);
}

const src = Buffer.alloc(SIZE);
for (let i = 0; i < SIZE; i += 4) src.writeUInt32BE(0x50000000 + i, i);

let dir: string;
let disk: HeldDisk;
let fetcher: ScriptedFetcher;
let store: BlockStore;

function bitsOnDisk(): PresentBitmap {
  return PresentBitmap.load(join(dir, 'bitmap'), BS, BLOCKS);
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'pc-bulk-'));
  disk = new HeldDisk();
  fetcher = new ScriptedFetcher();
  fetcher.shape = asChunks;
  const bitmap = PresentBitmap.create(join(dir, 'bitmap'), BS, BLOCKS);
  store = BlockStore.create(join(dir, 'img'), { size: SIZE, bitmap, fetcher: fetcher as unknown as Fetcher, log: silentLogger(), io: disk });
  store.startCopyOnRead();
});
afterEach(async () => {
  disk.release();
  await store.close().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

describe('a bulk write in flight', () => {
  it('keeps its blocks neither missing nor present: no bit, no commit, nothing fetched again; present once it returned', async () => {
    store.fetchBulk(2, 2);
    fetcher.answer(0, src);
    expect(disk.held).toHaveLength(1);
    expect([store.isPresent(2), store.isInflight(2), store.nextMissing(2)]).toEqual([false, true, 2]);
    // A commit now covers nothing of it: the image sync waits for the write, and the bits come with the next one.
    const flushed = store.flush();
    await turns(5);
    disk.release();
    await flushed;
    let onDisk = bitsOnDisk();
    expect([onDisk.has(2), onDisk.has(3)]).toEqual([false, false]);
    onDisk.close();
    expect([store.isPresent(2), store.isPresent(3), store.isInflight(2)]).toEqual([true, true, false]);
    await store.flush();
    onDisk = bitsOnDisk();
    expect([onDisk.has(2), onDisk.has(3)]).toEqual([true, true]);
    onDisk.close();
    expect((await store.read(2 * BS, 2 * BS)).equals(src.subarray(2 * BS, 4 * BS))).toBe(true);
  });

  it('a guest write over it waits for it, and the guest\'s bytes win (partial and whole blocks)', async () => {
    store.fetchBulk(1, 3);
    fetcher.answer(0, src);
    expect(disk.held).toHaveLength(1);
    const partial = Buffer.alloc(100, 0xaa);
    const whole = Buffer.alloc(BS, 0xbb);
    let done = 0;
    const writes = [store.write(BS + 50, partial), store.write(3 * BS, whole)].map((w) => w.then(() => done++));
    await turns(5);
    // Neither wrote yet: the bulk write has not returned.
    expect(done).toBe(0);
    disk.release();
    await Promise.all(writes);
    const img = readFileSync(join(dir, 'img'));
    const want = Buffer.from(src.subarray(BS, 4 * BS));
    partial.copy(want, 50);
    whole.copy(want, 2 * BS);
    expect(img.subarray(BS, 4 * BS).equals(want)).toBe(true);
    expect((await store.read(BS, 3 * BS)).equals(want)).toBe(true);
    // Block 2 is still S's (the final check compares it); 1 and 3 are the guest's.
    expect([...(await store.pristineDigests()).blocks]).toEqual([2]);
  });

  it('a demand read of it waits for that write instead of fetching it again', async () => {
    store.fetchBulk(4, 1);
    fetcher.answer(0, src);
    const read = store.read(4 * BS + 10, 20);
    await turns(5);
    expect(fetcher.requests.filter((r) => r.cls === CLASS_URGENT)).toHaveLength(0);
    disk.release();
    expect((await read).equals(src.subarray(4 * BS + 10, 4 * BS + 30))).toBe(true);
    expect(fetcher.requests.map((r) => r.cls)).toEqual([CLASS_BULK]);
  });

  it('that fails turns the local fault on and leaves its blocks missing, to be fetched again', async () => {
    const reports: boolean[] = [];
    store.onLocalFault = (r) => reports.push(r.active);
    store.fetchBulk(5, 2);
    fetcher.answer(0, src);
    disk.failNext = 'ENOSPC';
    disk.release();
    await store.writesSettled();
    expect(store.writesPaused).toBe(true);
    expect(reports).toEqual([true]);
    expect([store.isPresent(5), store.isPresent(6), store.isInflight(5), store.nextMissing(5)]).toEqual([false, false, false, 5]);
    // The probe writes synchronously; the disk takes writes again and the blocks are asked for anew.
    await waitUntil(() => !store.writesPaused, 'the fault to clear');
    store.fetchBulk(5, 2);
    fetcher.answer(fetcher.requests.length - 1, src);
    disk.release();
    await store.writesSettled();
    expect([store.isPresent(5), store.isPresent(6)]).toEqual([true, true]);
  });

  it('close waits for it, and its blocks are committed', async () => {
    store.fetchBulk(0, 2);
    fetcher.answer(0, src);
    let closed = false;
    const closing = store.close().then(() => (closed = true));
    await turns(5);
    expect(closed).toBe(false);
    disk.release();
    await closing;
    const onDisk = bitsOnDisk();
    expect([onDisk.has(0), onDisk.has(1)]).toEqual([true, true]);
    onDisk.close();
    expect(readFileSync(join(dir, 'img')).subarray(0, 2 * BS).equals(src.subarray(0, 2 * BS))).toBe(true);
  });

  it('urgent data is written at once, not held: the guest waiting on it is answered without a turn of the disk', async () => {
    const read = store.read(6 * BS, BS);
    await turns(1);
    fetcher.answer(0, src);
    expect(disk.held).toHaveLength(0);
    expect(store.isPresent(6)).toBe(true);
    expect((await read).equals(src.subarray(6 * BS, 7 * BS))).toBe(true);
  });

  it('holds at most WRITE_WINDOW_BYTES in flight: past it, bulk data is written at once (the loop waits on the disk)', async () => {
    const bs = 1024 * 1024;
    const n = WRITE_WINDOW_BYTES / bs + 3;
    const big = new ScriptedFetcher();
    const bitmap = PresentBitmap.create(join(dir, 'bitmap2'), bs, n);
    const s2 = BlockStore.create(join(dir, 'img2'), { size: n * bs, bitmap, fetcher: big as unknown as Fetcher, log: silentLogger(), io: disk });
    s2.startCopyOnRead();
    const image = Buffer.alloc(n * bs, 0x5a);
    try {
      for (let b = 0; b < n; b++) {
        s2.fetchBulk(b, 1);
        big.answer(b, image);
      }
      expect(disk.held).toHaveLength(WRITE_WINDOW_BYTES / bs);
      expect(Array.from({ length: n }, (_, b) => s2.isPresent(b))).toEqual(Array.from({ length: n }, (_, b) => b >= WRITE_WINDOW_BYTES / bs));
      disk.release();
      await s2.writesSettled();
      expect(s2.presentBlocks).toBe(n);
    } finally {
      disk.release();
      await s2.close();
    }
  });
});
