// Acceptance (issue 3): our NbdServer probed by real tools — qemu-img (info, map, compare, convert),
// qemu-io (writes and reads with FUA, zeroes, discard, flush), nbdcopy (out and in), nbdinfo.
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/common/logger.js';
import { NbdServer } from '../../src/nbd/server.js';
import * as C from '../../src/nbd/constants.js';
import { MemoryBlockDevice } from './helpers/memory-block-device.js';
import { RawPeer } from './helpers/raw-peer.js';
import { assertTools, run, skipWithout, tempDir } from './helpers/tools.js';

const TOOLS = ['qemu-img', 'qemu-io', 'qemu-nbd', 'nbdcopy', 'nbdinfo', 'nbdsh'];
const MiB = 1024 * 1024;
const SIZE = 16 * MiB;

describe.skipIf(skipWithout(TOOLS))('our server probed by real NBD tools', () => {
  let disk: MemoryBlockDevice;
  let ro: MemoryBlockDevice;
  let copy: MemoryBlockDevice;
  let odd: MemoryBlockDevice;
  let server: NbdServer;
  let port: number;
  let sock: string;
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  const uri = (name = 'disk'): string => `nbd://127.0.0.1:${port}/${name}`;

  beforeAll(async () => {
    assertTools(TOOLS);
    tmp = await tempDir();
    disk = new MemoryBlockDevice(SIZE);
    disk.fillPattern(0, 3 * MiB); // data, then holes, then more data
    disk.fillPattern(8 * MiB, MiB, 1);
    ro = new MemoryBlockDevice(4 * MiB, { readOnly: true }).fillPattern();
    copy = new MemoryBlockDevice(SIZE);
    odd = new MemoryBlockDevice(MiB + 100).fillPattern(0, MiB + 100, 7);
    server = new NbdServer({
      exports: [
        { name: 'disk', device: disk, description: 'the test disk' },
        { name: 'ro', device: ro },
        { name: 'copy', device: copy },
        { name: 'odd', device: odd },
      ],
      minimumBlockSize: 512,
      logger: silentLogger(),
    });
    port = ((await server.listen({ port: 0 })) as AddressInfo).port;
    sock = path.join(tmp.dir, 'nbd.sock');
    await server.listen({ path: sock });
  });

  afterAll(async () => {
    await server?.close();
    await tmp?.cleanup();
  });

  it('qemu-img info sees the size', async () => {
    const r = await run('qemu-img', ['info', '-f', 'raw', '--output=json', uri()]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)['virtual-size']).toBe(SIZE);
  });

  it('qemu-img compare finds the export identical to a file of the same bytes, and spots a difference', async () => {
    const file = path.join(tmp.dir, 'same.img');
    await writeFile(file, disk.data);
    const same = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri(), file]);
    expect(same.code, same.stdout + same.stderr).toBe(0);
    const other = Buffer.from(disk.data);
    other[5 * MiB + 7] = 1;
    await writeFile(file, other);
    const diff = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri(), file]);
    expect(diff.code, diff.stdout + diff.stderr).toBe(1);
    expect(diff.stdout).toMatch(/Content mismatch at offset 52428\d\d/);
  });

  it('qemu-img map reports our allocation (data vs zero) through BLOCK_STATUS', async () => {
    const r = await run('qemu-img', ['map', '-f', 'raw', '--output=json', uri()]);
    expect(r.code, r.stderr).toBe(0);
    const map = JSON.parse(r.stdout) as { start: number; length: number; data: boolean; zero: boolean }[];
    const dataRanges = map.filter((m) => m.data).map((m) => [m.start, m.length]);
    expect(dataRanges).toEqual([
      [0, 3 * MiB],
      [8 * MiB, MiB],
    ]);
    expect(map.filter((m) => !m.data).every((m) => m.zero)).toBe(true);
    expect(map.reduce((a, m) => a + m.length, 0)).toBe(SIZE);
  });

  it('qemu-io writes (plain, FUA, zeroes, discard) and reads them back; flush', async () => {
    const r = await run('qemu-io', [
      '-f', 'raw',
      '-c', 'write -P 0xab 0 64k',
      '-c', 'read -P 0xab 0 64k',
      '-c', 'write -z 64k 64k',
      '-c', 'read -P 0 64k 64k',
      '-c', 'write -f -P 0xcd 128k 4k',
      '-c', 'read -P 0xcd 128k 4k',
      '-c', 'write -z -u 1M 1M',
      '-c', 'read -P 0 1M 1M',
      '-c', 'discard 2M 64k',
      '-c', 'write -P 0x11 200001 777',
      '-c', 'read -P 0x11 200001 777',
      '-c', 'flush',
      uri(),
    ]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout + r.stderr).not.toMatch(/fail|error|mismatch/i);
    expect(disk.data.subarray(0, 64 * 1024).every((b) => b === 0xab)).toBe(true);
    expect(disk.data.subarray(64 * 1024, 128 * 1024).every((b) => b === 0)).toBe(true);
    expect(disk.data.subarray(128 * 1024, 132 * 1024).every((b) => b === 0xcd)).toBe(true);
    expect(disk.data.subarray(200001, 200001 + 777).every((b) => b === 0x11)).toBe(true);
    expect(disk.counts.writeFua).toBeGreaterThan(0);
    expect(disk.counts.flush).toBeGreaterThan(0);
    expect(disk.counts.trim).toBeGreaterThan(0);
  });

  it('qemu-io on a read-only export: reads work, writes are refused (EPERM)', async () => {
    const r = await run('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0 0 8', '-c', 'read 0 4k', uri('ro')]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    // qemu refuses to open a READ_ONLY export read-write at all.
    const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4k', uri('ro')]);
    expect(w.stdout + w.stderr).toMatch(/read-only|not permitted|permission denied/i);
    expect(ro.counts.write ?? 0).toBe(0);
  });

  it('nbdcopy copies the export out to a file exactly (over the Unix socket)', async () => {
    const out = path.join(tmp.dir, 'out.img');
    const r = await run('nbdcopy', [`nbd+unix:///disk?socket=${sock}`, out]);
    expect(r.code, r.stderr).toBe(0);
    const got = await readFile(out);
    expect(got.length).toBe(SIZE);
    expect(got.equals(disk.data)).toBe(true);
  });

  it('nbdcopy copies a file into the export exactly (data, zero runs, tail)', async () => {
    const src = Buffer.alloc(SIZE);
    randomBytes(2 * MiB).copy(src, 0);
    randomBytes(MiB).copy(src, 6 * MiB + 512);
    randomBytes(4096).copy(src, SIZE - 4096);
    const file = path.join(tmp.dir, 'in.img');
    await writeFile(file, src);
    const r = await run('nbdcopy', [file, uri()]);
    expect(r.code, r.stderr).toBe(0);
    expect(disk.data.equals(src)).toBe(true);
    const back = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri(), file]);
    expect(back.code, back.stdout).toBe(0);
  });

  it('qemu-img convert -n writes a file into the export', async () => {
    const src = Buffer.alloc(SIZE);
    randomBytes(MiB).copy(src, 3 * MiB);
    const file = path.join(tmp.dir, 'conv.img');
    await writeFile(file, src);
    const r = await run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', file, uri()]);
    expect(r.code, r.stderr).toBe(0);
    expect(disk.data.equals(src)).toBe(true);
  });

  it('nbdinfo --list shows both exports with descriptions', async () => {
    const r = await run('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${port}`]);
    expect(r.code, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout);
    const names = info.exports.map((e: { 'export-name': string }) => e['export-name']).sort();
    expect(names).toEqual(['copy', 'disk', 'odd', 'ro']);
    const d = info.exports.find((e: { 'export-name': string }) => e['export-name'] === 'disk');
    expect(d.description).toBe('the test disk');
    expect(d['export-size']).toBe(SIZE);
  });

  it('nbdinfo --json reports size, flags, block sizes and base:allocation', async () => {
    const r = await run('nbdinfo', ['--json', uri()]);
    expect(r.code, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout);
    const e = info.exports[0];
    expect(info.protocol).toBe('newstyle-fixed');
    expect(info.TLS).toBe(false);
    expect(e['export-size']).toBe(SIZE);
    expect(e.contexts).toContain('base:allocation');
    expect(e['block_size_minimum']).toBe(512);
    expect(e['block_size_preferred']).toBe(4096);
    expect(e['block_size_maximum']).toBe(32 * MiB);
    for (const can of ['can_flush', 'can_fua', 'can_trim', 'can_zero', 'can_cache', 'can_multi_conn']) expect(e[can], can).toBe(true);
    expect(e.can_fast_zero).toBe(false);
    expect(e.can_df).toBe(false);
    expect(e.is_read_only).toBe(false);
  });

  it('nbdsh (libnbd, python): pwrite/pread/zero/trim/flush with FUA, block_status, can_* flags', async () => {
    const script = [
      'assert h.get_size() == ' + SIZE,
      'assert h.can_fua() and h.can_flush() and h.can_trim() and h.can_zero() and h.can_cache() and h.can_multi_conn()',
      'assert not h.can_fast_zero() and not h.can_df() and not h.is_read_only()',
      'assert h.can_meta_context("base:allocation")',
      'h.pwrite(b"\\x42" * 8192, 65536, nbd.CMD_FLAG_FUA)',
      'assert h.pread(8192, 65536) == b"\\x42" * 8192',
      'h.zero(4096, 65536)',
      'assert h.pread(4096, 65536) == bytes(4096)',
      'h.trim(1048576, 2097152)',
      'h.cache(4096, 0)',
      'h.flush()',
      'seen = []',
      'h.block_status(1048576, 1048576, lambda ctx, off, ents, err: seen.append((ctx, off, list(ents))))',
      'assert seen[0][0] == "base:allocation", seen',
      'print("ok", seen[0][2][:4])',
    ].join('\n');
    const r = await run('nbdsh', ['--base-allocation', '-u', uri(), '-c', script]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^ok \[1048576, 3\]/);
    expect(disk.data.subarray(65536 + 4096, 65536 + 8192).every((b) => b === 0x42)).toBe(true);
  });

  it('nbdinfo --map matches the device', async () => {
    await disk.trim(0, SIZE);
    await disk.write(MiB, Buffer.alloc(MiB, 7));
    const r = await run('nbdinfo', ['--map', '--json', uri()]);
    expect(r.code, r.stderr).toBe(0);
    const map = JSON.parse(r.stdout) as { offset: number; length: number; type: number }[];
    expect(map).toEqual([
      { offset: 0, length: MiB, type: 3, description: 'hole,zero' },
      { offset: MiB, length: MiB, type: 0, description: 'data' },
      { offset: 2 * MiB, length: SIZE - 2 * MiB, type: 3, description: 'hole,zero' },
    ]);
  });

  it('an export whose size is not a multiple of 512 (advertised minimum falls back to 1): qemu and nbdcopy read it all', async () => {
    const file = path.join(tmp.dir, 'odd.img');
    await writeFile(file, odd.data);
    const info = await run('nbdinfo', ['--json', uri('odd')]);
    expect(JSON.parse(info.stdout).exports[0]['block_size_minimum']).toBe(1);
    const io = await run('qemu-io', ['-r', '-f', 'raw', '-c', `read -v ${MiB + 96} 4`, uri('odd')]);
    expect(io.code, io.stderr).toBe(0);
    // The last word of pattern generation 7 starts with its generation byte: 07 00 00 00.
    expect(io.stdout).toMatch(/00100060:\s+07 00 00 00/);
    const out = path.join(tmp.dir, 'odd-out.img');
    const r = await run('nbdcopy', [uri('odd'), out]);
    expect(r.code, r.stderr).toBe(0);
    expect((await readFile(out)).equals(odd.data)).toBe(true);
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri('odd'), file]);
    expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);
  });

  it('qemu-img convert copies the export out to a file', async () => {
    const out = path.join(tmp.dir, 'convert-out.img');
    const r = await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri(), out]);
    expect(r.code, r.stderr).toBe(0);
    expect((await readFile(out)).equals(disk.data)).toBe(true);
  });

  it('nbdcopy between two of our exports (multi-conn on both ends: several connections at once)', async () => {
    let peak = 0;
    copy.fault = () => {
      peak = Math.max(peak, server.connectionCount);
      return undefined;
    };
    const r = await run('nbdcopy', ['--flush', uri('disk'), uri('copy')]);
    copy.fault = undefined;
    expect(r.code, r.stderr).toBe(0);
    expect(copy.data.equals(disk.data)).toBe(true);
    expect(copy.counts.flush).toBeGreaterThan(0);
    // nbdcopy opens 4 connections (per end) when both ends advertise CAN_MULTI_CONN.
    expect(peak).toBeGreaterThanOrEqual(4);
    const can = await run('nbdinfo', ['--can', 'multi-conn', uri('copy')]);
    expect(can.code).toBe(0);
  });

  it('hostile peers hammering the server do not disturb nbdcopy and qemu-img compare running alongside', async () => {
    let stop = false;
    let attacks = 0;
    const attacker = async (kind: number): Promise<void> => {
      while (!stop) {
        const p = await RawPeer.connect(port);
        try {
          if (kind === 0) p.send(randomBytes(64)); // garbage from the first byte
          else {
            await p.enter('disk');
            if (kind === 1) p.send(randomBytes(28)); // bad request magic
            else if (kind === 2) p.request(C.NBD_CMD_WRITE, 1n, 0, 0x4000001); // DoS-sized write
            else p.request(C.NBD_CMD_READ, 1n, SIZE, 4096); // out of range
          }
          if (kind === 3) expect((await p.reply(1n)).error).toBe(C.NBD_EINVAL);
          else expect(await p.waitClosed()).toBe(true);
          attacks++;
        } finally {
          p.destroy();
        }
      }
    };
    const attackers = [0, 1, 2, 3].map(attacker);
    try {
      const out = path.join(tmp.dir, 'under-attack.img');
      const copy = await run('nbdcopy', [uri(), out]);
      expect(copy.code, copy.stderr).toBe(0);
      expect((await readFile(out)).equals(disk.data)).toBe(true);
      const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri(), out]);
      expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);
    } finally {
      stop = true;
      await Promise.all(attackers);
    }
    expect(attacks).toBeGreaterThan(4);
  });

  it('qemu-nbd -L lists the exports', async () => {
    const r = await run('qemu-nbd', ['-L', '-k', sock]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/exports available: 4/);
    expect(r.stdout).toMatch(/export: 'disk'/);
    expect(r.stdout).toMatch(/base:allocation/);
  });
});
