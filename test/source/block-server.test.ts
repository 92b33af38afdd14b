// S's block server over a real link pair, with an image whose bulk reads (the thread-pool path) are held:
// an urgent request is answered at once, from a synchronous read, while bulk reads are still outstanding.
import { describe, expect, it } from 'vitest';
import type { SourceImage } from '../../src/common/block-device.js';
import { BufferPool } from '../../src/common/buffer-pool.js';
import { deferred, type Deferred } from '../../src/common/deferred.js';
import { silentLogger } from '../../src/common/logger.js';
import { BULK_CHUNK_BYTES, CLASS_BULK, CLASS_URGENT } from '../../src/protocol/constants.js';
import type { Message } from '../../src/protocol/messages.js';
import { BlockServer } from '../../src/source/block-server.js';
import { ReadAheadCache } from '../../src/source/read-cache.js';
import { SentDigests } from '../../src/source/sent-digests.js';
import { UrgentStages } from '../../src/source/urgent-stages.js';
import { autoCleanup, collect, linkPair, waitFor } from '../helpers/link-harness.js';
import { TokenBucket } from '../../src/common/token-bucket.js';
import { ManualClock } from '../helpers/manual-clock.js';
import { turns } from '../helpers/wait.js';

autoCleanup();

const BLOCK = 64 * 1024;
const SIZE = 64 * 1024 * 1024;

/** Byte i of the image is (i >> 16) & 0xff, never all zero within a block past block 0. */
function fill(buf: Buffer, offset: number, length: number): Buffer {
  for (let i = 0; i < length; i += BLOCK) buf.fill(((offset + i) >> 16) & 0xff || 1, i, Math.min(length, i + BLOCK));
  return buf.subarray(0, length);
}

/** Bulk reads (readInto) wait until released; urgent reads (readIntoNow) answer at once. */
class HeldImage implements SourceImage {
  readonly size = SIZE;
  readonly held: Array<{ done: Deferred<void>; offset: number }> = [];
  nowReads = 0;
  async read(offset: number, length: number): Promise<Buffer> {
    return fill(Buffer.alloc(length), offset, length);
  }
  async readInto(buf: Buffer, offset: number, length: number): Promise<Buffer> {
    const done = deferred<void>();
    this.held.push({ done, offset });
    await done.promise;
    return fill(buf, offset, length);
  }
  readIntoNow(buf: Buffer, offset: number, length: number): Buffer {
    this.nowReads++;
    return fill(buf, offset, length);
  }
  async extents() {
    return [{ offset: 0, length: SIZE, zero: false }];
  }
  async close() {}
}

/** Reads answer at once; the second half of the image reads as zeroes. */
class FreeImage extends HeldImage {
  override async readInto(buf: Buffer, offset: number, length: number): Promise<Buffer> {
    return offset >= SIZE / 2 ? buf.fill(0, 0, length).subarray(0, length) : fill(buf, offset, length);
  }
}

function setup(image = new HeldImage(), bulkRate?: TokenBucket) {
  const { a, b } = linkPair();
  const stages = new UrgentStages();
  const stats = { urgentRequests: 0, bulkRequests: 0, bytesSent: 0, zeroBytesSkipped: 0 };
  const server = new BlockServer(a, image, new ReadAheadCache({ maxBytes: 16 << 20, grain: BLOCK }), silentLogger(), stats, new SentDigests(SIZE, BLOCK), () => true, new BufferPool(BULK_CHUNK_BYTES, 8), stages);
  if (bulkRate) server.bulkRate = bulkRate;
  a.setHandler((m) => {
    if (m.type === 'BLOCK_REQ') server.handle(m);
  });
  return { d: b, image, stages, atD: collect(b) };
}

const dataFor = (got: Message[], id: number) => got.filter((m): m is Extract<Message, { type: 'BLOCK_DATA' }> => m.type === 'BLOCK_DATA' && m.id === id);

