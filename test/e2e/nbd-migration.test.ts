// Issue 3 end to end with real processes and real NBD tools: S reading from qemu-nbd and nbdkit, and D's
// migrating disk served as an NBD export that qemu-img, nbdcopy, qemu-io and nbdinfo use while blocks are missing.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { compareImages } from '../../src/guest/verify.js';
import { assertTools, run, skipWithout, startNbdkit, startQemuNbd, toolPath, type SpawnedServer } from '../nbd/helpers/tools.js';
import { freePort, readEvents, startAgent, waitForEvent, workDir, Teardown } from './helpers/processes.js';

const TOOLS = ['qemu-nbd', 'qemu-img', 'qemu-io', 'nbdkit', 'nbdinfo', 'nbdcopy'];
const MiB = 1024 * 1024;

const teardown = new Teardown();
afterEach(() => teardown.run());

async function migrate(t: { dir: string; ticket: string }, image: string, extraDest: string[] = []) {
  const dst = join(t.dir, 'dst.img');
  const port = await freePort();
  const dEvents = join(t.dir, 'd.jsonl');
  const dest = startAgent(['dest', '--listen', `127.0.0.1:${port}`, '--image', dst, '--ticket-file', t.ticket, '--events', dEvents, ...extraDest]);
  teardown.agent(dest);
  await waitForEvent(dEvents, (e) => e.event === 'listening');
  const source = startAgent(['source', '--connect', `127.0.0.1:${port}`, '--image', image, '--ticket-file', t.ticket]);
  teardown.agent(source);
  return { dst, dest, source, dEvents };
}

describe.skipIf(skipWithout(TOOLS))('S reads its image from a real NBD server', () => {
  beforeAll(() => assertTools(TOOLS));

  const cases: Array<[string, (src: string, sock: string, dir: string) => Promise<SpawnedServer>]> = [
    ['qemu-nbd, raw', (src, sock) => startQemuNbd(src, sock, ['-f', 'raw', '-r'])],
    [
      'qemu-nbd, qcow2',
      (src, sock, dir) => {
        const q = join(dir, 'src.qcow2');
        execFileSync(toolPath('qemu-img')!, ['convert', '-f', 'raw', '-O', 'qcow2', src, q]);
        return startQemuNbd(q, sock, ['-f', 'qcow2', '-r']);
      },
    ],
    ['nbdkit, file plugin', (src, sock) => startNbdkit(sock, ['-r', '-e', 'disk', 'file', src])],
    ['nbdkit, error filter (20% of reads fail with EIO)', (src, sock) => startNbdkit(sock, ['-r', '-e', 'disk', '--filter=error', 'file', src, 'error=EIO', 'error-pread-rate=20%'])],
    ['nbdkit, delay filter (5 ms per read)', (src, sock) => startNbdkit(sock, ['-r', '-e', 'disk', '--filter=delay', 'file', src, 'rdelay=5ms'])],
  ];

  for (const [name, start] of cases) {
    it(`${name}: D's image equals the export's content, zero extents skipped`, async () => {
      const t = workDir('nbdsrc');
      teardown.later(t.cleanup);
      const src = join(t.dir, 'src.img');
      generateDemoImage(src, 24 * MiB, 21);
      const server = await start(src, join(t.dir, 'nbd.sock'), t.dir);
      teardown.later(() => server.stop());
      const m = await migrate(t, server.uri('disk'));
      const [s, d] = await Promise.all([m.source.exit, m.dest.exit]);
      expect(s.code, m.source.stderr()).toBe(0);
      expect(d.code, m.dest.stderr()).toBe(0);
      expect((await compareImages(src, m.dst)).ok).toBe(true);
      const summary = readEvents(m.dEvents).find((e) => e.event === 'summary')!;
      expect(Number(summary.zeroBytesSkipped)).toBeGreaterThan(2 * MiB);
    });
  }
});

