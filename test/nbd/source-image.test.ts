// NbdSourceImage and ReconnectingNbdClient over our server: extents in windows, retry on EIO
// (never corrupt, bounded), no retry on permanent errors, and reads that survive a cut link.
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackendError, LinkClosedError } from '../../src/common/errors.js';
import { silentLogger } from '../../src/common/logger.js';
import { NbdClient } from '../../src/nbd/client.js';
import { NbdSourceImage } from '../../src/nbd/nbd-source-image.js';
import { ReconnectingNbdClient } from '../../src/nbd/reconnecting-client.js';
import { NbdServer } from '../../src/nbd/server.js';
import { MemoryBlockDevice } from './helpers/memory-block-device.js';
import { TcpProxy } from './helpers/tcp-proxy.js';
import { waitUntil } from '../helpers/wait.js';

const MiB = 1024 * 1024;
const SIZE = 6 * MiB;
const eio = (): Error => Object.assign(new Error('injected EIO'), { code: 'EIO' });

describe('NbdSourceImage', () => {
  let disk: MemoryBlockDevice;
  let server: NbdServer;
  let port: number;

  beforeAll(async () => {
    disk = new MemoryBlockDevice(SIZE).fillPattern(0, MiB).fillPattern(3 * MiB, 4096, 2).fillPattern(SIZE - 100, 100, 3);
    server = new NbdServer({ exports: disk, logger: silentLogger() });
    port = ((await server.listen({ port: 0 })) as AddressInfo).port;
  });

  afterAll(async () => {
    await server.close();
  });

  it('extents() covers [0, size) in order, merged, zero where holes are, across small windows', async () => {
    const img = await NbdSourceImage.open(`nbd://127.0.0.1:${port}/disk`, undefined, { windowBytes: 1536 * 1024 });
    try {
      expect(await img.extents()).toEqual([
        { offset: 0, length: MiB, zero: false },
        { offset: MiB, length: 2 * MiB, zero: true },
        { offset: 3 * MiB, length: 4096, zero: false },
        { offset: 3 * MiB + 4096, length: SIZE - 4096 - (3 * MiB + 4096), zero: true },
        { offset: SIZE - 4096, length: 4096, zero: false },
      ]);
    } finally {
      await img.close();
    }
  });

  it('extents() without base:allocation is one data extent', async () => {
    const c = await NbdClient.connect(`nbd://127.0.0.1:${port}/disk`, undefined, { baseAllocation: false });
    const img = new NbdSourceImage(c);
    expect(await img.extents()).toEqual([{ offset: 0, length: SIZE, zero: false }]);
    await img.close();
  });

  it('read() retries EIO until it gets the real bytes', async () => {
    let failures = 0;
    disk.fault = (op) => (op === 'read' && failures++ < 3 ? eio() : undefined);
    const img = await NbdSourceImage.open(`nbd://127.0.0.1:${port}/disk`, undefined, { retry: { initialDelayMs: 1 } });
    try {
      expect((await img.read(0, 65536)).equals(disk.data.subarray(0, 65536))).toBe(true);
      expect(failures).toBe(4);
    } finally {
      disk.fault = undefined;
      await img.close();
    }
  });

  it('read() gives up after the bounded attempts with BackendError (cause: the NBD error)', async () => {
    disk.fault = (op) => (op === 'read' ? eio() : undefined);
    const img = await NbdSourceImage.open(`nbd://127.0.0.1:${port}/disk`, undefined, { retry: { attempts: 3, initialDelayMs: 1 } });
    const before = disk.counts.read ?? 0;
    try {
      const err = await img.read(0, 512).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BackendError);
      expect(err).toMatchObject({ code: 'PC_ERR_BACKEND', cause: { code: 'NBD_ERR_REQUEST', errno: 5 } });
      expect((disk.counts.read ?? 0) - before).toBe(3);
    } finally {
      disk.fault = undefined;
      await img.close();
    }
  });

  it('read() does not retry a permanent error (EINVAL: out of range)', async () => {
    const img = await NbdSourceImage.open(`nbd://127.0.0.1:${port}/disk`);
    try {
      await expect(img.read(SIZE - 10, 20)).rejects.toMatchObject({ code: 'PC_ERR_BACKEND', message: expect.stringMatching(/after 1 tries/) });
    } finally {
      await img.close();
    }
  });
});