describe('BlockServer: urgent before bulk', () => {
  it('answers an urgent request from a synchronous read while bulk reads are still held in the thread pool', async () => {
    const { d, image, stages, atD } = setup();
    d.send({ type: 'BLOCK_REQ', id: 1, offset: 8 * BULK_CHUNK_BYTES, length: 4 * BULK_CHUNK_BYTES, cls: CLASS_BULK });
    await waitFor(() => image.held.length > 0, 'bulk read started');
    d.send({ type: 'BLOCK_REQ', id: 2, offset: 40 * BLOCK, length: BLOCK, cls: CLASS_URGENT });
    await waitFor(() => dataFor(atD, 2).length === 1, 'urgent reply');
    const urgent = dataFor(atD, 2)[0]!;
    expect(urgent.urgent).toBe(true);
    expect(urgent.done).toBe(true);
    expect(urgent.data.equals(fill(Buffer.alloc(BLOCK), 40 * BLOCK, BLOCK))).toBe(true);
    expect(image.nowReads).toBe(1);
    // Nothing of the bulk request has gone: its read is still held.
    expect(dataFor(atD, 1)).toHaveLength(0);
    expect(stages.summary().total.count).toBe(1);
    // Released, the bulk reads complete in order.
    while (dataFor(atD, 1).length < 4) {
      for (const h of image.held.splice(0)) h.done.resolve();
      await waitFor(() => image.held.length > 0 || dataFor(atD, 1).length === 4, 'next bulk read');
    }
    const parts = dataFor(atD, 1);
    expect(parts.map((p) => p.offset)).toEqual([8, 9, 10, 11].map((c) => c * BULK_CHUNK_BYTES));
    expect(parts.at(-1)!.done).toBe(true);
  });

  it('costs S one read per demand miss: nothing is read ahead (no buffer churn on the urgent path)', async () => {
    const { d, image, atD } = setup();
    for (let i = 1; i <= 3; i++) {
      d.send({ type: 'BLOCK_REQ', id: i, offset: (100 * i) * BLOCK, length: BLOCK, cls: CLASS_URGENT });
      await waitFor(() => dataFor(atD, i).length === 1, `urgent reply ${i}`);
    }
    expect(image.nowReads).toBe(3);
    expect(image.held).toHaveLength(0);
  });
});

describe('BlockServer: the bulk rate cap', () => {
  it('holds bulk data chunks to the cap; zero runs and urgent replies never wait on it', async () => {
    const clock = new ManualClock();
    // One chunk a second: the full bucket lets the first chunk go, the next waits a second.
    const cap = new TokenBucket(BULK_CHUNK_BYTES, clock);
    const { d, atD } = setup(new FreeImage(), cap);
    const zeroFor = (id: number) => atD.filter((m) => m.type === 'BLOCK_ZERO' && m.id === id);
    d.send({ type: 'BLOCK_REQ', id: 1, offset: 0, length: 4 * BULK_CHUNK_BYTES, cls: CLASS_BULK });
    await waitFor(() => dataFor(atD, 1).length === 1, 'the first chunk (the burst)');
    // A zero run costs no wire bytes: answered while the data request waits for its tokens.
    d.send({ type: 'BLOCK_REQ', id: 2, offset: SIZE / 2, length: 8 * BULK_CHUNK_BYTES, cls: CLASS_BULK });
    d.send({ type: 'BLOCK_REQ', id: 3, offset: 200 * BLOCK, length: BLOCK, cls: CLASS_URGENT });
    await waitFor(() => zeroFor(2).length === 1 && dataFor(atD, 3).length === 1, 'the zero run and the urgent reply');
    await turns(20);
    expect(dataFor(atD, 1)).toHaveLength(1);
    expect(cap.waiting).toBe(1);
    await clock.advance(999);
    await turns(20);
    expect(dataFor(atD, 1)).toHaveLength(1);
    await clock.advance(1);
    await waitFor(() => dataFor(atD, 1).length === 2, 'the second chunk, a second later');
    // Lifted live: the rest goes at once.
    cap.setRate(null);
    await waitFor(() => dataFor(atD, 1).length === 4, 'the rest once the cap is lifted');
    expect(dataFor(atD, 1).map((p) => p.offset)).toEqual([0, 1, 2, 3].map((c) => c * BULK_CHUNK_BYTES));
  });
});
