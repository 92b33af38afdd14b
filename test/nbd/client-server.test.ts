// Our NbdClient against our NbdServer over real sockets (TCP on port 0 and a Unix socket):
// every command, splitting, concurrency bounds, fallbacks, clean close, shutdown with requests in flight.
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdError } from '../../src/common/errors.js';
import { silentLogger } from '../../src/common/logger.js';
import { NbdClient } from '../../src/nbd/client.js';
import * as C from '../../src/nbd/constants.js';
import { NbdServer } from '../../src/nbd/server.js';
import { MemoryBlockDevice, patternBytes } from './helpers/memory-block-device.js';
import { tempDir } from './helpers/tools.js';
import { waitUntil } from '../helpers/wait.js';

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;

describe('NbdClient <-> NbdServer', () => {
  let disk: MemoryBlockDevice;
  let ro: MemoryBlockDevice;
  let server: NbdServer;
  let port: number;
  let sock: string;
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  const clients: NbdClient[] = [];

  async function connect(name = 'disk', opts: Parameters<typeof NbdClient.connect>[2] = {}): Promise<NbdClient> {
    const c = await NbdClient.connect(`nbd://127.0.0.1:${port}/${name}`, undefined, opts);
    clients.push(c);
    return c;
  }

  beforeAll(async () => {
    tmp = await tempDir();
    disk = new MemoryBlockDevice(SIZE).fillPattern(0, 2 * MiB);
    ro = new MemoryBlockDevice(MiB + 100, { readOnly: true, multiConnSafe: false }).fillPattern();
    server = new NbdServer({
      exports: [
        { name: 'disk', device: disk },
        { name: 'ro', device: ro },
      ],
      logger: silentLogger(),
      maxPayload: 256 * 1024,
      minimumBlockSize: 512,
    });
    port = ((await server.listen({ port: 0 })) as AddressInfo).port;
    sock = path.join(tmp.dir, 's.sock');
    await server.listen({ path: sock });
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await server.close();
    await tmp.cleanup();
  });

  it('negotiates GO with SR, base:allocation and block sizes', async () => {
    const c = await connect();
    expect(c.size).toBe(SIZE);
    expect(c.negotiatedVia).toBe('GO');
    expect(c.structuredReplies).toBe(true);
    expect(c.baseAllocation).toBe(true);
    expect(c.blockSizes).toEqual({ minimum: 512, preferred: 4096, maximum: 256 * 1024 });
    expect(c.canMultiConn).toBe(true);
    expect(C.nameOfTransmissionFlags(c.transmissionFlags)).toBe('HAS_FLAGS|SEND_FLUSH|SEND_FUA|SEND_TRIM|SEND_WRITE_ZEROES|CAN_MULTI_CONN|SEND_CACHE');
  });

  it('falls back to min 1 when the size is not a multiple of the configured minimum; read-only export', async () => {
    const c = await connect('ro');
    expect(c.blockSizes?.minimum).toBe(1);
    expect(c.readOnly).toBe(true);
    expect(c.canMultiConn).toBe(false);
    expect((await c.read(MiB, 100)).equals(ro.data.subarray(MiB))).toBe(true);
    await expect(c.write(0, Buffer.alloc(1))).rejects.toMatchObject({ errno: C.NBD_EPERM });
  });

  it('the default export "" is the first one; over a Unix socket too', async () => {
    const c = await NbdClient.connect({ socketPath: sock }, '');
    clients.push(c);
    expect(c.size).toBe(SIZE);
  });

  it('reads larger than the max payload are split and reassembled; unaligned reads are widened', async () => {
    const c = await connect();
    expect((await c.read(0, 2 * MiB)).equals(disk.data.subarray(0, 2 * MiB))).toBe(true);
    expect((await c.read(1001, 300_000)).equals(disk.data.subarray(1001, 301_001))).toBe(true);
  });

  it('writes (split, FUA), zeroes (punching or not), trim, cache, flush', async () => {
    const c = await connect();
    const data = patternBytes(3 * MiB, MiB, 5);
    await c.write(3 * MiB, data, { fua: true });
    expect(disk.data.subarray(3 * MiB, 4 * MiB).equals(data)).toBe(true);
    expect(disk.counts.writeFua).toBe(4);
    await c.writeZeroes(3 * MiB, 64 * 1024);
    await c.writeZeroes(3 * MiB + 64 * 1024, 64 * 1024, { noHole: true });
    expect(disk.counts.writeZeroesNoHole).toBe(1);
    await c.trim(3 * MiB + MiB / 2, 4096);
    await c.cache(0, MiB);
    await c.flush();
    expect((await c.read(3 * MiB, 128 * 1024)).every((b) => b === 0)).toBe(true);
    await expect(c.write(1, Buffer.alloc(512))).rejects.toMatchObject({ code: 'NBD_ERR_REQUEST', errno: C.NBD_EINVAL });
    await expect(c.read(SIZE - 1, 2)).rejects.toMatchObject({ errno: C.NBD_EINVAL });
  });

  it('blockStatus covers exactly the range asked, unaligned ends included', async () => {
    const c = await connect();
    await c.trim(5 * MiB, MiB);
    await c.write(5 * MiB + 8192, Buffer.alloc(4096, 1));
    const ext = await c.blockStatus(5 * MiB + 100, 20_000);
    expect(ext).toEqual([
      { offset: 5 * MiB + 100, length: 8092, flags: C.NBD_STATE_HOLE | C.NBD_STATE_ZERO },
      { offset: 5 * MiB + 8192, length: 4096, flags: 0 },
      { offset: 5 * MiB + 12288, length: 5 * MiB + 20_100 - (5 * MiB + 12288), flags: C.NBD_STATE_HOLE | C.NBD_STATE_ZERO },
    ]);
  });

  it('many requests in flight never exceed the bound and all complete', async () => {
    const c = await connect('disk', { maxInFlight: 4 });
    disk.delayMs = 5;
    let peak = 0;
    let live = 0;
    const origRead = disk.read.bind(disk);
    disk.read = async (o, l) => {
      live++;
      peak = Math.max(peak, live);
      try {
        return await origRead(o, l);
      } finally {
        live--;
      }
    };
    try {
      const results = await Promise.all(Array.from({ length: 40 }, (_, i) => c.read(i * 4096, 4096)));
      results.forEach((r, i) => expect(r.equals(disk.data.subarray(i * 4096, (i + 1) * 4096))).toBe(true));
      expect(peak).toBe(4);
    } finally {
      disk.read = origRead;
      disk.delayMs = 0;
    }
  });

  it('device errors come back as EIO (or ENOSPC) error replies; the connection carries on', async () => {
    const c = await connect();
    disk.fault = (op) => (op === 'read' ? new Error('boom') : op === 'write' ? Object.assign(new Error('full'), { code: 'ENOSPC' }) : undefined);
    try {
      const err = await c.read(0, 512).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NbdError);
      expect(err).toMatchObject({ code: 'NBD_ERR_REQUEST', errno: C.NBD_EIO });
      expect((err as Error).message).toMatch(/boom/);
      await expect(c.write(0, Buffer.alloc(512))).rejects.toMatchObject({ errno: C.NBD_ENOSPC });
    } finally {
      disk.fault = undefined;
    }
    expect((await c.read(0, 512)).equals(disk.data.subarray(0, 512))).toBe(true);
  });

  it('without structured replies: simple replies, no block status', async () => {
    const c = await connect('disk', { structuredReplies: false });
    expect(c.structuredReplies).toBe(false);
    expect(c.baseAllocation).toBe(false);
    expect((await c.read(0, 600_000)).equals(disk.data.subarray(0, 600_000))).toBe(true);
    expect(await c.blockStatus(0, SIZE)).toEqual([{ offset: 0, length: SIZE, flags: 0 }]);
  });

  it('without base:allocation everything is data', async () => {
    const c = await connect('disk', { baseAllocation: false });
    expect(c.structuredReplies).toBe(true);
    expect(c.baseAllocation).toBe(false);
    expect(await c.blockStatus(0, 4096)).toEqual([{ offset: 0, length: 4096, flags: 0 }]);
  });

  it('an unknown export fails the connect with NBD_ERR_OPTION', async () => {
    await expect(NbdClient.connect(`nbd://127.0.0.1:${port}/nope`)).rejects.toMatchObject({ code: 'NBD_ERR_OPTION' });
  });

  it('close() waits for requests in flight, then sends DISC; later calls are refused', async () => {
    const c = await NbdClient.connect(`nbd://127.0.0.1:${port}/disk`);
    disk.delayMs = 40;
    try {
      const reads = Array.from({ length: 6 }, (_, i) => c.read(i * 4096, 4096));
      const closing = c.close();
      const got = await Promise.all(reads);
      got.forEach((r, i) => expect(r.equals(disk.data.subarray(i * 4096, (i + 1) * 4096))).toBe(true));
      await closing;
      await expect(c.read(0, 1)).rejects.toMatchObject({ code: 'NBD_ERR_CLOSED' });
      expect(c.failure).toBeUndefined();
    } finally {
      disk.delayMs = 0;
    }
  });

  it('the server bounds payload bytes in flight per connection (big writes wait their turn)', async () => {
    const dev = new MemoryBlockDevice(16 * MiB);
    const s = new NbdServer({ exports: dev, logger: silentLogger(), maxInFlightBytes: MiB });
    const p = ((await s.listen({ port: 0 })) as AddressInfo).port;
    const c = await NbdClient.connect(`nbd://127.0.0.1:${p}/disk`, undefined, { maxInFlight: 32 });
    let live = 0;
    let peak = 0;
    const orig = dev.write.bind(dev);
    dev.write = async (o, d, opts) => {
      peak = Math.max(peak, ++live);
      await new Promise((r) => setTimeout(r, 5));
      try {
        return await orig(o, d, opts);
      } finally {
        live--;
      }
    };
    await Promise.all(Array.from({ length: 16 }, (_, i) => c.write(i * 512 * 1024, patternBytes(i * 512 * 1024, 512 * 1024))));
    expect(peak).toBe(2);
    expect(dev.data.subarray(0, 8 * MiB).equals(patternBytes(0, 8 * MiB))).toBe(true);
    await c.close();
    await s.close();
  });

  it('a Unix socket path: taken by a live server is refused; a stale file is replaced', async () => {
    const s2 = new NbdServer({ exports: new MemoryBlockDevice(MiB), logger: silentLogger() });
    await expect(s2.listen({ path: sock })).rejects.toMatchObject({ code: 'PC_ERR_USAGE', message: expect.stringContaining('another process serves') });
    const stale = path.join(tmp.dir, 'stale.sock');
    // A crashed server: a process that listened on the path, killed with SIGKILL, leaves the file.
    const { spawn } = await import('node:child_process');
    const { existsSync } = await import('node:fs');
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => console.log('up'))`]);
    await new Promise<void>((r) => child.stdout.once('data', () => r()));
    child.kill('SIGKILL');
    await new Promise<void>((r) => child.once('exit', () => r()));
    expect(existsSync(stale)).toBe(true);
    await s2.listen({ path: stale });
    const c = await NbdClient.connect({ socketPath: stale }, 'disk');
    expect(c.size).toBe(MiB);
    await c.close();
    await s2.close();
  });

  it('server.close() lets in-flight requests finish, then closes the connections', async () => {
    const dev = new MemoryBlockDevice(MiB).fillPattern();
    const s = new NbdServer({ exports: dev, logger: silentLogger() });
    const p = ((await s.listen({ port: 0 })) as AddressInfo).port;
    const c = await NbdClient.connect(`nbd://127.0.0.1:${p}/disk`);
    dev.delayMs = 50;
    const before = dev.counts.read ?? 0;
    const reads = Array.from({ length: 5 }, (_, i) => c.read(i * 4096, 4096));
    await waitUntil(() => (dev.counts.read ?? 0) >= before + 5, 'the five reads in flight at the device', 5000, 1);
    await s.close();
    const got = await Promise.all(reads);
    got.forEach((r, i) => expect(r.equals(dev.data.subarray(i * 4096, (i + 1) * 4096))).toBe(true));
    await c.closed;
    await expect(c.read(0, 1)).rejects.toMatchObject({ code: 'NBD_ERR_CLOSED' });
    await c.close();
  });
});