describe('ReconnectingNbdClient', () => {
  let disk: MemoryBlockDevice;
  let server: NbdServer;
  let proxy: TcpProxy;

  beforeAll(async () => {
    disk = new MemoryBlockDevice(4 * MiB).fillPattern();
    server = new NbdServer({ exports: disk, logger: silentLogger() });
    const port = ((await server.listen({ port: 0 })) as AddressInfo).port;
    proxy = await TcpProxy.start({ host: '127.0.0.1', port });
  });

  afterAll(async () => {
    await proxy.close();
    await server.close();
  });

  it('reads in flight when the link is cut are re-issued after reconnecting, with correct data', async () => {
    const c = await ReconnectingNbdClient.connect(`nbd://127.0.0.1:${proxy.port}/disk`, undefined, { reconnect: { initialDelayMs: 10 } });
    try {
      disk.delayMs = 30;
      const before = disk.counts.read ?? 0;
      const reads = Array.from({ length: 12 }, (_, i) => c.read(i * 65536, 65536));
      await waitUntil(() => (disk.counts.read ?? 0) > before, 'a read in flight at the disk', 5000, 1);
      proxy.cutAll();
      const got = await Promise.all(reads);
      got.forEach((b, i) => expect(b.equals(disk.data.subarray(i * 65536, (i + 1) * 65536))).toBe(true));
      expect(c.reconnects).toBe(1);
      expect(await c.blockStatus(0, 4096)).toEqual([{ offset: 0, length: 4096, flags: 0 }]);
    } finally {
      disk.delayMs = 0;
      await c.close();
    }
  });

  it('a write caught by a cut fails with LinkClosedError; the next call reconnects', async () => {
    const c = await ReconnectingNbdClient.connect(`nbd://127.0.0.1:${proxy.port}/disk`, undefined, { reconnect: { initialDelayMs: 10 } });
    try {
      disk.delayMs = 50;
      const before = disk.counts.write ?? 0;
      const w = c.write(0, Buffer.alloc(4096, 9));
      await waitUntil(() => (disk.counts.write ?? 0) > before, 'the write in flight at the disk', 5000, 1);
      proxy.cutAll();
      await expect(w).rejects.toBeInstanceOf(LinkClosedError);
      disk.delayMs = 0;
      await c.write(0, disk.data.subarray(0, 4096));
      expect(c.reconnects).toBe(1);
    } finally {
      disk.delayMs = 0;
      await c.close();
    }
  });

  it('gives up after bounded attempts when the server is gone', async () => {
    const dev = new MemoryBlockDevice(MiB);
    const s = new NbdServer({ exports: dev, logger: silentLogger() });
    const port = ((await s.listen({ port: 0 })) as AddressInfo).port;
    const c = await ReconnectingNbdClient.connect(`nbd://127.0.0.1:${port}/disk`, undefined, {
      reconnect: { maxAttempts: 3, initialDelayMs: 5, maxDelayMs: 10 },
    });
    await s.close();
    await c.current.closed;
    const t0 = Date.now();
    await expect(c.read(0, 512)).rejects.toBeInstanceOf(LinkClosedError);
    expect(Date.now() - t0).toBeLessThan(2000);
    await c.close();
  });

  it('NbdSourceImage reads survive a cut link (reconnect underneath)', async () => {
    const img = await NbdSourceImage.open(`nbd://127.0.0.1:${proxy.port}/disk`, undefined, { reconnect: { initialDelayMs: 5 } });
    try {
      disk.delayMs = 20;
      const before = disk.counts.read ?? 0;
      const reads = Array.from({ length: 8 }, (_, i) => img.read(i * MiB / 2, MiB / 2));
      await waitUntil(() => (disk.counts.read ?? 0) > before, 'a read in flight at the disk', 5000, 1);
      proxy.cutAll();
      expect(Buffer.concat(await Promise.all(reads)).equals(disk.data)).toBe(true);
    } finally {
      disk.delayMs = 0;
      await img.close();
    }
  });
});