describe.skipIf(skipWithout(TOOLS))("D's migrating disk as an NBD export, used by real tools while blocks are missing", () => {
  beforeAll(() => assertTools(TOOLS));

  /** A migration from a slow source (blocks stay missing on D for seconds) with D's export on a Unix socket. */
  async function slowMigrationWithExport(name: string) {
    const t = workDir(name);
    teardown.later(t.cleanup);
    const src = join(t.dir, 'src.img');
    generateDemoImage(src, 16 * MiB, 33);
    const slow = await startNbdkit(join(t.dir, 'src.sock'), ['-r', '-e', 'disk', '--filter=delay', 'file', src, 'rdelay=15ms']);
    teardown.later(() => slow.stop());
    const sock = join(t.dir, 'export.sock');
    const m = await migrate(t, slow.uri('disk'), ['--nbd-socket', sock, '--bulk-window', '64K', '--progress-interval', '50']);
    await waitForEvent(m.dEvents, (e) => e.event === 'export');
    await waitForEvent(m.dEvents, (e) => e.event === 'progress' && e.phase === 'postcopy');
    const progress = () => readEvents(m.dEvents).filter((e) => e.event === 'progress' && e.phase === 'postcopy').pop()!;
    const finish = async () => {
      const s = await m.source.exit;
      expect(s.code, m.source.stderr()).toBe(0);
      await waitForEvent(m.dEvents, (e) => e.event === 'summary');
      m.dest.child.kill('SIGTERM');
      expect((await m.dest.exit).code, m.dest.stderr()).toBe(0);
    };
    return { t, src, sock, uri: `nbd+unix:///disk?socket=${sock}`, m, progress, finish };
  }

  it("nbdinfo lists it; qemu-img compare and nbdcopy of it give S's image; nbdinfo --map answers", async () => {
    const x = await slowMigrationWithExport('export-read');
    const list = await run('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${x.sock}`]);
    expect(list.code, list.stderr).toBe(0);
    expect(JSON.parse(list.stdout).exports.map((e: { 'export-name': string }) => e['export-name'])).toContain('disk');
    const map = await run('nbdinfo', ['--map', x.uri]);
    expect(map.code, map.stderr).toBe(0);
    expect(map.stdout).toMatch(/data/);
    // S's zero runs arrived at cut-over: they show as zero before a byte of them moved.
    expect(map.stdout).toMatch(/zero/);
    expect(Number(x.progress().blocksPresent)).toBeLessThan(Number(x.progress().blocksTotal));
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', x.uri, x.src]);
    expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);
    const out = join(x.t.dir, 'copy.img');
    const copy = await run('nbdcopy', [x.uri, out]);
    expect(copy.code, copy.stderr).toBe(0);
    expect((await compareImages(x.src, out)).ok).toBe(true);
    await x.finish();
    expect((await compareImages(x.src, x.m.dst)).ok).toBe(true);
  });

  it('qemu-io writes through it while blocks are missing; after completion D = S overlaid with exactly those writes', async () => {
    const x = await slowMigrationWithExport('export-write');
    expect(Number(x.progress().blocksPresent)).toBeLessThan(Number(x.progress().blocksTotal) / 2);
    // Partial, whole-block and zero writes, most in blocks not yet on D.
    const io = await run('qemu-io', [
      '-f', 'raw',
      '-c', 'write -P 0xab 100k 8k',
      '-c', 'write -P 0xcd 1M 64k',
      '-c', 'write -P 0x5e 15M 12k',
      '-c', 'write -z 8M 4k',
      '-c', 'read -P 0x5e 15M 12k',
      '-c', 'flush',
      x.uri,
    ]);
    expect(io.code, io.stdout + io.stderr).toBe(0);
    expect(io.stdout).not.toMatch(/Pattern verification failed/);
    await x.finish();
    const expected = readFileSync(x.src);
    expected.fill(0xab, 100 * 1024, 108 * 1024);
    expected.fill(0xcd, MiB, MiB + 64 * 1024);
    expected.fill(0x5e, 15 * MiB, 15 * MiB + 12 * 1024);
    expected.fill(0, 8 * MiB, 8 * MiB + 4096);
    const got = readFileSync(x.m.dst);
    expect(got.length).toBe(expected.length);
    expect(got.equals(expected)).toBe(true);
  });
});
