// Issue 10, case 7, with real processes on a real filesystem: D's image on a small ext4 loop mount that fills up
// mid-migration. D says so (once), keeps the link, answers the guest's NBD writes with ENOSPC, and finishes
// byte-exact by itself once space is freed.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { NbdClient } from '../../src/nbd/client.js';
import { NBD_ENOSPC } from '../../src/nbd/constants.js';
import { IN_CI } from '../nbd/helpers/tools.js';
import { freePort, readEvents, startAgent, waitForEvent, workDir, Teardown } from './helpers/processes.js';

const MiB = 1024 * 1024;
const FS_BYTES = 48 * MiB;
const IMAGE_BYTES = 40 * MiB;
/** Free space left on the mount for D: far less than S's data, so the image fills it mid-migration. */
const LEAVE_FREE = 6 * MiB;

/** A small ext4 loop mount (we are root). Under CI a mount that cannot be made fails the test; elsewhere it skips. */
function mountSmallExt4(dir: string): { mnt: string; unmount(): void } | string {
  const img = join(dir, 'fs.img');
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  try {
    execFileSync('truncate', ['-s', String(FS_BYTES), img]);
    // -m 0: no blocks reserved for root (D runs as root here and would otherwise write into them).
    execFileSync('mkfs.ext4', ['-q', '-F', '-m', '0', img], { stdio: 'pipe' });
    execFileSync('mount', ['-o', 'loop', img, mnt], { stdio: 'pipe' });
  } catch (e) {
    return `cannot make an ext4 loop mount: ${(e as Error).message}`;
  }
  return {
    mnt,
    unmount() {
      try {
        execFileSync('umount', [mnt], { stdio: 'pipe' });
      } catch {
        execFileSync('umount', ['-l', mnt], { stdio: 'pipe' });
      }
    },
  };
}

const teardown = new Teardown();
let work: ReturnType<typeof workDir>;
let mount: { mnt: string; unmount(): void } | null = null;
let unavailable: string | null = null;

beforeAll(() => {
  work = workDir('diskfull');
  const m = mountSmallExt4(work.dir);
  if (typeof m === 'string') unavailable = m;
  else mount = m;
});
afterAll(async () => {
  await teardown.run();
  mount?.unmount();
  work.cleanup();
});

describe("D's disk fills up mid-migration", () => {
  it('D pauses with one "disk full" line, the link stays up, guest writes get ENOSPC, and it completes byte-exact once space is freed', async (ctx) => {
    if (unavailable) {
      if (IN_CI) throw new Error(unavailable);
      ctx.skip();
    }
    const mnt = mount!.mnt;
    const src = join(work.dir, 'src.img');
    const gen = generateDemoImage(src, IMAGE_BYTES, 71);
    expect(gen.dataBytes).toBeGreaterThan(3 * LEAVE_FREE);
    // Fill the mount but for LEAVE_FREE.
    const { bavail, bsize } = statfsSync(mnt);
    const filler = join(mnt, 'filler');
    writeFileSync(filler, Buffer.alloc(bavail * bsize - LEAVE_FREE, 0x5a));

    const dst = join(mnt, 'dst.img');
    const port = await freePort();
    const dEvents = join(work.dir, 'd.jsonl');
    const sEvents = join(work.dir, 's.jsonl');
    const sock = join(work.dir, 'export.sock');
    const dest = teardown.agent(
      startAgent(['dest', '--listen', `127.0.0.1:${port}`, '--image', dst, '--state-dir', join(mnt, 'dst.state'), '--ticket-file', work.ticket,
        '--events', dEvents, '--nbd-socket', sock, '--progress-interval', '100']),
    );
    await waitForEvent(dEvents, (e) => e.event === 'listening');
    const source = teardown.agent(startAgent(['source', '--connect', `127.0.0.1:${port}`, '--image', src, '--ticket-file', work.ticket, '--events', sEvents]));

    const full = await waitForEvent(dEvents, (e) => e.event === 'disk-full' && e.active === true, 60_000);
    expect(full).toMatchObject({ code: 'ENOSPC', image: dst });
    expect(Number(full.bytesToCome)).toBeGreaterThan(0);
    expect(dest.stderr()).toMatch(new RegExp(`disk full on ${dst}: \\d+ bytes still to come`));

    // The guest's disk while D's is full: a write to a missing block gets ENOSPC (the connection carries on),
    // a read of a missing block gets S's bytes.
    const exp = await waitForEvent(dEvents, (e) => e.event === 'export');
    const nbd = await NbdClient.connect((exp.uris as string[])[0]!);
    try {
      const last = IMAGE_BYTES - MiB;
      await expect(nbd.write(last, Buffer.alloc(MiB, 0xee))).rejects.toMatchObject({ errno: NBD_ENOSPC });
      const srcBytes = readFileSync(src);
      expect((await nbd.read(last, MiB)).equals(srcBytes.subarray(last, last + MiB))).toBe(true);
    } finally {
      await nbd.close();
    }

    // Stay full a while (two idle progress heartbeats, 2 × PROGRESS_IDLE_SAMPLES ticks): no link rebuilt, nothing
    // more said, stderr small.
    const ticksAtFull = readEvents(dEvents).filter((e) => e.event === 'progress').length;
    await waitForEvent(dEvents, () => readEvents(dEvents).filter((e) => e.event === 'progress').length >= ticksAtFull + 2, 30_000);
    const events = readEvents(dEvents);
    expect(events.filter((e) => e.event === 'link')).toEqual([expect.objectContaining({ state: 'up', resumed: false })]);
    expect(events.filter((e) => e.event === 'disk-full')).toHaveLength(1);
    expect(events.filter((e) => e.event === 'progress').at(-1)).toMatchObject({ link: 'up' });
    expect(dest.stderr().split('\n').length).toBeLessThan(30);
    expect(source.stderr().split('\n').length).toBeLessThan(30);
    expect(source.child.exitCode).toBeNull();

    // Space appears: D resumes by itself and finishes.
    rmSync(filler);
    await waitForEvent(dEvents, (e) => e.event === 'complete', 60_000);
    expect(readEvents(dEvents).filter((e) => e.event === 'disk-full').at(-1)).toMatchObject({ active: false });
    const s = await source.exit;
    expect(s.code, source.stderr()).toBe(0);
    dest.child.kill('SIGTERM');
    const d = await dest.exit;
    expect(d.code, dest.stderr()).toBe(0);
    expect(readFileSync(dst).equals(readFileSync(src))).toBe(true);
    expect(readEvents(dEvents).filter((e) => e.event === 'link' && e.state === 'up')).toHaveLength(1);
  }, 120_000);
});
