// Hostile clients against our NbdServer: garbage, truncated handshakes, bad magic, oversize and
// out-of-range requests get the spec's error replies or a closed connection — while a well-behaved
// client on another connection keeps reading correct data the whole time (checked at the end).
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/common/logger.js';
import { NbdClient } from '../../src/nbd/client.js';
import * as codec from '../../src/nbd/codec.js';
import * as C from '../../src/nbd/constants.js';
import { NbdServer } from '../../src/nbd/server.js';
import { hex } from './helpers/hex.js';
import { MemoryBlockDevice } from './helpers/memory-block-device.js';
import { RawPeer } from './helpers/raw-peer.js';
import { waitUntil } from '../helpers/wait.js';

const MiB = 1024 * 1024;
const SIZE = 4 * MiB;

describe('hostile clients', () => {
  let server: NbdServer;
  let port: number;
  let disk: MemoryBlockDevice;
  let ro: MemoryBlockDevice;
  let good: NbdClient;
  let goodReads = 0;
  let goodFailures: unknown[] = [];
  let stop = false;
  let goodLoop: Promise<void>;

  beforeAll(async () => {
    disk = new MemoryBlockDevice(SIZE).fillPattern();
    ro = new MemoryBlockDevice(MiB, { readOnly: true }).fillPattern();
    server = new NbdServer({
      exports: [
        { name: 'disk', device: disk },
        { name: 'ro', device: ro },
      ],
      logger: silentLogger(),
      maxPayload: MiB,
      maxOptions: 16,
      maxOptionLength: 64 * 1024,
      handshakeTimeoutMs: 500,
      maxInFlight: 8,
    });
    port = ((await server.listen({ port: 0 })) as AddressInfo).port;
    good = await NbdClient.connect({ host: '127.0.0.1', port }, 'disk');
    // The well-behaved client: reads and verifies a pattern range in a loop for the whole suite.
    const reference = Buffer.from(disk.data.subarray(MiB, 2 * MiB));
    goodLoop = (async () => {
      while (!stop) {
        const off = MiB + Math.floor(Math.random() * 255) * 4096;
        try {
          const got = await good.read(off, 4096);
          if (!got.equals(reference.subarray(off - MiB, off - MiB + 4096))) goodFailures.push(new Error(`bad data at ${off}`));
          goodReads++;
        } catch (err) {
          goodFailures.push(err);
        }
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
  });

  afterAll(async () => {
    stop = true;
    await goodLoop;
    await good?.close();
    await server?.close();
  });

  async function peer(): Promise<RawPeer> {
    return RawPeer.connect(port);
  }

  describe('handshake phase', () => {
    it('garbage client flags (unknown bits) close the connection', async () => {
      const p = await peer();
      await p.next();
      p.send(hex`DEADBEEF`);
      expect(await p.waitClosed()).toBe(true);
    });

    it('a truncated handshake that then stalls is cut off by the handshake timeout', async () => {
      const p = await peer();
      await p.hello();
      p.send(hex`4948415645`); // 5 bytes of an option header, then nothing
      expect(await p.waitClosed(2000)).toBe(true);
    });

    it('a client that leaves mid-handshake does no harm', async () => {
      const p = await peer();
      await p.next();
      p.send(hex`0000`);
      p.destroy();
      expect(server.connectionCount).toBeGreaterThanOrEqual(1);
    });

    it('bad option magic closes', async () => {
      const p = await peer();
      await p.hello();
      p.send(hex`0000000000000000 00000007 00000000`);
      expect(await p.waitClosed()).toBe(true);
    });

    it('an option longer than the cap closes before its data is read', async () => {
      const p = await peer();
      await p.hello();
      p.send(hex`49484156454F5054 00000007 00100000`);
      expect(await p.waitClosed()).toBe(true);
    });

    it('refusals keep the connection usable: unknown, STARTTLS, EXTENDED_HEADERS, bad data, repeats, unknown export', async () => {
      const p = await peer();
      await p.hello();
      const expectReply = async (bytes: Buffer, type: number): Promise<void> => {
        p.send(bytes);
        const r = await p.optionReplies();
        expect(r[r.length - 1]!.replyType, C.nameOfReplyType(r[r.length - 1]!.replyType)).toBe(type);
      };
      await expectReply(codec.encodeOption(99, Buffer.alloc(100, 1)), C.NBD_REP_ERR_UNSUP); // data skipped
      await expectReply(codec.encodeOption(C.NBD_OPT_STARTTLS), C.NBD_REP_ERR_POLICY);
      await expectReply(codec.encodeOption(C.NBD_OPT_EXTENDED_HEADERS), C.NBD_REP_ERR_UNSUP);
      await expectReply(codec.encodeOption(C.NBD_OPT_LIST, hex`00`), C.NBD_REP_ERR_INVALID);
      await expectReply(codec.encodeMetaContextRequest(C.NBD_OPT_SET_META_CONTEXT, 'disk', ['base:allocation']), C.NBD_REP_ERR_INVALID);
      await expectReply(codec.encodeOption(C.NBD_OPT_STRUCTURED_REPLY), C.NBD_REP_ACK);
      await expectReply(codec.encodeOption(C.NBD_OPT_STRUCTURED_REPLY), C.NBD_REP_ERR_INVALID);
      await expectReply(codec.encodeOption(C.NBD_OPT_GO, hex`00000009 00`), C.NBD_REP_ERR_INVALID);
      await expectReply(codec.encodeInfoRequest(C.NBD_OPT_GO, 'nope', []), C.NBD_REP_ERR_UNKNOWN);
      await expectReply(codec.encodeInfoRequest(C.NBD_OPT_INFO, 'disk', [C.NBD_INFO_BLOCK_SIZE, 77]), C.NBD_REP_ACK);
      // Still able to enter transmission and read.
      p.send(codec.encodeInfoRequest(C.NBD_OPT_GO, 'disk', []));
      await p.optionReplies();
      p.decoder.enterTransmission(true);
      p.request(C.NBD_CMD_READ, 1n, 0, 8);
      expect((await p.reply(1n)).data).toEqual(disk.data.subarray(0, 8));
      p.destroy();
    });

    it('too many options closes', async () => {
      const p = await peer();
      await p.hello();
      for (let i = 0; i < 20; i++) p.send(codec.encodeOption(99));
      expect(await p.waitClosed()).toBe(true);
    });

    it('EXPORT_NAME for an unknown export closes; a known one gets size+flags (with padding when not NO_ZEROES)', async () => {
      const p = await peer();
      await p.hello();
      p.send(codec.encodeExportNameOption('nope'));
      expect(await p.waitClosed()).toBe(true);

      const q = await peer();
      await q.hello(C.NBD_FLAG_C_FIXED_NEWSTYLE);
      q.send(codec.encodeExportNameOption(''));
      q.decoder.expectExportNameReply(false);
      expect(await q.next()).toMatchObject({ type: 'exportNameReply', size: SIZE });
      q.destroy();
    });
  });

  describe('transmission phase', () => {
    it('bad request magic closes', async () => {
      const p = await peer();
      await p.enter();
      p.send(Buffer.alloc(28, 0x41));
      expect(await p.waitClosed()).toBe(true);
    });

    it('each invalid request gets its errno and the stream stays in sync', async () => {
      const p = await peer();
      await p.enter();
      const cases: [string, () => void, number][] = [
        ['READ past the end', () => p.request(C.NBD_CMD_READ, 1n, SIZE - 4096, 8192), C.NBD_EINVAL],
        ['WRITE past the end (payload consumed)', () => p.request(C.NBD_CMD_WRITE, 2n, SIZE - 4, 8, 0, Buffer.alloc(8)), C.NBD_ENOSPC],
        ['WRITE_ZEROES past the end', () => p.request(C.NBD_CMD_WRITE_ZEROES, 3n, SIZE, 1), C.NBD_ENOSPC],
        ['TRIM past the end', () => p.request(C.NBD_CMD_TRIM, 4n, 2 ** 60, 1), C.NBD_EINVAL],
        ['READ over the max payload', () => p.request(C.NBD_CMD_READ, 5n, 0, 2 * MiB), C.NBD_EINVAL],
        ['WRITE over the max payload (payload drained)', () => p.request(C.NBD_CMD_WRITE, 6n, 0, 2 * MiB, 0, Buffer.alloc(2 * MiB, 0xee)), C.NBD_EINVAL],
        ['unknown command', () => p.request(9, 7n, 0, 512), C.NBD_EINVAL],
        ['unknown flag', () => p.request(C.NBD_CMD_READ, 8n, 0, 512, 0x40), C.NBD_EINVAL],
        ['FAST_ZERO not advertised', () => p.request(C.NBD_CMD_WRITE_ZEROES, 9n, 0, 512, C.NBD_CMD_FLAG_FAST_ZERO), C.NBD_EINVAL],
        ['DF not advertised', () => p.request(C.NBD_CMD_READ, 10n, 0, 512, C.NBD_CMD_FLAG_DF), C.NBD_EINVAL],
        ['REQ_ONE on READ', () => p.request(C.NBD_CMD_READ, 11n, 0, 512, C.NBD_CMD_FLAG_REQ_ONE), C.NBD_EINVAL],
        ['BLOCK_STATUS of length 0', () => p.request(C.NBD_CMD_BLOCK_STATUS, 12n, 0, 0), C.NBD_EINVAL],
        ['FLUSH with a range is still a flush (as qemu-nbd)', () => p.request(C.NBD_CMD_FLUSH, 13n, 4096, 512), 0],
        ['zero-length READ', () => p.request(C.NBD_CMD_READ, 14n, 0, 0), 0],
        ['zero-length WRITE', () => p.request(C.NBD_CMD_WRITE, 15n, 0, 0), 0],
        ['zero-length TRIM at the end', () => p.request(C.NBD_CMD_TRIM, 16n, SIZE, 0), 0],
        ['FUA on READ is accepted', () => p.request(C.NBD_CMD_READ, 17n, 0, 512, C.NBD_CMD_FLAG_FUA), 0],
      ];
      let cookie = 1n;
      for (const [name, send, errno] of cases) {
        send();
        expect((await p.reply(cookie)).error, name).toBe(errno);
        cookie++;
      }
      expect(disk.data.subarray(0, 16).every((b) => b !== 0xee)).toBe(true);
      // In sync: a normal read still answers with the right bytes.
      p.request(C.NBD_CMD_READ, 100n, 4096, 64);
      expect((await p.reply(100n)).data).toEqual(disk.data.subarray(4096, 4096 + 64));
      p.destroy();
    });

    it('BLOCK_STATUS without SET_META_CONTEXT is EINVAL; write-type commands on a read-only export are EPERM', async () => {
      const p = await peer();
      await p.hello();
      p.send(codec.encodeOption(C.NBD_OPT_STRUCTURED_REPLY));
      await p.optionReplies();
      p.send(codec.encodeInfoRequest(C.NBD_OPT_GO, 'ro', []));
      await p.optionReplies();
      p.decoder.enterTransmission(true);
      p.request(C.NBD_CMD_BLOCK_STATUS, 1n, 0, 4096);
      expect((await p.reply(1n)).error).toBe(C.NBD_EINVAL);
      p.request(C.NBD_CMD_WRITE, 2n, 0, 4, 0, Buffer.alloc(4));
      expect((await p.reply(2n)).error).toBe(C.NBD_EPERM);
      p.request(C.NBD_CMD_TRIM, 3n, 0, 4096);
      expect((await p.reply(3n)).error).toBe(C.NBD_EPERM);
      p.request(C.NBD_CMD_WRITE_ZEROES, 4n, 0, 4096);
      expect((await p.reply(4n)).error).toBe(C.NBD_EPERM);
      p.destroy();
    });

    it('a DoS-sized WRITE (> 64 MiB) closes the connection', async () => {
      const p = await peer();
      await p.enter();
      p.request(C.NBD_CMD_WRITE, 1n, 0, 0x4000001);
      expect(await p.waitClosed()).toBe(true);
    });

    it('simple replies when structured replies were not negotiated', async () => {
      const p = await peer();
      await p.enter('disk', false);
      p.request(C.NBD_CMD_READ, 1n, 8, 8);
      expect(await p.next()).toEqual({ type: 'simpleReply', error: 0, cookie: 1n, data: disk.data.subarray(8, 16) });
      p.request(C.NBD_CMD_READ, 2n, SIZE, 8);
      expect(await p.next()).toEqual({ type: 'simpleReply', error: C.NBD_EINVAL, cookie: 2n });
      p.request(C.NBD_CMD_BLOCK_STATUS, 3n, 0, 8);
      expect(await p.next()).toEqual({ type: 'simpleReply', error: C.NBD_EINVAL, cookie: 3n });
      p.destroy();
    });

    it('a flood of requests without reading replies is throttled, then every one is answered', async () => {
      const p = await peer();
      await p.enter('ro');
      p.socket.pause(); // stop reading replies
      const n = 600;
      const before = ro.counts.read ?? 0;
      for (let i = 1; i <= n; i++) p.request(C.NBD_CMD_READ, BigInt(i), 0, 64 * 1024);
      await new Promise((r) => setTimeout(r, 300));
      // Backpressure: with replies unread, the server stopped taking requests well short of n.
      const served = (ro.counts.read ?? 0) - before;
      expect(served).toBeLessThan(n / 2);
      p.socket.resume();
      const seen = new Set<bigint>();
      while (seen.size < n) {
        const m = await p.next(5000);
        expect(m?.type).toBe('chunk');
        if (m?.type === 'chunk' && m.done) seen.add(m.cookie);
      }
      expect(seen.size).toBe(n);
      p.destroy();
    });

    it('a client that half-closes after its requests still gets every reply', async () => {
      const p = await peer();
      await p.enter();
      disk.delayMs = 20;
      try {
        for (let i = 1; i <= 3; i++) p.request(C.NBD_CMD_READ, BigInt(i), i * 512, 512);
        p.socket.end();
        const done: bigint[] = [];
        for (let m = await p.next(); m; m = await p.next()) if (m.type === 'chunk' && m.done) done.push(m.cookie);
        expect(done.sort()).toEqual([1n, 2n, 3n]);
      } finally {
        disk.delayMs = 0;
      }
    });

    it('DISC with requests in flight: they are answered, then the server closes', async () => {
      const p = await peer();
      await p.enter();
      disk.delayMs = 30;
      try {
        for (let i = 1; i <= 4; i++) p.request(C.NBD_CMD_READ, BigInt(i), i * 4096, 4096);
        p.request(C.NBD_CMD_DISC, 99n, 0, 0);
        const done: bigint[] = [];
        for (let m = await p.next(); m; m = await p.next()) if (m.type === 'chunk' && m.done) done.push(m.cookie);
        expect(done.sort()).toEqual([1n, 2n, 3n, 4n]);
        expect(p.isClosed).toBe(true);
      } finally {
        disk.delayMs = 0;
      }
    });
  });

  it('the well-behaved client was served correctly throughout', async () => {
    await waitUntil(() => goodReads > 20 || goodFailures.length > 0, 'the well-behaved client to make 20 reads', 10_000, 5);
    expect(goodFailures).toEqual([]);
    expect(goodReads).toBeGreaterThan(20);
    expect(good.isOpen).toBe(true);
  });
});
