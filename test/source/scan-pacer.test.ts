// S reads each data byte once: the zero scan keeps just ahead of D's stream and its buffers reach the block server
// through the read-ahead cache, whole (no copy), and go back to the pool once sent.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BufferPool } from '../../src/common/buffer-pool.js';
import { SCAN_CHUNK } from '../../src/image/constants.js';
import { scanZeroRuns } from '../../src/image/extent-scan.js';
import { ReadAheadCache } from '../../src/source/read-cache.js';
import { SCAN_LEAD_BYTES, ScanPacer } from '../../src/source/scan-pacer.js';
import type { Extent } from '../../src/common/block-device.js';
import { turns, turnsUntil } from '../helpers/wait.js';

const MiB = 1024 * 1024;

/** One turn of the event loop (setImmediate is real: only setTimeout, the pacer's idle timer, is faked). */
const turn = () => turns(1);

/** The scan is parked in pace(): its idle timer (the only timer here) is pending. */
const parked = () => vi.getTimerCount() === 1;

/** An image of `size` bytes: data in the first half of every 1 MiB, zeroes elsewhere. */
function image(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let at = 0; at < size; at += MiB) b.fill(0xab, at, at + MiB / 2);
  return b;
}

describe('zero scan paced by the stream', () => {
  // The pacer's idle timer is fake: a hold lasts exactly until the test moves the clock, never a real-time race.
  beforeEach(() => vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] }));
  afterEach(() => vi.useRealTimers());

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
    // Parked on the stream (a minute of idle time it will not get): it has read exactly its lead of data.
    await turnsUntil(() => readUpTo >= held && parked(), 'the scan to reach its lead and wait');
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
      if (at % (4 * MiB) === 0 || at > size) await turn();
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

  it('a stream that does not move holds the scan up, each time for the idle time and no longer', async () => {
    // Data everywhere and nobody taking it: the cache fills to the lead; from then on each step waits for the stream
    // to have been idle `idleMs`, and then goes on regardless.
    const idleMs = 30; // not the default (50): the option must be what decides
    const size = SCAN_LEAD_BYTES + 4 * SCAN_CHUNK;
    const cache = new ReadAheadCache({ maxBytes: 2 * SCAN_LEAD_BYTES, grain: 65536 });
    const pacer = new ScanPacer(new BufferPool(SCAN_CHUNK, 4), cache, size, { streamIdleMs: idleMs });
    let readUpTo = 0;
    let finished = false;
    const runs: Extent[] = [];
    const scan = scanZeroRuns(
      (buf, offset, n) => {
        buf.fill(1, 0, n);
        readUpTo = offset + n;
      },
      size,
      (r) => runs.push(...r),
      pacer,
    ).then(() => (finished = true));
    let holds = 0;
    while (!finished) {
      await turnsUntil(() => finished || parked(), 'the scan to finish or wait on the stream');
      if (finished) break;
      holds++;
      const at = readUpTo;
      expect(cache.bytes).toBeGreaterThanOrEqual(SCAN_LEAD_BYTES);
      // Short of the idle time it stays put, however many turns go by.
      vi.advanceTimersByTime(idleMs - 1);
      for (let i = 0; i < 50; i++) await turn();
      expect(readUpTo, 'the scan moved before the stream had been idle long enough').toBe(at);
      expect(parked()).toBe(true);
      // At the idle time it reads on.
      vi.advanceTimersByTime(1);
      await turnsUntil(() => finished || readUpTo > at, 'the scan to read on after the idle time');
    }
    await scan;
    // It waited once before each of the 4 steps past the lead (the first at the lead itself).
    expect(holds).toBe(4);
    expect(readUpTo).toBe(size);
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
