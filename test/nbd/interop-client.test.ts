// Acceptance (issue 3): our NbdClient and NbdSourceImage against real servers — qemu-nbd (raw,
// qcow2, read-write) and nbdkit (file plugin, error and delay filters, no SR, old handshake).
// Every client is closed cleanly: nbdkit 1.32 asserts when a client drops with requests in flight.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdError } from '../../src/common/errors.js';
import { NbdClient, type BlockStatusExtent } from '../../src/nbd/client.js';
import * as C from '../../src/nbd/constants.js';
import { NbdSourceImage } from '../../src/nbd/nbd-source-image.js';
import { holeRanges, IMAGE_SIZE, writeSparseImage } from './helpers/images.js';
import { patternBytes } from './helpers/memory-block-device.js';
import { assertTools, skipWithout, startNbdkit, startQemuNbd, tempDir, toolPath, type SpawnedServer } from './helpers/tools.js';

const MiB = 1024 * 1024;
const TOOLS = ['qemu-nbd', 'qemu-img', 'nbdkit'];

/**
 * Every extent the server calls zero really reads as zero, and the hole ranges (shrunk to the
 * format's allocation granule: qcow2 clusters are 64 KiB) are reported zero.
 */
function checkExtents(extents: BlockStatusExtent[], bytes: Buffer, granule = 4096): void {
  let pos = 0;
  for (const e of extents) {
    expect(e.offset).toBe(pos);
    pos += e.length;
    if (e.flags & C.NBD_STATE_ZERO) expect(bytes.subarray(e.offset, e.offset + e.length).every((b) => b === 0)).toBe(true);
  }
  expect(pos).toBe(IMAGE_SIZE);
  const zeroAt = (off: number): boolean => extents.some((e) => e.offset <= off && off < e.offset + e.length && (e.flags & C.NBD_STATE_ZERO) !== 0);
  for (const [off, len] of holeRanges()) {
    const start = Math.ceil(off / granule) * granule;
    const end = Math.floor((off + len) / granule) * granule;
    if (end <= start) continue;
    expect(zeroAt(start), `hole at ${start}`).toBe(true);
    expect(zeroAt(end - 1), `hole end at ${end - 1}`).toBe(true);
  }
  expect(zeroAt(0)).toBe(false);
  expect(zeroAt(8 * MiB + 4096)).toBe(false);
}

