// The background streamer on its own: window accounting and refills in batches, with stand-ins for the store
// (which blocks are missing) and the fetcher (bytes in flight).
import { describe, expect, it } from 'vitest';
import { Streamer } from '../../src/dest/streamer.js';
import { SYSTEM_CLOCK } from '../../src/dest/dest-clock.js';
import type { BlockStore } from '../../src/dest/block-store.js';
import type { Fetcher } from '../../src/dest/fetcher.js';
import { PathEstimator } from '../../src/dest/path-estimator.js';
import { pathLimitsUpTo } from '../../src/dest/path-constants.js';

const BS = 64 * 1024;
const KiB = 1024;

/** `maxWindow`: --bulk-window. With nothing measured yet the path model gives its floors: 1 MiB, 512 KiB for a waiting guest. */
function setup(blocks: number, maxWindow = 64 * 1024 * KiB) {
  const present = new Set<number>();
  const inflight = new Set<number>();
  const requests: Array<{ first: number; count: number }> = [];
  let bytes = 0;
  let batches = 0;
  const store = {
    blockSize: BS,
    blockCount: blocks,
    isPresent: (b: number) => present.has(b),
    isInflight: (b: number) => inflight.has(b),
    nextMissing: (from: number) => {
      for (let b = from; b < blocks; b++) if (!present.has(b)) return b;
      return -1;
    },
    fetchBulk: (first: number, count: number) => {
      for (let b = first; b < first + count; b++) inflight.add(b);
      bytes += count * BS;
      requests.push({ first, count });
    },
  };
  const fetcher = {
    serving: true,
    path: new PathEstimator(pathLimitsUpTo(maxWindow), () => bytes, 0),
    get bulkBytesInFlight() {
      return bytes;
    },
    batch: (fn: () => void) => {
      batches++;
      fn();
    },
  };
  /** S answered request i: its blocks are present, its bytes leave the window. */
  const settle = (i: number) => {
    const r = requests[i]!;
    for (let b = r.first; b < r.first + r.count; b++) {
      inflight.delete(b);
      present.add(b);
    }
    bytes -= r.count * BS;
  };
  return { store: store as unknown as BlockStore, fetcher: fetcher as unknown as Fetcher, requests, settle, batches: () => batches };
}

describe('streamer', () => {
  it('fills the window with batch-sized requests in one batch, and refills only once half of it is free', () => {
    const t = setup(64);
    const s = new Streamer(t.store, t.fetcher, { batchBytes: 256 * KiB });
    s.start();
    expect(t.requests).toEqual([0, 4, 8, 12].map((first) => ({ first, count: 4 })));
    expect(t.batches()).toBe(1);
    t.settle(0);
    s.fill();
    expect(t.requests).toHaveLength(4);
    t.settle(1);
    s.fill();
    expect(t.requests.slice(4)).toEqual([16, 20].map((first) => ({ first, count: 4 })));
    expect(t.batches()).toBe(2);
  });

  it('a window smaller than a batch still streams, one request at a time, to the last block', () => {
    const t = setup(10, 128 * KiB);
    const s = new Streamer(t.store, t.fetcher, { batchBytes: 256 * KiB });
    s.start();
    for (let i = 0; i < 3; i++) {
      expect(t.requests).toHaveLength(i + 1);
      t.settle(i);
      s.fill();
    }
    expect(t.requests).toEqual([{ first: 0, count: 4 }, { first: 4, count: 4 }, { first: 8, count: 2 }]);
  });

  it('shrinks the window while demand reads are recent, and grows it back once the guest is quiet', () => {
    const t = setup(64);
    let now = 0;
    const s = new Streamer(t.store, t.fetcher, { batchBytes: 256 * KiB, demandQuietMs: 100, clock: { ...SYSTEM_CLOCK, now: () => now } });
    s.hint(-1); // a demand miss just before the stream starts (cursor stays at block 0)
    s.start();
    expect(t.requests).toHaveLength(2);
    expect(s.windowBytes).toBe(512 * KiB);
    t.settle(0);
    now = 50;
    s.fill();
    expect(t.requests).toHaveLength(3);
    t.settle(1);
    t.settle(2);
    now = 151;
    s.fill();
    expect(s.windowBytes).toBe(1024 * KiB);
    expect(t.requests).toHaveLength(7);
  });
});
