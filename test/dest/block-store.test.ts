// D's block store on its own: copy-on-read, the dm-clone write rules, durability ordering, pass-through mode.
// The fetcher is a scripted stand-in so the test decides when (and what) S's replies deliver.
import { chmodSync, closeSync, mkdirSync, mkdtempSync, readdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BlockStore, FINAL_CHECK_MODES, type FinalCheckMode } from '../../src/dest/block-store.js';
import type { Fetcher } from '../../src/dest/fetcher.js';
import { ScriptedFetcher } from '../helpers/scripted-fetcher.js';
import { PresentBitmap } from '../../src/dest/present-bitmap.js';
import { silentLogger, type Logger } from '../../src/common/logger.js';
import { pino } from 'pino';
import { BackendError, ProtocolError, UsageError } from '../../src/common/errors.js';
import { CLASS_BULK, CLASS_URGENT } from '../../src/protocol/constants.js';
import type { ImageWriteIo } from '../../src/common/file-io.js';
import { FaultFileIo, systemError } from '../faults/fault-file-io.js';
import type { LocalFaultTiming } from '../../src/dest/local-fault.js';
import { expectRejects, expectThrows } from '../helpers/errors.js';
import { waitUntil } from '../helpers/wait.js';

const BS = 4096;
const BLOCKS = 16;
const SIZE = BS * BLOCKS;

function sourceImage(): Buffer {
  const b = Buffer.alloc(SIZE);
  for (let i = 0; i < SIZE; i += 4) b.writeUInt32BE(0x50000000 + i, i);
  return b;
}

let dir: string;
let fetcher: ScriptedFetcher;
let store: BlockStore;
const src = sourceImage();

function makeStore(finalCheck?: FinalCheckMode): BlockStore {
  const bitmap = PresentBitmap.create(join(dir, 'bitmap'), BS, BLOCKS);
  return BlockStore.create(join(dir, 'img'), { size: SIZE, bitmap, fetcher: fetcher as unknown as Fetcher, log: silentLogger(), finalCheck });
}

