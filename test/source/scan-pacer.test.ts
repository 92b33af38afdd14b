// S reads each data byte once: the zero scan keeps just ahead of D's stream and its buffers reach the block server
// through the read-ahead cache, whole (no copy), and go back to the pool once sent.
import { describe, expect, it } from 'vitest';
import { BufferPool } from '../../src/common/buffer-pool.js';
import { SCAN_CHUNK, scanZeroRuns } from '../../src/source/extent-scan.js';
import { ReadAheadCache } from '../../src/source/read-cache.js';
import { SCAN_LEAD_BYTES, ScanPacer } from '../../src/source/scan-pacer.js';
import type { Extent } from '../../src/common/block-device.js';
import { waitUntil } from '../helpers/wait.js';

const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An image of `size` bytes: data in the first half of every 1 MiB, zeroes elsewhere. */
function image(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let at = 0; at < size; at += MiB) b.fill(0xab, at, at + MiB / 2);
  return b;
}

describe('zero scan paced by the stream', () => {
  it('holds at most a lead of data not yet asked for, runs on as the stream takes it, and caches whole chunks', async () => {
    const size = 64 * MiB;
    const img = image(size);
    const pool = new BufferPool(SCAN_CHUNK, 256);
    const cache = new ReadAheadCache({ maxBytes: 2 * SCAN_LEAD_BYTES, grain: 64 * 1024 });
    const pacer = new ScanPacer(pool, cache, size, { streamIdleMs: 60_000 });
    let readUpTo = 0;
    let finished = false;
    const runs: Extent[] = [];
    const scan = scanZeroRuns(
      (buf, offset, length) => {
        img.copy(buf, 0, offset, offset + length);
        readUpTo = offset + length;
      },
      size,
      (r) => runs.push(...r),
      pacer,
    ).then(() => (finished = true));
    // Half of every MiB is data: a lead of data is all the data of the first 2 × lead bytes.
    const held = 2 * SCAN_LEAD_BYTES - MiB / 2;
    await waitUntil(() => readUpTo >= held, 'the scan to reach its lead', 2000, 5);
    await sleep(20);
    expect(readUpTo).toBe(held);
    expect(cache.bytes).toBe(SCAN_LEAD_BYTES);
    // Cached: whole pool buffers, handed over as one view without a copy; the server gives them back.
    const chunk = cache.take(0, SCAN_CHUNK)!;
    expect(chunk.equals(img.subarray(0, SCAN_CHUNK))).toBe(true);
    expect(pool.give(chunk)).toBe(true);
    // A zero chunk is not cached but remembered: the server answers it without a read.
    expect(cache.take(MiB - SCAN_CHUNK, SCAN_CHUNK)).toBeUndefined();
    expect(pacer.isKnownZero(MiB - SCAN_CHUNK, SCAN_CHUNK)).toBe(true);
    expect(pacer.isKnownZero(0, SCAN_CHUNK)).toBe(false);
    expect(pacer.isKnownZero(MiB - SCAN_CHUNK, SCAN_CHUNK + 4096)).toBe(false);
    // The stream takes what it asks for; the scan goes on.
    for (let at = 0; !finished; at += SCAN_CHUNK) {
      const c = cache.take(at, SCAN_CHUNK);
      if (c) pool.give(c);
      pacer.noteStream(at + SCAN_CHUNK);
      if (at % (4 * MiB) === 0 || at > size) await sleep(1);
    }
    await scan;
    expect(runs).toHaveLength(64);
    expect(runs.every((r, i) => r.offset === i * MiB + MiB / 2 && r.length === MiB / 2)).toBe(true);
  });

  it('does not read again what the block server read first, and reports it all the same', async () => {
    const size = 4 * MiB;
    const img = image(size);
    const pacer = new ScanPacer(new BufferPool(SCAN_CHUNK, 8), new ReadAheadCache({ maxBytes: 2 * SCAN_LEAD_BYTES, grain: 65536 }), size);
    pacer.noteServed(0, false);
    pacer.noteServed(MiB / 2, true);
    expect(pacer.known(0)).toBe('data');
    expect(pacer.known(MiB / 2)).toBe('zero');
    expect(pacer.known(MiB)).toBeUndefined();
    const readAt: number[] = [];
    const runs: Extent[] = [];
    await scanZeroRuns(
      (buf, offset, length) => {
        readAt.push(offset);
        img.copy(buf, 0, offset, offset + length);
      },
      size,
      (r) => runs.push(...r),
      pacer,
    );
    expect(readAt).not.toContain(0);
    expect(readAt).not.toContain(MiB / 2);
    expect(readAt).toHaveLength(size / SCAN_CHUNK - 2);
    expect(runs.map((r) => [r.offset, r.length])).toEqual([0, 1, 2, 3].map((i) => [i * MiB + MiB / 2, MiB / 2]));
  });

  it('a stream that does not move holds the scan up only briefly', async () => {
    // Data everywhere: the cache fills to the lead, and the scan goes on once the stream has been idle a while.
    const pacer = new ScanPacer(new BufferPool(SCAN_CHUNK, 4), new ReadAheadCache({ maxBytes: 2 * SCAN_LEAD_BYTES, grain: 65536 }), 2 * SCAN_LEAD_BYTES, { streamIdleMs: 5 });
    const runs: Extent[] = [];
    await scanZeroRuns((buf, _o, n) => buf.fill(1, 0, n), 2 * SCAN_LEAD_BYTES, (r) => runs.push(...r), pacer);
    expect(runs).toEqual([]);
  });

  it('data already behind the stream is not cached; its buffer goes back to the pool', async () => {
    const pool = new BufferPool(SCAN_CHUNK, 4);
    const cache = new ReadAheadCache({ maxBytes: 2 * SCAN_LEAD_BYTES, grain: 64 * 1024 });
    const pacer = new ScanPacer(pool, cache, 4 * MiB);
    pacer.noteStream(MiB);
    const buf = pacer.buffer();
    pacer.read(0, buf, true);
    expect(cache.bytes).toBe(0);
    expect(pool.idle).toBe(1);
  });
});

describe('read-ahead cache', () => {
  it('hands consecutive grains of one buffer back as one view (no copy), others concatenated', () => {
    const cache = new ReadAheadCache({ maxBytes: MiB, grain: 4096 });
    const whole = Buffer.alloc(16384, 7);
    cache.put(0, whole);
    const got = cache.take(0, 16384)!;
    expect(got.buffer).toBe(whole.buffer);
    expect(got.byteOffset).toBe(whole.byteOffset);
    cache.put(0, Buffer.alloc(4096, 1));
    cache.put(4096, Buffer.alloc(4096, 2));
    const joined = cache.take(0, 8192)!;
    expect([joined[0], joined[4096]]).toEqual([1, 2]);
    expect(cache.take(0, 4096)).toBeUndefined();
  });
});
