// S reads each data byte once: the zero scan keeps just ahead of D's stream and its buffers reach the block server
// through the read-ahead cache, whole (no copy), and go back to the pool once sent.
import { describe, expect, it } from 'vitest';
import { BufferPool } from '../../src/common/buffer-pool.js';
import { SCAN_CHUNK, scanZeroRuns } from '../../src/source/extent-scan.js';
import { ReadAheadCache } from '../../src/source/read-cache.js';
import { SCAN_LEAD_BYTES, ScanPacer } from '../../src/source/scan-pacer.js';
import type { Extent } from '../../src/common/block-device.js';

const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !cond(); i++) await sleep(5);
}

/** An image of `size` bytes: data in the first half of every 1 MiB, zeroes elsewhere. */
function image(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let at = 0; at < size; at += MiB) b.fill(0xab, at, at + MiB / 2);
  return b;
}

describe('zero scan paced by the stream', () => {
  it('reads no further than the lead ahead of the stream, and caches the data chunks not yet asked for', async () => {
    const size = 64 * MiB;
    const img = image(size);
    const pool = new BufferPool(SCAN_CHUNK, 256);
    const cache = new ReadAheadCache({ maxBytes: 2 * SCAN_LEAD_BYTES, grain: 64 * 1024 });
    const pacer = new ScanPacer(pool, cache, { streamIdleMs: 60_000 });
    let readUpTo = 0;
    const runs: Extent[] = [];
    const scan = scanZeroRuns(
      (buf, offset, length) => {
        img.copy(buf, 0, offset, offset + length);
        readUpTo = offset + length;
      },
      size,
      (r) => runs.push(...r),
      pacer,
    );
    await until(() => readUpTo >= SCAN_LEAD_BYTES);
    await sleep(20);
    expect(readUpTo).toBe(SCAN_LEAD_BYTES);
    // Cached: whole pool buffers, handed over as one view without a copy; the server gives them back.
    const chunk = cache.take(0, SCAN_CHUNK)!;
    expect(chunk.equals(img.subarray(0, SCAN_CHUNK))).toBe(true);
    expect(pool.give(chunk)).toBe(true);
    // A zero chunk was never cached.
    expect(cache.take(MiB - SCAN_CHUNK, SCAN_CHUNK)).toBeUndefined();
    pacer.noteStream(0, 8 * MiB);
    await until(() => readUpTo >= 8 * MiB + SCAN_LEAD_BYTES);
    await sleep(20);
    expect(readUpTo).toBe(8 * MiB + SCAN_LEAD_BYTES);
    pacer.noteStream(8 * MiB, size);
    await scan;
    expect(runs).toHaveLength(64);
    expect(runs.every((r, i) => r.offset === i * MiB + MiB / 2 && r.length === MiB / 2)).toBe(true);
  });

  it('a stream that does not move holds the scan up only briefly', async () => {
    const pacer = new ScanPacer(new BufferPool(SCAN_CHUNK, 4), new ReadAheadCache({ maxBytes: 2 * SCAN_LEAD_BYTES, grain: 65536 }), { streamIdleMs: 5 });
    const runs: Extent[] = [];
    await scanZeroRuns((buf, _o, n) => buf.fill(0, 0, n), 2 * SCAN_LEAD_BYTES, (r) => runs.push(...r), pacer);
    expect(runs).toEqual([{ offset: 0, length: 2 * SCAN_LEAD_BYTES, zero: true }]);
  });

  it('data already behind the stream is not cached; its buffer goes back to the pool', async () => {
    const pool = new BufferPool(SCAN_CHUNK, 4);
    const cache = new ReadAheadCache({ maxBytes: 2 * SCAN_LEAD_BYTES, grain: 64 * 1024 });
    const pacer = new ScanPacer(pool, cache);
    pacer.noteStream(0, MiB);
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