const tick = () => new Promise((r) => setImmediate(r));

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'pc-store-'));
  fetcher = new ScriptedFetcher();
  store = makeStore();
});
afterEach(async () => {
  await store.close().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

describe('copy-on-read', () => {
  it('fetches a missing block once for all concurrent readers, urgently, and keeps it', async () => {
    store.startCopyOnRead();
    const reads = Array.from({ length: 10 }, () => store.read(BS * 3 + 100, 200));
    await tick();
    expect(fetcher.requests).toHaveLength(1);
    expect(fetcher.requests[0]).toMatchObject({ offset: BS * 3, length: BS, cls: CLASS_URGENT });
    fetcher.answer(0, src);
    for (const r of await Promise.all(reads)) expect(r).toEqual(src.subarray(BS * 3 + 100, BS * 3 + 300));
    expect(store.isPresent(3)).toBe(true);
    // Present now: no further fetch.
    expect(await store.read(BS * 3, BS)).toEqual(src.subarray(BS * 3, BS * 4));
    expect(fetcher.requests).toHaveLength(1);
  });

  it('before Finish (pass-through) reads go to S and nothing is kept; writes wait for Finish', async () => {
    const r = store.read(0, BS * 2);
    await tick();
    fetcher.answer(0, src);
    expect(await r).toEqual(src.subarray(0, BS * 2));
    expect(store.presentBlocks).toBe(0);
    let written = false;
    const w = store.write(BS * 5, Buffer.alloc(BS, 7)).then(() => (written = true));
    await tick();
    expect(written).toBe(false);
    store.startCopyOnRead();
    await w;
    expect(store.isPresent(5)).toBe(true);
  });
});

describe('dm-clone write rules', () => {
  it('a full-block write makes the block present at once; the late fetch never overwrites it', async () => {
    store.startCopyOnRead();
    const read = store.read(BS * 2, BS); // starts a fetch of block 2
    await tick();
    expect(fetcher.requests).toHaveLength(1);
    const guest = Buffer.alloc(BS, 0xab);
    await store.write(BS * 2, guest); // full block: no wait for the fetch
    expect(store.isPresent(2)).toBe(true);
    expect(await read).toEqual(guest); // the waiting reader sees the guest's data
    fetcher.answer(0, src); // S's copy arrives late
    expect(await store.read(BS * 2, BS)).toEqual(guest);
    expect(store.stats.lateFetchesDropped).toBe(1);
  });

  it('a partial write to a missing block first brings the block in, then overlays the write', async () => {
    store.startCopyOnRead();
    let done = false;
    const w = store.write(BS * 4 + 512, Buffer.alloc(1024, 0xcd)).then(() => (done = true));
    await tick();
    expect(done).toBe(false);
    expect(fetcher.requests).toHaveLength(1);
    expect(fetcher.requests[0]!.offset).toBe(BS * 4);
    fetcher.answer(0, src);
    await w;
    const expected = Buffer.from(src.subarray(BS * 4, BS * 5));
    expected.fill(0xcd, 512, 1536);
    expect(await store.read(BS * 4, BS)).toEqual(expected);
  });

  it('a write spanning blocks fetches only the partially covered ends', async () => {
    store.startCopyOnRead();
    const w = store.write(BS + 100, Buffer.alloc(BS * 3, 1));
    await tick();
    const offsets = fetcher.requests.map((r) => r.offset).sort((a, b) => a - b);
    expect(offsets).toEqual([BS, BS * 4]);
    fetcher.answer(0, src);
    fetcher.answer(1, src);
    await w;
    expect(store.isPresent(2) && store.isPresent(3)).toBe(true);
  });
});

describe('durability ordering', () => {
  it('a bit reaches the bitmap file only after the data, and every bit on disk stands for data on disk', async () => {
    store.startCopyOnRead();
    const r = store.read(BS * 7, BS);
    await tick();
    fetcher.answer(0, src);
    await r;
    // Present in memory, but the bitmap on disk must not claim it before a commit.
    expect(PresentBitmap.load(join(dir, 'bitmap'), BS, BLOCKS).has(7)).toBe(false);
    await store.flush();
    const onDisk = PresentBitmap.load(join(dir, 'bitmap'), BS, BLOCKS);
    expect(onDisk.has(7)).toBe(true);
    expect(readFileSync(join(dir, 'img')).subarray(BS * 7, BS * 8)).toEqual(src.subarray(BS * 7, BS * 8));
  });

  it('after a restart, present blocks are served locally and missing ones fetched again', async () => {
    store.startCopyOnRead();
    const r = store.read(0, BS);
    await tick();
    fetcher.answer(0, src);
    await r;
    const file = store.file;
    await store.close();
    fetcher = new ScriptedFetcher();
    const bitmap = PresentBitmap.load(join(dir, 'bitmap'), BS, BLOCKS);
    store = BlockStore.reopen(join(dir, 'img'), { size: SIZE, bitmap, fetcher: fetcher as unknown as Fetcher, log: silentLogger(), file });
    store.startCopyOnRead();
    expect(await store.read(0, BS)).toEqual(src.subarray(0, BS));
    expect(fetcher.requests).toHaveLength(0);
    const r2 = store.read(BS, BS);
    await tick();
    expect(fetcher.requests).toHaveLength(1);
    fetcher.answer(0, src);
    expect(await r2).toEqual(src.subarray(BS, BS * 2));
  });

  it('zero runs from S make whole blocks present without a fetch, and completion needs every block durable', async () => {
    store.startCopyOnRead();
    let complete = false;
    void store.whenComplete.then(() => (complete = true));
    store.applyZeroRuns([{ offset: 0, length: SIZE }]);
    expect(store.presentBlocks).toBe(BLOCKS);
    expect(fetcher.requests).toHaveLength(0);
    expect(complete).toBe(false);
    await store.flush();
    await tick();
    expect(complete).toBe(true);
    expect((await store.blockStatus(0, SIZE)).every((e) => e.zero)).toBe(true);
  });

  it('rejects reply parts that are not whole blocks and ranges outside the image', async () => {
    store.startCopyOnRead();
    const r = store.read(0, BS);
    await tick();
    expect(() => fetcher.requests[0]!.sink.onData(100, Buffer.alloc(10))).toThrow(/whole blocks/);
    await expect(store.read(SIZE - 10, 20)).rejects.toMatchObject({ code: 'PC_ERR_BEYOND_IMAGE' });
    fetcher.answer(0, src);
    await r;
  });
});

describe('final-check digests', () => {
  /** Fetch blocks 0..3 (data), zero blocks 4..15, a guest write over block 2; then damage block 1 on disk. */
  async function fillAndDamage(): Promise<void> {
    store.startCopyOnRead();
    const read = store.read(0, BS);
    await tick();
    fetcher.requests[0]!.sink.onData(0, src.subarray(0, 4 * BS));
    fetcher.requests[0]!.sink.onDone();
    await read;
    store.applyZeroRuns([{ offset: 4 * BS, length: SIZE - 4 * BS }]);
    await store.write(2 * BS, Buffer.alloc(BS, 9));
    await store.flush();
    const fd = openSync(join(dir, 'img'), 'r+');
    writeSync(fd, Buffer.from('damage'), 0, 6, BS + 10);
    closeSync(fd);
  }
  const crcOf = (b: Buffer) => crc32(b) >>> 0;
  const asMap = (d: { blocks: Uint32Array; crcs: Uint32Array }) => new Map([...d.blocks].map((b, i) => [b, d.crcs[i]!]));

  it('digest mode: the crc of each block of S as it was written, without reading the image; guest-written blocks left out', async () => {
    await fillAndDamage();
    const digests = asMap(await store.pristineDigests());
    expect([...digests.keys()].sort((a, b) => a - b)).toEqual([0, 1, 3, ...Array.from({ length: 12 }, (_, i) => 4 + i)]);
    for (const b of [0, 1, 3]) expect(digests.get(b)).toBe(crcOf(src.subarray(b * BS, (b + 1) * BS)));
    expect(digests.get(9)).toBe(crcOf(Buffer.alloc(BS)));
  });

  it('readback mode: every such block is read back from the image, so damage after the write shows', async () => {
    await store.close();
    rmSync(join(dir, 'bitmap'));
    rmSync(join(dir, 'img'));
    store = makeStore('readback');
    await fillAndDamage();
    const digests = asMap(await store.pristineDigests());
    expect(digests.has(2)).toBe(false);
    expect(digests.get(0)).toBe(crcOf(src.subarray(0, BS)));
    const damaged = Buffer.from(src.subarray(BS, 2 * BS));
    damaged.write('damage', 10);
    expect(digests.get(1)).toBe(crcOf(damaged));
    expect(digests.get(1)).not.toBe(crcOf(src.subarray(BS, 2 * BS)));
  });
});

// ---- geometry, options and the less travelled paths ----

interface StoreSpec {
  size?: number;
  bs?: number;
  io?: ImageWriteIo;
  finalCheck?: FinalCheckMode;
  faultTiming?: LocalFaultTiming;
  log?: Logger;
}
let storeSeq = 0;
/** Replace the test's store with one of another geometry (own image and bitmap files in the same dir). */
async function replaceStore(spec: StoreSpec): Promise<{ img: string; bitmapPath: string; bitmap: PresentBitmap }> {
  await store.close();
  const bs = spec.bs ?? BS;
  const size = spec.size ?? SIZE;
  const img = join(dir, `img${++storeSeq}`);
  const bitmapPath = `${img}.bitmap`;
  const bitmap = PresentBitmap.create(bitmapPath, bs, Math.ceil(size / bs));
  const { io, finalCheck, faultTiming, log = silentLogger() } = spec;
  store = BlockStore.create(img, { size, bitmap, fetcher: fetcher as unknown as Fetcher, log, io, finalCheck, faultTiming });
  return { img, bitmapPath, bitmap };
}
const bitmapIn = (path: string, bs = BS, blocks = BLOCKS) => PresentBitmap.load(path, bs, blocks);
/** Bits on disk in the default bitmap file, closed again. */
function durableOnDisk(blocks: number[], path = join(dir, 'bitmap'), bs = BS, count = BLOCKS): boolean[] {
  const bm = bitmapIn(path, bs, count);
  try {
    return blocks.map((b) => bm.has(b));
  } finally {
    bm.close();
  }
}
/** The ImageWriteIo that counts. */
class CountingIo extends FaultFileIo {
  syncs = 0;
  override async sync(fd: number): Promise<void> {
    this.syncs++;
    await super.sync(fd);
  }
}

describe('creating and reopening the image', () => {
  const opts = () => ({ size: SIZE, bitmap: PresentBitmap.create(join(dir, 'bm2'), BS, BLOCKS), fetcher: fetcher as unknown as Fetcher, log: silentLogger() });

  it('creates a private sparse file of the image size, and says it made it', async () => {
    const st = statSync(join(dir, 'img'));
    expect(st.size).toBe(SIZE);
    expect(st.mode & 0o777).toBe(0o600);
    expect(store.file).toMatchObject({ created: true, priorSize: 0 });
    expect(store.file.identity.ino).toBe(String(statSync(join(dir, 'img'), { bigint: true }).ino));
    expect([store.size, store.blockSize, store.blockCount, store.mode]).toEqual([SIZE, BS, BLOCKS, 'pass-through']);
    expect([store.readOnly, store.multiConnSafe]).toEqual([false, true]);
  });

  it('leaves a file found at the path alone unless told: never by default, an empty one with "empty", any with "overwrite"', async () => {
    const path = join(dir, 'found');
    writeFileSync(path, 'the operator\'s bytes');
    chmodSync(path, 0o644);
    const e = expectThrows(() => BlockStore.create(path, opts()), UsageError, 'PC_ERR_IMAGE_EXISTS');
    expect(e.message).toContain('(20 bytes)');
    expectThrows(() => BlockStore.create(path, { ...opts(), existing: 'empty' }), UsageError, 'PC_ERR_IMAGE_EXISTS');
    expect(readFileSync(path, 'utf8')).toBe("the operator's bytes");
    const over = BlockStore.create(path, { ...opts(), existing: 'overwrite' });
    try {
      expect(over.file).toMatchObject({ created: false, priorSize: 20 });
      expect(statSync(path).size).toBe(SIZE);
      expect(statSync(path).mode & 0o777).toBe(0o644);
      // Not our hole-filled image: a zero reply must write real zeroes over the operator's bytes.
      over.startCopyOnRead();
      over.applyZeroRuns([{ offset: 0, length: BS }]);
      expect(readFileSync(path).subarray(0, 20)).toEqual(Buffer.alloc(20));
    } finally {
      await over.close();
    }
    const empty = join(dir, 'empty');
    writeFileSync(empty, '');
    const e2 = BlockStore.create(empty, { ...opts(), existing: 'empty' });
    expect(e2.file).toMatchObject({ created: false, priorSize: 0 });
    expect(statSync(empty).size).toBe(SIZE);
    await e2.close();
  });

  it('an empty file found at the path is left alone too unless told ("never" is the default)', () => {
    const empty = join(dir, 'found-empty');
    writeFileSync(empty, '');
    const e = expectThrows(() => BlockStore.create(empty, opts()), UsageError, 'PC_ERR_IMAGE_EXISTS');
    expect(e.message).toContain(`${empty} appeared while the destination was waiting (0 bytes); it was left alone`);
    expect(statSync(empty).size).toBe(0);
  });

  it('a path the system will not let it create fails with the system\'s reason, not as a missing file', () => {
    // As root a mode-0500 directory is no obstacle; sysfs refuses new files even to root.
    const ro = join(dir, 'ro');
    mkdirSync(ro, 0o500);
    const path = process.getuid?.() === 0 ? '/sys/postcopy-test-image' : join(ro, 'img');
    let err: NodeJS.ErrnoException | undefined;
    try {
      BlockStore.create(path, opts());
    } catch (e) {
      err = e as NodeJS.ErrnoException;
    }
    expect(err?.code).toMatch(/^(EACCES|EROFS|EPERM)$/);
  });

  it('an existing file of the right size keeps its bytes until written; S\'s own image is refused even with overwrite', async () => {
    const path = join(dir, 'same-size');
    writeFileSync(path, Buffer.alloc(SIZE, 0x5a));
    const st = BlockStore.create(path, { ...opts(), existing: 'overwrite' });
    expect(st.file.priorSize).toBe(SIZE);
    await st.close();
    expect(readFileSync(path)).toEqual(Buffer.alloc(SIZE, 0x5a));
    const sourceId = store.file.identity;
    const e = expectThrows(() => BlockStore.create(join(dir, 'img'), { ...opts(), existing: 'overwrite', notSameAs: sourceId }), UsageError, 'PC_ERR_SAME_IMAGE');
    expect(e.message).toContain(`inode ${sourceId.ino}`);
    // A file this call creates is never S's, whatever identity it is compared with.
    const fresh = BlockStore.create(join(dir, 'new'), { ...opts(), notSameAs: sourceId });
    expect(fresh.file.created).toBe(true);
    await fresh.close();
  });

  it('reopen refuses an image that was replaced or resized, and trusts no byte outside the bitmap', async () => {
    const file = store.file;
    store.startCopyOnRead();
    const r = store.read(0, BS);
    await tick();
    fetcher.answer(0, src);
    await r;
    await store.close();
    const img = join(dir, 'img');
    // Garbage where block 5 would be: a torn fetch before a crash.
    const fd = openSync(img, 'r+');
    writeSync(fd, Buffer.alloc(BS, 0xee), 0, BS, 5 * BS);
    closeSync(fd);
    const reopen = (size = SIZE) =>
      BlockStore.reopen(img, { size, bitmap: PresentBitmap.load(join(dir, 'bitmap'), BS, BLOCKS), fetcher: fetcher as unknown as Fetcher, log: silentLogger(), file });
    expectThrows(() => reopen(SIZE + BS), UsageError, 'PC_ERR_STATE_DIR');
    store = reopen();
    expect(store.file).toBe(file);
    expect(store.presentBlocks).toBe(1);
    store.startCopyOnRead();
    store.applyZeroRuns([{ offset: 5 * BS, length: BS }]);
    expect(await store.read(5 * BS, BS)).toEqual(Buffer.alloc(BS));
    await store.close();
    // Another file at the path (same size): refused.
    renameSync(img, `${img}.old`);
    writeFileSync(img, readFileSync(`${img}.old`));
    const e = expectThrows(() => reopen(), UsageError, 'PC_ERR_STATE_DIR');
    expect(e.message).toContain('changed under the destination');
  });
});

describe('reads', () => {
  it('refuses ranges outside the image, negative or not whole numbers; the exact end is fine', async () => {
    store.startCopyOnRead();
    for (const [o, l] of [
      [-1, 10],
      [0, -1],
      [0.5, 10],
      [0, 1.5],
      [SIZE, 1],
      [SIZE - BS, BS + 1],
      [2 ** 60, 1],
    ] as const) {
      await expectRejects(store.read(o, l), BackendError, 'PC_ERR_BEYOND_IMAGE');
    }
    for (const o of [-1, 0.5, SIZE - BS + 1, 2 ** 60]) await expectRejects(store.write(o, Buffer.alloc(BS)), BackendError, 'PC_ERR_BEYOND_IMAGE');
    await expectRejects(store.blockStatus(SIZE, 1), BackendError, 'PC_ERR_BEYOND_IMAGE');
    await expectRejects(store.cache(-BS, BS), BackendError, 'PC_ERR_BEYOND_IMAGE');
    await expectRejects(store.writeZeroes(SIZE - 1, 2), BackendError, 'PC_ERR_BEYOND_IMAGE');
    expect(fetcher.requests).toHaveLength(0);
    const r = store.read(SIZE - BS, BS);
    await tick();
    fetcher.answer(0, src);
    expect(await r).toEqual(src.subarray(SIZE - BS));
    expect(await store.read(SIZE, 0)).toEqual(Buffer.alloc(0));
  });

  it('an empty read or write asks nothing of S, even before Finish; reads are counted', async () => {
    expect(await store.read(BS, 0)).toEqual(Buffer.alloc(0));
    await store.write(BS, Buffer.alloc(0)); // does not wait for Finish
    expect(fetcher.requests).toHaveLength(0);
    expect(store.stats.guestBytesRead).toBe(0);
    const r = store.read(10, 100);
    await tick();
    fetcher.answer(0, src);
    await r;
    expect(store.stats.guestBytesRead).toBe(100);
  });

  it('pass-through assembles S\'s reply parts in place, and a failed fetch fails the read', async () => {
    const r = store.read(BS + 100, 3 * BS);
    await tick();
    const req = fetcher.requests[0]!;
    expect(req).toMatchObject({ offset: BS + 100, length: 3 * BS, cls: CLASS_URGENT });
    req.sink.onData(BS + 100, src.subarray(BS + 100, 2 * BS));
    req.sink.onZero(2 * BS, BS);
    req.sink.onData(3 * BS, src.subarray(3 * BS, 4 * BS + 100));
    req.sink.onDone();
    const expected = Buffer.from(src.subarray(BS + 100, 4 * BS + 100));
    expected.fill(0, BS - 100, 2 * BS - 100);
    expect(await r).toEqual(expected);
    const bad = store.read(0, BS);
    await tick();
    fetcher.requests[1]!.sink.onError(new BackendError('PC_ERR_BACKEND', 'S failed'));
    await expectRejects(bad, BackendError, 'PC_ERR_BACKEND');
  });

  it('a read spanning present and missing blocks fetches each missing block, urgently, and only those', async () => {
    store.startCopyOnRead();
    await store.write(BS, Buffer.alloc(BS, 1));
    const r = store.read(BS / 2, 3 * BS);
    await tick();
    expect(fetcher.requests.map((q) => [q.offset, q.length, q.cls])).toEqual([
      [0, BS, CLASS_URGENT],
      [2 * BS, BS, CLASS_URGENT],
      [3 * BS, BS, CLASS_URGENT],
    ]);
    fetcher.answer(0, src);
    fetcher.answer(1, src);
    fetcher.answer(2, src);
    const expected = Buffer.from(src.subarray(BS / 2, BS / 2 + 3 * BS));
    expected.fill(1, BS / 2, BS / 2 + BS);
    expect(await r).toEqual(expected);
    expect(store.stats.demandMisses).toBe(3);
    expect(store.stats.bytesFetchedDemand).toBe(3 * BS);
    expect(store.stats.bytesFetchedBulk).toBe(0);
    expect(store.demandLatency.count).toBe(3);
  });

  it('a failed fetch fails its waiting readers; the next read asks again', async () => {
    store.startCopyOnRead();
    const r1 = store.read(2 * BS, 10);
    const r2 = store.read(2 * BS + 100, 10);
    await tick();
    expect(fetcher.requests).toHaveLength(1);
    fetcher.requests[0]!.sink.onError(new BackendError('PC_ERR_BACKEND', 'gone'));
    await expectRejects(r1, BackendError, 'PC_ERR_BACKEND');
    await expectRejects(r2, BackendError, 'PC_ERR_BACKEND');
    expect(store.isInflight(2)).toBe(false);
    const r3 = store.read(2 * BS, 10);
    await tick();
    expect(fetcher.requests).toHaveLength(2);
    fetcher.answer(1, src);
    expect(await r3).toEqual(src.subarray(2 * BS, 2 * BS + 10));
    expect(store.demandLatency.count).toBe(1);
  });

  it('a demand miss on a block the stream is fetching asks again urgently (once) and tells the streamer', async () => {
    store.startCopyOnRead();
    const misses: number[] = [];
    store.onDemandMiss = (b) => misses.push(b);
    store.fetchBulk(4, 4);
    expect(fetcher.requests[0]).toMatchObject({ offset: 4 * BS, length: 4 * BS, cls: CLASS_BULK });
    expect([store.isInflight(3), store.isInflight(4), store.isInflight(7), store.isInflight(8)]).toEqual([false, true, true, false]);
    const r = store.read(5 * BS, 10);
    const r2 = store.read(5 * BS + 20, 10);
    await tick();
    expect(fetcher.requests.slice(1).map((q) => [q.offset, q.length, q.cls])).toEqual([[5 * BS, BS, CLASS_URGENT]]);
    expect(misses).toEqual([5]);
    expect(store.stats.demandMisses).toBe(1);
    // The urgent copy fails while the bulk one is still coming: the readers keep waiting for it.
    fetcher.requests[1]!.sink.onError(new BackendError('PC_ERR_BACKEND', 'urgent failed'));
    let settledEarly = false;
    void r.then(() => (settledEarly = true), () => (settledEarly = true));
    await tick();
    expect(settledEarly).toBe(false);
    expect(store.isInflight(5)).toBe(true);
    fetcher.answer(0, src);
    expect(await r).toEqual(src.subarray(5 * BS, 5 * BS + 10));
    expect(await r2).toEqual(src.subarray(5 * BS + 20, 5 * BS + 30));
    expect(store.isInflight(5)).toBe(false);
    expect(store.stats.bytesFetchedBulk).toBe(4 * BS);
  });

  it('failWaiters fails every waiting reader with the given error', async () => {
    store.startCopyOnRead();
    const r = store.read(0, 10);
    await tick();
    store.failWaiters(new BackendError('PC_ERR_ROLLBACK', 'giving up'));
    await expectRejects(r, BackendError, 'PC_ERR_ROLLBACK');
  });
});

describe('writes', () => {
  it('a multi-block write covering whole blocks fetches nothing; fua makes it durable before it returns', async () => {
    store.startCopyOnRead();
    await store.write(2 * BS, Buffer.alloc(3 * BS, 4));
    expect(fetcher.requests).toHaveLength(0);
    expect([store.isPresent(1), store.isPresent(2), store.isPresent(4), store.isPresent(5)]).toEqual([false, true, true, false]);
    expect(store.stats.guestBytesWritten).toBe(3 * BS);
    expect(durableOnDisk([2, 3, 4])).toEqual([false, false, false]);
    await store.write(8 * BS, Buffer.alloc(BS, 5), { fua: true });
    expect(durableOnDisk([2, 8])).toEqual([true, true]);
    expect(store.durableBlocks).toBe(4);
  });

  it('a partial write into a present block fetches nothing; one ending mid-block brings in only the last block', async () => {
    store.startCopyOnRead();
    await store.write(0, Buffer.alloc(BS, 1));
    await store.write(100, Buffer.alloc(100, 2));
    expect(fetcher.requests).toHaveLength(0);
    const w = store.write(0, Buffer.alloc(BS + 10, 3));
    await tick();
    expect(fetcher.requests.map((q) => q.offset)).toEqual([BS]);
    fetcher.answer(0, src);
    await w;
    const expected = Buffer.concat([Buffer.alloc(BS + 10, 3), src.subarray(BS + 10, 2 * BS)]);
    expect(await store.read(0, 2 * BS)).toEqual(expected);
  });

  it('the image\'s short last block counts as whole: a write to its end needs no fetch', async () => {
    const size = SIZE - 1000;
    await replaceStore({ size });
    store.startCopyOnRead();
    await store.write(15 * BS, Buffer.alloc(size - 15 * BS, 6));
    expect(fetcher.requests).toHaveLength(0);
    expect(store.isPresent(15)).toBe(true);
    const w = store.write(14 * BS, Buffer.alloc(BS - 1, 7));
    await tick();
    expect(fetcher.requests.map((q) => [q.offset, q.length])).toEqual([[14 * BS, BS]]);
    fetcher.requests[0]!.sink.onData(14 * BS, src.subarray(14 * BS, 15 * BS));
    fetcher.requests[0]!.sink.onDone();
    await w;
    expect(store.bytesOnlyOnSource).toBe(14 * BS);
  });

  it('a write over a block known to be zero makes it data again (block status says so)', async () => {
    store.startCopyOnRead();
    store.applyZeroRuns([{ offset: 0, length: 4 * BS }]);
    expect(await store.blockStatus(0, 4 * BS)).toEqual([{ offset: 0, length: 4 * BS, zero: true }]);
    await store.write(BS + 1, Buffer.alloc(2, 9));
    expect(await store.blockStatus(0, 4 * BS)).toEqual([
      { offset: 0, length: BS, zero: true },
      { offset: BS, length: BS, zero: false },
      { offset: 2 * BS, length: 2 * BS, zero: true },
    ]);
  });
});

describe('write zeroes, trim, block status, cache', () => {
  it('writeZeroes zeroes the range; only blocks it covers whole become known zero; fua makes it durable', async () => {
    store.startCopyOnRead();
    store.fetchBulk(0, BLOCKS);
    fetcher.answer(0, src);
    await store.writeZeroes(BS + 10, 3 * BS, { fua: true });
    const expected = Buffer.from(src.subarray(0, 5 * BS));
    expected.fill(0, BS + 10, 4 * BS + 10);
    expect(await store.read(0, 5 * BS)).toEqual(expected);
    expect(await store.blockStatus(0, 5 * BS)).toEqual([
      { offset: 0, length: 2 * BS, zero: false },
      { offset: 2 * BS, length: 2 * BS, zero: true },
      { offset: 4 * BS, length: BS, zero: false },
    ]);
    expect(durableOnDisk([0, 15])).toEqual([true, true]);
    await store.trim(5 * BS, 2 * BS);
    expect(await store.blockStatus(5 * BS, 3 * BS)).toEqual([
      { offset: 5 * BS, length: 2 * BS, zero: true },
      { offset: 7 * BS, length: BS, zero: false },
    ]);
    expect(await store.read(5 * BS, 2 * BS)).toEqual(Buffer.alloc(2 * BS));
  });

  it('writeZeroes without fua leaves durability to the next commit: present at once, durable after a flush', async () => {
    store.startCopyOnRead();
    await store.writeZeroes(0, 2 * BS);
    expect([store.isPresent(0), store.isPresent(1)]).toEqual([true, true]);
    expect(store.durableBlocks).toBe(0);
    await store.flush();
    expect(store.durableBlocks).toBe(2);
  });

  it('writeZeroes larger than one 4 MiB chunk zeroes all of it', async () => {
    const bs = 64 * 1024;
    await replaceStore({ size: 80 * bs, bs });
    store.startCopyOnRead();
    await store.write(0, Buffer.alloc(80 * bs, 0x11));
    await store.writeZeroes(bs, 78 * bs);
    const all = await store.read(0, 80 * bs);
    expect(all.subarray(0, bs).every((x) => x === 0x11)).toBe(true);
    expect(all.subarray(bs, 79 * bs).every((x) => x === 0)).toBe(true);
    expect(all.subarray(79 * bs).every((x) => x === 0x11)).toBe(true);
    expect(store.stats.guestBytesWritten).toBe(158 * bs);
  });

  it('block status is clipped to the image and starts mid-block where asked', async () => {
    const size = SIZE - 1000;
    await replaceStore({ size });
    store.startCopyOnRead();
    store.applyZeroRuns([{ offset: 0, length: size }]);
    expect(await store.blockStatus(100, size - 100)).toEqual([{ offset: 100, length: size - 100, zero: true }]);
    expect(await store.blockStatus(size - 10, 10)).toEqual([{ offset: size - 10, length: 10, zero: true }]);
    expect(await store.blockStatus(0, 0)).toEqual([]);
  });

  it('cache fetches the missing blocks of a range urgently, once, and nothing before Finish', async () => {
    await store.cache(0, 4 * BS);
    expect(fetcher.requests).toHaveLength(0);
    store.startCopyOnRead();
    await store.write(BS, Buffer.alloc(BS, 1));
    await store.cache(10, 0);
    await store.cache(10, 3 * BS);
    await store.cache(10, 3 * BS);
    expect(fetcher.requests.map((q) => [q.offset, q.cls])).toEqual([
      [0, CLASS_URGENT],
      [2 * BS, CLASS_URGENT],
      [3 * BS, CLASS_URGENT],
    ]);
    // A failed prefetch bothers nobody.
    fetcher.requests[0]!.sink.onError(new BackendError('PC_ERR_BACKEND', 'x'));
    fetcher.answer(1, src);
    expect(store.isPresent(2)).toBe(true);
  });
});

describe('zero runs and zero replies', () => {
  it('a bad run refuses the whole frame; runs make only wholly covered, missing, not in-flight blocks present', async () => {
    store.startCopyOnRead();
    const e = expectThrows(() => store.applyZeroRuns([{ offset: 0, length: BS }, { offset: SIZE - BS, length: BS + 1 }]), ProtocolError, 'PC_ERR_OUT_OF_RANGE');
    expect(e.message).toContain(`zero run ${SIZE - BS}+${BS + 1}`);
    expect(store.presentBlocks).toBe(0);
    await store.write(3 * BS, Buffer.alloc(BS, 1));
    store.fetchBulk(5, 1);
    store.applyZeroRuns([{ offset: BS / 2, length: 7 * BS }]);
    expect(Array.from({ length: 9 }, (_, b) => store.isPresent(b))).toEqual([false, true, true, true, true, false, true, false, false]);
    expect(store.stats.zeroBytesSkipped).toBe(4 * BS);
    expect(await store.read(3 * BS, BS)).toEqual(Buffer.alloc(BS, 1));
    store.applyZeroRuns([{ offset: SIZE - BS, length: BS }]);
    expect(store.isPresent(BLOCKS - 1)).toBe(true);
  });

  it('the short last block is covered by a run to the end of the image', async () => {
    const size = SIZE - 1000;
    await replaceStore({ size });
    store.startCopyOnRead();
    store.applyZeroRuns([{ offset: 15 * BS, length: size - 15 * BS }]);
    expect(store.isPresent(15)).toBe(true);
    expect(store.stats.zeroBytesSkipped).toBe(size - 15 * BS);
    const d = await store.pristineDigests();
    expect([...d.blocks]).toEqual([15]);
    expect(d.crcs[0]).toBe(crc32(Buffer.alloc(size - 15 * BS)) >>> 0);
  });

  it('zero replies: a block of a fresh image is a hole already (no write), a block present already is a late copy dropped', async () => {
    const io = new CountingIo();
    await replaceStore({ io });
    store.startCopyOnRead();
    await store.write(2 * BS, Buffer.alloc(BS, 1));
    const writes = io.writes;
    store.fetchBulk(0, 4);
    fetcher.answerZero(0);
    expect(io.writes).toBe(writes);
    expect([0, 1, 2, 3].map((b) => store.isPresent(b))).toEqual([true, true, true, true]);
    expect(store.stats.lateFetchesDropped).toBe(1);
    expect(store.stats.zeroBytesSkipped).toBe(3 * BS);
    expect(await store.read(2 * BS, BS)).toEqual(Buffer.alloc(BS, 1));
    expect(store.isInflight(0)).toBe(false);
    expect(() => fetcher.requests[0]!.sink.onZero(BS + 1, BS)).toThrow(/whole blocks/);
  });

  it('replies before Finish are not kept (pass-through)', async () => {
    store.fetchBulk(0, 2);
    fetcher.answer(0, src);
    store.applyZeroRuns([{ offset: 4 * BS, length: BS }]);
    store.fetchBulk(8, 1);
    fetcher.answerZero(1);
    expect(store.presentBlocks).toBe(0);
    expect(store.stats.bytesFetchedBulk).toBe(0);
    expect(store.stats.zeroBytesSkipped).toBe(0);
  });
});

describe('fetched data', () => {
  it('is written in runs around blocks the guest filled meanwhile; late copies are counted, not written', async () => {
    store.startCopyOnRead();
    store.fetchBulk(0, 6);
    await store.write(2 * BS, Buffer.alloc(BS, 1));
    await store.write(4 * BS, Buffer.alloc(BS, 2));
    fetcher.answer(0, src);
    expect(store.stats.lateFetchesDropped).toBe(2);
    const expected = Buffer.from(src.subarray(0, 6 * BS));
    expected.fill(1, 2 * BS, 3 * BS);
    expected.fill(2, 4 * BS, 5 * BS);
    expect(await store.read(0, 6 * BS)).toEqual(expected);
    expect(store.stats.bytesFetchedBulk).toBe(6 * BS);
    const d = await store.pristineDigests();
    expect([...d.blocks]).toEqual([0, 1, 3, 5]);
    expect(d.crcs[2]).toBe(crc32(src.subarray(3 * BS, 4 * BS)) >>> 0);
  });

  it('a reply part must start on a block and end on one (or at the image end)', async () => {
    const size = SIZE - 1000;
    await replaceStore({ size });
    store.startCopyOnRead();
    store.fetchBulk(14, 2);
    const sink = fetcher.requests[0]!.sink;
    expect(() => sink.onData(14 * BS, src.subarray(14 * BS, 15 * BS - 1))).toThrow(ProtocolError);
    expect(() => sink.onData(14 * BS + 1, src.subarray(0, BS))).toThrow(/not whole blocks of 4096/);
    sink.onData(14 * BS, src.subarray(14 * BS, 15 * BS));
    sink.onData(15 * BS, src.subarray(15 * BS, size));
    sink.onDone();
    await store.writesSettled(); // bulk data is written off the event loop
    expect(store.presentBlocks).toBe(2);
    const d = await store.pristineDigests();
    expect(d.crcs[1]).toBe(crc32(src.subarray(15 * BS, size)) >>> 0);
  });
});

describe('commits and completion', () => {
  it('blocks made present together are committed together, in the background, image sync before bitmap', async () => {
    const order: string[] = [];
    const io = new (class extends CountingIo {
      override async sync(fd: number): Promise<void> {
        order.push(`image sync; bitmap on disk has ${durableOnDisk([0], bitmapPath)[0]}`);
        await super.sync(fd);
      }
    })();
    const { bitmapPath } = await replaceStore({ io });
    store.startCopyOnRead();
    store.fetchBulk(0, 4);
    fetcher.answer(0, src);
    await store.write(6 * BS, Buffer.alloc(BS, 1));
    expect(store.durableBlocks).toBe(0);
    // The bitmap counts a bit durable once it is written, before its fdatasync returns: wait for the commit's end.
    await waitUntil(() => store.stats.commits === 1, 'the background commit');
    expect(store.durableBlocks).toBe(5);
    expect(order).toEqual(['image sync; bitmap on disk has false']);
    expect(durableOnDisk([0, 3, 6, 7], bitmapPath)).toEqual([true, true, true, false]);
    await store.flush();
    // Nothing new: a flush still syncs the image (the guest's FLUSH), and writes no bits.
    expect(io.syncs).toBe(2);
    expect(store.stats.commits).toBe(2);
  });

  it('is complete only once every block is present and durable, and a re-check after invalidate waits again', async () => {
    store.startCopyOnRead();
    let complete = 0;
    void store.whenComplete.then(() => complete++);
    store.applyZeroRuns([{ offset: 0, length: SIZE - BS }]);
    await store.flush();
    await tick();
    expect(complete).toBe(0);
    const r = store.read(SIZE - BS, 1);
    await tick();
    fetcher.answer(0, src);
    await r;
    // The last block present: completion commits by itself (no flush) and then resolves.
    await store.whenComplete;
    expect(store.durableBlocks).toBe(BLOCKS);
    expect(store.bytesOnlyOnSource).toBe(0);
    await store.write(0, Buffer.alloc(BS, 3));
    // S finds blocks 1, 15 and 0 (guest-written), and two out of range, wrong: only 1 and 15 go back.
    expect(await store.invalidate([1, 15, 0, -1, BLOCKS])).toBe(2);
    expect([store.isPresent(0), store.isPresent(1), store.isPresent(15)]).toEqual([true, false, false]);
    expect(durableOnDisk([0, 1, 15])).toEqual([true, false, false]);
    expect(store.nextMissing(0)).toBe(1);
    expect(store.nextMissing(2)).toBe(15);
    let again = false;
    void store.whenComplete.then(() => (again = true));
    expect(await store.invalidate([1])).toBe(0);
    // Blocks went back: completion waits for them again (and an invalidate that took nothing back changed nothing).
    await tick();
    expect(again).toBe(false);
    // Block 1 was a hole of the fresh image once; now its bytes are untrusted: a zero reply must write zeroes.
    const fd = openSync(join(dir, 'img'), 'r+');
    writeSync(fd, Buffer.alloc(10, 0xee), 0, 10, BS);
    closeSync(fd);
    store.fetchBulk(1, 1);
    fetcher.answerZero(1);
    store.fetchBulk(15, 1);
    fetcher.answer(2, src);
    expect(await store.read(BS, BS)).toEqual(Buffer.alloc(BS));
    await waitUntil(() => again, 'completion after the re-fetch');
  });

  it('after a restart with every block durable, Finish completes at once', async () => {
    store.startCopyOnRead();
    store.applyZeroRuns([{ offset: 0, length: SIZE }]);
    const file = store.file;
    await store.close();
    expect(durableOnDisk([0, 15])).toEqual([true, true]);
    store = BlockStore.reopen(join(dir, 'img'), { size: SIZE, bitmap: PresentBitmap.load(join(dir, 'bitmap'), BS, BLOCKS), fetcher: fetcher as unknown as Fetcher, log: silentLogger(), file });
    let complete = false;
    void store.whenComplete.then(() => (complete = true));
    // Before Finish nothing completes, not even a flush with every block durable.
    await store.flush();
    await tick();
    expect(complete).toBe(false);
    store.startCopyOnRead();
    await store.whenComplete;
    expect(store.mode).toBe('copy-on-read');
  });

  it('a bitmap commit that fails keeps its blocks pending for the next commit', async () => {
    const { bitmap, bitmapPath } = await replaceStore({ faultTiming: { retryMinMs: 1, retryMaxMs: 5 } });
    store.startCopyOnRead();
    await store.write(0, Buffer.alloc(BS, 1));
    // The bitmap file's disk fails once (EIO on its write), then recovers.
    const real = bitmap.commit.bind(bitmap);
    let fail = true;
    bitmap.commit = async (blocks: readonly number[]) => {
      if (fail && blocks.length > 0) {
        fail = false;
        throw systemError('EIO', 'write');
      }
      return real(blocks);
    };
    await expect(store.flush()).rejects.toMatchObject({ code: 'EIO' });
    expect(store.writesPaused).toBe(true);
    expect(store.isPresent(0)).toBe(true);
    expect(store.durableBlocks).toBe(0);
    // The gate's probe commits the pending block; nothing else wrote it since.
    await waitUntil(() => !store.writesPaused, 'the fault to clear');
    expect(store.durableBlocks).toBe(1);
    expect(durableOnDisk([0], bitmapPath)).toEqual([true]);
  });

  it('close commits what is pending', async () => {
    store.startCopyOnRead();
    await store.write(3 * BS, Buffer.alloc(BS, 1));
    await store.close();
    expect(durableOnDisk([3])).toEqual([true]);
  });
});

describe('final-check digests over several read runs', () => {
  it('readback reads 4 MiB runs; runs with nothing to read are skipped; each block\'s crc, the short last one too', async () => {
    const bs = 1024 * 1024;
    const size = 9 * bs + 5000;
    await replaceStore({ size, bs, finalCheck: 'readback' });
    store.startCopyOnRead();
    const data = Buffer.alloc(size);
    for (let i = 0; i < size; i += 4) data.writeUInt32BE(i, i);
    // Blocks 0..3 (run 0) written by the guest, 4..9 fetched from S.
    await store.write(0, data.subarray(0, 4 * bs));
    store.fetchBulk(4, 6);
    fetcher.requests[0]!.sink.onData(4 * bs, data.subarray(4 * bs));
    fetcher.requests[0]!.sink.onDone();
    await store.writesSettled(); // bulk data is written off the event loop
    const d = await store.pristineDigests();
    expect([...d.blocks]).toEqual([4, 5, 6, 7, 8, 9]);
    expect([...d.crcs]).toEqual([4, 5, 6, 7, 8, 9].map((b) => crc32(data.subarray(b * bs, Math.min(size, (b + 1) * bs))) >>> 0));
  });

  it('digest mode reads back only the blocks whose digest it lacks', async () => {
    const bs = 1024 * 1024;
    const size = 9 * bs;
    await replaceStore({ size, bs });
    store.startCopyOnRead();
    const data = Buffer.alloc(size);
    for (let i = 0; i < size; i += 4) data.writeUInt32BE(i ^ 0x5555, i);
    store.fetchBulk(0, 9);
    fetcher.requests[0]!.sink.onData(0, data);
    fetcher.requests[0]!.sink.onDone();
    await store.writesSettled(); // bulk data is written off the event loop
    // Damage on disk does not show in digest mode: the digest was taken as the block was written.
    const fd = openSync(join(dir, `img${storeSeq}`), 'r+');
    writeSync(fd, Buffer.alloc(8, 0xff), 0, 8, 6 * bs);
    closeSync(fd);
    const d = await store.pristineDigests();
    expect([...d.crcs]).toEqual(Array.from({ length: 9 }, (_, b) => crc32(data.subarray(b * bs, (b + 1) * bs)) >>> 0));
  });
});

describe('more of the final check and closing', () => {
  it('readback mode reads zero blocks back too: damage to a block S said was zero shows', async () => {
    await replaceStore({ finalCheck: 'readback' });
    store.startCopyOnRead();
    store.applyZeroRuns([{ offset: 0, length: 2 * BS }]);
    await store.flush();
    const fd = openSync(join(dir, `img${storeSeq}`), 'r+');
    writeSync(fd, Buffer.from('stray'), 0, 5, BS + 7);
    closeSync(fd);
    const d = await store.pristineDigests();
    expect([...d.blocks]).toEqual([0, 1]);
    expect(d.crcs[0]).toBe(crc32(Buffer.alloc(BS)) >>> 0);
    const damaged = Buffer.alloc(BS);
    damaged.write('stray', 7);
    expect(d.crcs[1]).toBe(crc32(damaged) >>> 0);
  });

  it('the check yields to the event loop between the runs it reads, and handles blocks larger than one run', async () => {
    const bs = 8 * 1024 * 1024;
    await replaceStore({ size: 2 * bs, bs, finalCheck: 'readback' });
    store.startCopyOnRead();
    const data = Buffer.alloc(2 * bs, 0x3c);
    store.fetchBulk(0, 2);
    fetcher.requests[0]!.sink.onData(0, data);
    fetcher.requests[0]!.sink.onDone();
    await store.writesSettled(); // bulk data is written off the event loop
    let yielded = false;
    setImmediate(() => (yielded = true));
    const d = await store.pristineDigests();
    expect(yielded).toBe(true);
    expect([...d.crcs]).toEqual([crc32(data.subarray(0, bs)) >>> 0, crc32(data.subarray(bs)) >>> 0]);
  });

  it('demand latency is the time from the miss to the block being present', async () => {
    store.startCopyOnRead();
    const t0 = performance.now();
    const r = store.read(0, 10);
    await tick();
    fetcher.answer(0, src);
    await r;
    const elapsed = performance.now() - t0;
    const s = store.demandLatency.summary();
    expect(s.count).toBe(1);
    expect(s.maxMs).toBeGreaterThanOrEqual(0);
    expect(s.maxMs).toBeLessThanOrEqual(elapsed);
  });

  it('close commits, leaves no commit timer behind, and closes the image and the bitmap', async () => {
    const fds = () => readdirSync('/proc/self/fd').length;
    const before = fds(); // with the default store's image and bitmap open
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      await replaceStore({});
      expect(fds()).toBe(before);
      store.startCopyOnRead();
      await store.write(0, Buffer.alloc(BS, 1));
      expect(vi.getTimerCount()).toBe(1);
      await store.close();
      expect(vi.getTimerCount()).toBe(0);
      expect(fds()).toBe(before - 2);
      expect(durableOnDisk([0], `${join(dir, `img${storeSeq}`)}.bitmap`)).toEqual([true]);
    } finally {
      vi.useRealTimers();
    }
  });
});

/**
 * A store in copy-on-read whose image syncs wait for the test's word (gate.open), counting those begun; its commit
 * timer is on a fake clock that never moves (the caller restores real timers).
 */
async function gatedStore() {
  const gate = { hold: true, entered: 0, open: () => {} };
  const io = new (class extends FaultFileIo {
    override async sync(fd: number): Promise<void> {
      gate.entered++;
      if (gate.hold) await new Promise<void>((r) => (gate.open = r));
      await super.sync(fd);
    }
  })();
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
  await replaceStore({ io });
  store.startCopyOnRead();
  return gate;
}

describe('completion without the commit timer', () => {
  it('blocks that arrive during a commit are committed right after it once they complete the image', async () => {
    const gate = await gatedStore();
    try {
      store.applyZeroRuns([{ offset: 0, length: SIZE - BS }]);
      const flushed = store.flush();
      for (let i = 0; i < 1000 && gate.entered === 0; i++) await tick();
      expect(gate.entered).toBe(1);
      // The last block arrives while the image sync runs; the commit timer never fires (fake clock).
      store.applyZeroRuns([{ offset: SIZE - BS, length: BS }]);
      gate.open();
      await flushed;
      // The background commit's own sync.
      for (let i = 0; i < 1000 && gate.entered === 1; i++) await tick();
      gate.hold = false;
      gate.open();
      let complete = false;
      // The commit's bitmap fdatasync is real I/O: wait for it, not for a count of turns (the test's timeout bounds it).
      await store.whenComplete.then(() => (complete = true));
      expect(complete).toBe(true);
      expect(store.durableBlocks).toBe(BLOCKS);
    } finally {
      gate.hold = false;
      gate.open();
      vi.useRealTimers();
    }
  });
});

describe('what the operator is told', () => {
  it('a failed fetch is logged with its blocks; a commit that fails for a reason other than the disk is logged', async () => {
    const records: Array<Record<string, unknown>> = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void records.push(JSON.parse(line) as Record<string, unknown>) });
    const io = new FaultFileIo();
    await replaceStore({ io, log });
    store.startCopyOnRead();
    store.fetchBulk(3, 2);
    fetcher.requests[0]!.sink.onError(new BackendError('PC_ERR_BACKEND', 'S failed'));
    expect(records).toEqual([expect.objectContaining({ level: 50, first: 3, count: 2, msg: 'block fetch failed', err: expect.objectContaining({ code: 'PC_ERR_BACKEND' }) })]);
    // A bug in the sync path (not a system error): no local fault, but the background commit says it failed.
    const bug = new TypeError('sync bug');
    io.sync = async () => {
      throw bug;
    };
    await store.write(0, Buffer.alloc(BS, 1));
    await waitUntil(() => records.length === 2, 'the commit failure to be logged');
    expect(records[1]).toMatchObject({ level: 50, msg: 'bitmap commit failed', err: { message: 'sync bug' } });
    expect(store.writesPaused).toBe(false);
    io.sync = FaultFileIo.prototype.sync.bind(io);
  });
});