describe.skipIf(skipWithout(TOOLS))('our client against real NBD servers', () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let rawPath: string;
  let qcowPath: string;
  let bytes: Buffer;

  beforeAll(async () => {
    assertTools(TOOLS);
    tmp = await tempDir();
    rawPath = path.join(tmp.dir, 'disk.raw');
    qcowPath = path.join(tmp.dir, 'disk.qcow2');
    bytes = await writeSparseImage(rawPath);
    await promisify(execFile)(toolPath('qemu-img')!, ['convert', '-f', 'raw', '-O', 'qcow2', rawPath, qcowPath]);
  });

  afterAll(async () => {
    await tmp?.cleanup();
  });

  async function withServer<T>(start: () => Promise<SpawnedServer>, fn: (s: SpawnedServer) => Promise<T>): Promise<T> {
    const server = await start();
    try {
      return await fn(server);
    } finally {
      await server.stop();
    }
  }

  describe('qemu-nbd', () => {
    it('raw, read-only: whole-disk read (sparse OFFSET_HOLE replies assembled) and extents', async () => {
      await withServer(
        () => startQemuNbd(rawPath, path.join(tmp.dir, 'q1.sock'), ['-f', 'raw', '-r']),
        async (s) => {
          const c = await NbdClient.connect(s.uri('disk'));
          try {
            expect(c.size).toBe(IMAGE_SIZE);
            expect(c.readOnly).toBe(true);
            expect(c.structuredReplies).toBe(true);
            expect(c.baseAllocation).toBe(true);
            expect(c.negotiatedVia).toBe('GO');
            expect((await c.read(0, IMAGE_SIZE)).equals(bytes)).toBe(true);
            // Unaligned and small reads too.
            expect((await c.read(8 * MiB + 13, 1000)).equals(bytes.subarray(8 * MiB + 13, 8 * MiB + 1013))).toBe(true);
            checkExtents(await c.blockStatus(0, IMAGE_SIZE), bytes);
            await expect(c.write(0, Buffer.alloc(512))).rejects.toMatchObject({ code: 'NBD_ERR_REQUEST', errno: C.NBD_EPERM });
          } finally {
            await c.close();
          }
        },
      );
    });

    it('qcow2: reads and NbdSourceImage extents match the raw original', async () => {
      await withServer(
        () => startQemuNbd(qcowPath, path.join(tmp.dir, 'q2.sock'), ['-f', 'qcow2', '-r']),
        async (s) => {
          const img = await NbdSourceImage.open(s.uri('disk'));
          try {
            expect(img.size).toBe(IMAGE_SIZE);
            expect((await img.read(0, IMAGE_SIZE)).equals(bytes)).toBe(true);
            const extents = await img.extents();
            checkExtents(extents.map((e) => ({ offset: e.offset, length: e.length, flags: e.zero ? C.NBD_STATE_ZERO : 0 })), bytes, 65536);
          } finally {
            await img.close();
          }
        },
      );
    });

    it('raw, read-write: write, FUA, zeroes, trim, cache, flush land in the file', async () => {
      const rw = path.join(tmp.dir, 'rw.raw');
      await writeSparseImage(rw);
      await withServer(
        () => startQemuNbd(rw, path.join(tmp.dir, 'q3.sock'), ['-f', 'raw']),
        async (s) => {
          const c = await NbdClient.connect(s.uri('disk'));
          try {
            const data = patternBytes(4 * MiB, MiB, 9);
            await c.write(4 * MiB, data);
            await c.write(5 * MiB, Buffer.alloc(4096, 0xee), { fua: true });
            await c.writeZeroes(0, 64 * 1024);
            await c.writeZeroes(64 * 1024, 64 * 1024, { noHole: true });
            await c.trim(8 * MiB, MiB);
            await c.cache(0, MiB);
            await c.flush();
            expect((await c.read(4 * MiB, MiB)).equals(data)).toBe(true);
            expect((await c.read(0, 128 * 1024)).every((b) => b === 0)).toBe(true);
          } finally {
            await c.close();
          }
        },
      );
      const file = await readFile(rw);
      expect(file.subarray(4 * MiB, 5 * MiB).equals(patternBytes(4 * MiB, MiB, 9))).toBe(true);
      expect(file.subarray(5 * MiB, 5 * MiB + 4096).every((b) => b === 0xee)).toBe(true);
      expect(file.subarray(0, 128 * 1024).every((b) => b === 0)).toBe(true);
    });

    it('a 48 MiB read is split below the 32 MiB max payload and reassembled', async () => {
      const big = path.join(tmp.dir, 'big.raw');
      const { open } = await import('node:fs/promises');
      const fh = await open(big, 'w');
      const tail = patternBytes(40 * MiB, MiB, 4);
      await fh.write(tail, 0, MiB, 40 * MiB);
      await fh.truncate(48 * MiB);
      await fh.close();
      await withServer(
        () => startQemuNbd(big, path.join(tmp.dir, 'q6.sock'), ['-f', 'raw', '-r']),
        async (s) => {
          const c = await NbdClient.connect(s.uri('disk'));
          try {
            expect(c.blockSizes?.maximum).toBe(32 * MiB);
            const all = await c.read(0, 48 * MiB);
            expect(all.length).toBe(48 * MiB);
            expect(all.subarray(40 * MiB, 41 * MiB).equals(tail)).toBe(true);
            expect(all.subarray(0, 40 * MiB).every((b) => b === 0)).toBe(true);
          } finally {
            await c.close();
          }
        },
      );
    });

    it('simple replies only (structured replies declined by us): reads still exact, extents all data', async () => {
      await withServer(
        () => startQemuNbd(rawPath, path.join(tmp.dir, 'q4.sock'), ['-f', 'raw', '-r']),
        async (s) => {
          const c = await NbdClient.connect(s.uri('disk'), undefined, { structuredReplies: false, maxRequestBytes: MiB });
          try {
            expect(c.structuredReplies).toBe(false);
            expect(c.baseAllocation).toBe(false);
            expect((await c.read(0, IMAGE_SIZE)).equals(bytes)).toBe(true);
            expect(await c.blockStatus(0, IMAGE_SIZE)).toEqual([{ offset: 0, length: IMAGE_SIZE, flags: 0 }]);
          } finally {
            await c.close();
          }
        },
      );
    });

    it('an unknown export name is refused with a clear error', async () => {
      await withServer(
        () => startQemuNbd(rawPath, path.join(tmp.dir, 'q5.sock'), ['-f', 'raw', '-r']),
        async (s) => {
          const err = await NbdClient.connect(s.uri('nope')).catch((e: unknown) => e);
          expect(err).toBeInstanceOf(NbdError);
          expect((err as NbdError).code).toBe('NBD_ERR_OPTION');
          expect((err as NbdError).message).toMatch(/NBD_REP_ERR_UNKNOWN/);
        },
      );
    });
  });

  describe('nbdkit', () => {
    it('file plugin: reads, extents, writes', async () => {
      const rw = path.join(tmp.dir, 'k1.raw');
      await writeSparseImage(rw);
      await withServer(
        () => startNbdkit(path.join(tmp.dir, 'k1.sock'), ['file', rw]),
        async (s) => {
          const c = await NbdClient.connect(s.uri(''));
          try {
            expect(c.size).toBe(IMAGE_SIZE);
            expect((await c.read(0, IMAGE_SIZE)).equals(bytes)).toBe(true);
            checkExtents(await c.blockStatus(0, IMAGE_SIZE), bytes);
            await c.write(3 * MiB, Buffer.alloc(8192, 0x5a), { fua: true });
            await c.flush();
            expect((await c.read(3 * MiB, 8192)).every((b) => b === 0x5a)).toBe(true);
          } finally {
            await c.close();
          }
        },
      );
    });

    it('error filter (30% of preads fail with EIO): the raw client sees EIO, NbdSourceImage retries to exact data', async () => {
      await withServer(
        () => startNbdkit(path.join(tmp.dir, 'k2.sock'), ['--filter=error', 'file', rawPath, 'error=EIO', 'error-pread-rate=30%']),
        async (s) => {
          const c = await NbdClient.connect(s.uri(''));
          let eio = 0;
          try {
            const results = await Promise.allSettled(Array.from({ length: 40 }, (_, i) => c.read(i * 65536, 65536)));
            for (const r of results) {
              if (r.status === 'rejected') {
                expect(r.reason).toMatchObject({ code: 'NBD_ERR_REQUEST', errno: C.NBD_EIO });
                eio++;
              }
            }
            expect(eio).toBeGreaterThan(0);
            expect(c.isOpen).toBe(true);
          } finally {
            await c.close();
          }
          const img = await NbdSourceImage.open(s.uri(''), undefined, { retry: { attempts: 30, initialDelayMs: 1, maxDelayMs: 5 } });
          try {
            const parts = await Promise.all(Array.from({ length: 64 }, (_, i) => img.read(i * 256 * 1024, 256 * 1024)));
            expect(Buffer.concat(parts).equals(bytes)).toBe(true);
          } finally {
            await img.close();
          }
        },
      );
    });

    it('error filter on extents (50% of BLOCK_STATUS fail): NbdSourceImage.extents() retries to the true map', async () => {
      await withServer(
        () => startNbdkit(path.join(tmp.dir, 'k8.sock'), ['--filter=error', 'file', rawPath, 'error=EIO', 'error-extents-rate=50%']),
        async (s) => {
          const img = await NbdSourceImage.open(s.uri(''), undefined, { windowBytes: 4 * MiB, retry: { attempts: 30, initialDelayMs: 1, maxDelayMs: 2 } });
          try {
            const extents = await img.extents();
            checkExtents(extents.map((e) => ({ offset: e.offset, length: e.length, flags: e.zero ? C.NBD_STATE_ZERO : 0 })), bytes);
          } finally {
            await img.close();
          }
        },
      );
    });

    it('delay filter (200 ms per read): 16 reads in flight overlap instead of queueing', async () => {
      await withServer(
        () => startNbdkit(path.join(tmp.dir, 'k3.sock'), ['--filter=delay', 'file', rawPath, 'rdelay=200ms']),
        async (s) => {
          const c = await NbdClient.connect(s.uri(''), undefined, { maxInFlight: 16 });
          try {
            const t0 = Date.now();
            const parts = await Promise.all(Array.from({ length: 16 }, (_, i) => c.read(i * MiB, MiB)));
            const ms = Date.now() - t0;
            expect(Buffer.concat(parts).equals(bytes)).toBe(true);
            expect(ms).toBeLessThan(16 * 200 / 2);
          } finally {
            await c.close();
          }
        },
      );
    });

    it('blocksize-policy (minimum 4096, errors on misalignment): unaligned reads are widened, unaligned writes refused locally', async () => {
      const rw = path.join(tmp.dir, 'k6.raw');
      await writeSparseImage(rw);
      await withServer(
        () =>
          startNbdkit(path.join(tmp.dir, 'k6.sock'), [
            '--filter=blocksize-policy', 'file', rw, 'blocksize-minimum=4096', 'blocksize-preferred=65536', 'blocksize-error-policy=error',
          ]),
        async (s) => {
          const c = await NbdClient.connect(s.uri(''));
          try {
            expect(c.blockSizes?.minimum).toBe(4096);
            expect((await c.read(13, 1000)).equals(bytes.subarray(13, 1013))).toBe(true);
            expect((await c.read(8 * MiB - 100, 9000)).equals(bytes.subarray(8 * MiB - 100, 8 * MiB + 8900))).toBe(true);
            const ext = await c.blockStatus(3 * MiB + 1, 5000);
            expect(ext[0]!.offset).toBe(3 * MiB + 1);
            expect(ext.reduce((a, e) => a + e.length, 0)).toBe(5000);
            await expect(c.write(100, Buffer.alloc(4096))).rejects.toMatchObject({ code: 'NBD_ERR_REQUEST', errno: C.NBD_EINVAL });
            await c.write(4096, Buffer.alloc(4096, 3));
            expect((await c.read(4096, 4096)).every((b) => b === 3)).toBe(true);
          } finally {
            await c.close();
          }
        },
      );
    });

    it('close() with 32 slow reads in flight waits for them, then DISC: nbdkit keeps serving', async () => {
      await withServer(
        () => startNbdkit(path.join(tmp.dir, 'k7.sock'), ['--filter=delay', 'file', rawPath, 'rdelay=100ms']),
        async (s) => {
          const c = await NbdClient.connect(s.uri(''), undefined, { maxInFlight: 16 });
          const reads = Array.from({ length: 32 }, (_, i) => c.read(i * 65536, 65536));
          // close() right away: the first 16 are on the wire (each takes 100 ms at nbdkit), 16 wait in the client.
          await c.close();
          const got = await Promise.all(reads);
          expect(Buffer.concat(got).equals(bytes.subarray(0, 32 * 65536))).toBe(true);
          // The server is alive and well for the next client.
          const d = await NbdClient.connect(s.uri(''));
          expect((await d.read(0, 512)).equals(bytes.subarray(0, 512))).toBe(true);
          await d.close();
          expect(s.stderr()).not.toMatch(/Assertion|abort/i);
        },
      );
    });

    it('--no-sr: simple replies, no block status, data exact', async () => {
      await withServer(
        () => startNbdkit(path.join(tmp.dir, 'k4.sock'), ['--no-sr', 'file', rawPath]),
        async (s) => {
          const c = await NbdClient.connect(s.uri(''));
          try {
            expect(c.structuredReplies).toBe(false);
            expect(c.baseAllocation).toBe(false);
            expect((await c.read(0, IMAGE_SIZE)).equals(bytes)).toBe(true);
          } finally {
            await c.close();
          }
        },
      );
    });

    it('--mask-handshake=0 (no fixed newstyle): falls back to NBD_OPT_EXPORT_NAME with padding', async () => {
      await withServer(
        () => startNbdkit(path.join(tmp.dir, 'k5.sock'), ['--mask-handshake=0', 'file', rawPath]),
        async (s) => {
          const c = await NbdClient.connect(s.uri(''));
          try {
            expect(c.negotiatedVia).toBe('EXPORT_NAME');
            expect((await c.read(0, IMAGE_SIZE)).equals(bytes)).toBe(true);
          } finally {
            await c.close();
          }
        },
      );
    });
  });
});
