// D's block store on its own: copy-on-read, the dm-clone write rules, durability ordering, pass-through mode.
// The fetcher is a scripted stand-in so the test decides when (and what) S's replies deliver.
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockStore, type FinalCheckMode } from '../../src/dest/block-store.js';
import type { Fetcher, FetchSink } from '../../src/dest/fetcher.js';
import { PresentBitmap } from '../../src/dest/present-bitmap.js';
import { silentLogger } from '../../src/common/logger.js';
import { CLASS_URGENT } from '../../src/protocol/constants.js';

const BS = 4096;
const BLOCKS = 16;
const SIZE = BS * BLOCKS;

interface Req {
  offset: number;
  length: number;
  cls: number;
  sink: FetchSink;
}

/** Stand-in for the fetcher: records requests; the test answers them with S's "image". */
class ScriptedFetcher {
  requests: Req[] = [];
  request(offset: number, length: number, cls: number, sink: FetchSink): void {
    this.requests.push({ offset, length, cls, sink });
  }
  /** Answer request i with the source image's bytes. */
  answer(i: number, source: Buffer): void {
    const r = this.requests[i]!;
    r.sink.onData(r.offset, source.subarray(r.offset, r.offset + r.length));
    r.sink.onDone();
  }
}

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
    await expect(store.read(SIZE - 10, 20)).rejects.toMatchObject({ code: 'PC_ERR_OUT_OF_RANGE' });
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