describe('edges the mutation run found untested', () => {
  it('the final-check modes the CLI accepts are digest and readback', () => {
    expect(FINAL_CHECK_MODES).toEqual(['digest', 'readback']);
  });

  it('a range outside the image is refused with the range and the image size in the message', async () => {
    store.startCopyOnRead();
    await expect(store.read(SIZE - 10, 20)).rejects.toThrow(`${SIZE - 10}+20 outside 0..${SIZE}`);
    await expect(store.write(SIZE, Buffer.alloc(1))).rejects.toThrow(`${SIZE}+1 outside 0..${SIZE}`);
  });

  it('cache of an empty range fetches nothing, even mid-block; of one whole block, that block only', async () => {
    store.startCopyOnRead();
    await store.cache(BS + 100, 0);
    expect(fetcher.requests).toHaveLength(0);
    await store.cache(BS, BS);
    expect(fetcher.requests.map((q) => [q.offset, q.length])).toEqual([[BS, BS]]);
    fetcher.answer(0, src);
    expect(store.isPresent(1)).toBe(true);
  });

  it('invalidate takes back block 0 too, and ignores numbers outside the image, even those that alias a block in 32-bit arithmetic', async () => {
    store.startCopyOnRead();
    store.fetchBulk(0, 2);
    fetcher.answer(0, src);
    await store.writesSettled(); // bulk data is written off the event loop
    expect(await store.invalidate([1 - 2 ** 32, 2 ** 32 + 1, -1, BLOCKS])).toBe(0);
    expect([store.isPresent(0), store.isPresent(1)]).toEqual([true, true]);
    expect(await store.invalidate([0])).toBe(1);
    expect([store.isPresent(0), store.isPresent(1)]).toEqual([false, true]);
    // A block listed twice is taken back once (each listing counted, as S sent it).
    expect(await store.invalidate([1, 1])).toBe(2);
    expect(store.isPresent(1)).toBe(false);
  });

  it('a fetch that ends, or fails, clears only its own blocks\' in-flight marks', async () => {
    store.startCopyOnRead();
    store.fetchBulk(0, 2);
    store.fetchBulk(2, 2);
    store.fetchBulk(4, 2);
    fetcher.answer(0, src);
    await store.writesSettled(); // bulk data is written off the event loop
    expect([1, 2].map((b) => store.isInflight(b))).toEqual([false, true]);
    fetcher.requests[1]!.sink.onError(new BackendError('PC_ERR_BACKEND', 'S failed'));
    expect([3, 4].map((b) => store.isInflight(b))).toEqual([false, true]);
  });

  it('a reply whose first block the guest filled meanwhile stores the rest of it, and nothing outside it', async () => {
    store.startCopyOnRead();
    store.fetchBulk(2, 3);
    const guest = Buffer.alloc(BS, 0xab);
    await store.write(2 * BS, guest);
    await store.write(3 * BS, guest);
    fetcher.answer(0, src);
    await store.writesSettled(); // bulk data is written off the event loop
    expect([0, 1, 2, 3, 4, 5].map((b) => store.isPresent(b))).toEqual([false, false, true, true, true, false]);
    expect(store.presentBlocks).toBe(3);
    expect(store.stats.lateFetchesDropped).toBe(2);
    expect(await store.read(2 * BS, 3 * BS)).toEqual(Buffer.concat([guest, guest, src.subarray(4 * BS, 5 * BS)]));
  });

  it('a block that arrives during a commit waits for the commit timer while the image is incomplete', async () => {
    const gate = await gatedStore();
    try {
      store.applyZeroRuns([{ offset: 0, length: BS }]);
      const flushed = store.flush();
      for (let i = 0; i < 1000 && gate.entered === 0; i++) await tick();
      expect(gate.entered).toBe(1);
      store.applyZeroRuns([{ offset: BS, length: BS }]);
      gate.open();
      await flushed;
      await tick();
      // The commit timer (fake clock) has not fired: no second commit was started by the first one's end.
      expect(gate.entered).toBe(1);
      expect(store.durableBlocks).toBe(1);
      gate.hold = false;
      await store.flush();
      expect(store.durableBlocks).toBe(2);
    } finally {
      gate.hold = false;
      gate.open();
      vi.useRealTimers();
    }
  });

  it('a background commit that fails on the disk is not logged again (the fault report says it)', async () => {
    const records: Array<Record<string, unknown>> = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void records.push(JSON.parse(line) as Record<string, unknown>) });
    const io = new FaultFileIo();
    await replaceStore({ io, log, faultTiming: { retryMinMs: 60_000, retryMaxMs: 60_000, reportEveryMs: 60_000 } });
    store.startCopyOnRead();
    io.failSyncs = 'EIO';
    await store.write(0, Buffer.alloc(BS, 1));
    await waitUntil(() => store.writesPaused, 'the background commit to fail on the disk');
    await tick();
    expect(records.filter((r) => r.msg === 'bitmap commit failed')).toEqual([]);
    io.failSyncs = null;
  });
});
