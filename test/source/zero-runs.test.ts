// S's zero runs from a real sparse file through the real pacer: the map's holes are recorded as sent zeroes and
// answered by the pacer without a read, the scan's data reaches the read-ahead cache, and ZeroRuns says which
// method found them and how much it did not read. qemu-img missing fails this under CI=true (skips elsewhere).
import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BufferPool } from '../../src/common/buffer-pool.js';
import { crc32 } from '../../src/common/crc32.js';
import { SCAN_CHUNK } from '../../src/image/constants.js';
import { FileImage } from '../../src/image/file-image.js';
import { ReadAheadCache } from '../../src/source/read-cache.js';
import { SCAN_LEAD_BYTES, ScanPacer } from '../../src/source/scan-pacer.js';
import { SentDigests } from '../../src/source/sent-digests.js';
import { ZeroRuns } from '../../src/source/zero-runs.js';
import { assertTools, IN_CI, skipWithout } from '../nbd/helpers/tools.js';

const MiB = 1024 * 1024;
const SIZE = 32 * MiB;
const BLOCK = 64 * 1024;
/** Data at 3 MiB and at 17 MiB (one scan chunk each); holes elsewhere. */
const DATA = [3 * MiB, 17 * MiB];

let dir = '';
let path = '';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pc-zero-runs-'));
  path = join(dir, 'sparse.img');
  const fd = openSync(path, 'w');
  ftruncateSync(fd, SIZE);
  for (const at of DATA) writeSync(fd, Buffer.alloc(SCAN_CHUNK, 0x5a), 0, SCAN_CHUNK, at);
  closeSync(fd);
});
afterAll(() => rm(dir, { recursive: true, force: true }));

function parts() {
  const pool = new BufferPool(SCAN_CHUNK, 64);
  const cache = new ReadAheadCache({ maxBytes: 2 * SCAN_LEAD_BYTES, grain: BLOCK });
  return { pool, cache, pacer: new ScanPacer(pool, cache, SIZE), sent: new SentDigests(SIZE, BLOCK), runs: new ZeroRuns() };
}

describe.skipIf(skipWithout(['qemu-img']))('zero runs of a sparse file with its extent map', () => {
  beforeAll(() => {
    if (IN_CI) assertTools(['qemu-img']);
  });

  it('holes are zero runs, recorded as sent and known to the pacer without a read; the data is cached for the stream', async () => {
    const { cache, pacer, sent, runs } = parts();
    const image = FileImage.open(path);
    try {
      await runs.scan(image, pacer, sent, () => null);
    } finally {
      await image.close();
    }
    expect(runs.method).toBe('map');
    expect(runs.unreadBytes).toBe(SIZE - DATA.length * SCAN_CHUNK);
    expect(runs.fallback).toBeUndefined();
    expect(runs.bytes).toBe(SIZE - DATA.length * SCAN_CHUNK);
    const zeroCrc = crc32(Buffer.alloc(BLOCK));
    for (let at = 0; at < SIZE; at += SCAN_CHUNK) {
      const data = DATA.includes(at);
      // The block server asks the pacer before it reads: every hole chunk is answered as zero, unread.
      expect(pacer.isKnownZero(at, SCAN_CHUNK), `chunk at ${at}`).toBe(!data);
      expect(sent.get(at / BLOCK), `block at ${at}`).toBe(data ? undefined : zeroCrc);
    }
    // The data the scan read waits in the cache for D's stream (each data byte read once).
    for (const at of DATA) expect(cache.take(at, SCAN_CHUNK)?.equals(Buffer.alloc(SCAN_CHUNK, 0x5a))).toBe(true);
  });

  it('without a map: the same runs, found by reading it all, and the reason said', async () => {
    const { pacer, sent, runs } = parts();
    const image = FileImage.open(path, { mapTool: null });
    try {
      await runs.scan(image, pacer, sent, () => null);
    } finally {
      await image.close();
    }
    expect(runs.method).toBe('scan');
    expect(runs.unreadBytes).toBe(0);
    expect(runs.fallback).toMatch(/turned off/);
    expect(runs.bytes).toBe(SIZE - DATA.length * SCAN_CHUNK);
  });
});

describe('zero runs from a backend map', () => {
  it('an image without a scan (an NBD export) gives its own map: method backend', async () => {
    const { pacer, sent, runs } = parts();
    const image = {
      size: SIZE,
      read: async () => Buffer.alloc(0),
      extents: async () => [
        { offset: 0, length: MiB, zero: false },
        { offset: MiB, length: SIZE - MiB, zero: true },
      ],
      close: async () => {},
    };
    await runs.scan(image, pacer, sent, () => null);
    expect(runs.method).toBe('backend');
    expect(runs.bytes).toBe(SIZE - MiB);
    expect(runs.unreadBytes).toBe(0);
  });
});
