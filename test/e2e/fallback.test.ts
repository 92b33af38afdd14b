// The fallback source: S dies for good after cut-over; D, after --fallback-after, pulls the missing blocks
// from a replica of S's image (served by qemu-nbd) and completes on its own.
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { compareImages } from '../../src/guest/verify.js';
import { assertTools, skipWithout, startQemuNbd } from '../nbd/helpers/tools.js';
import { freePort, readEvents, startAgent, waitForEvent, workDir, Teardown } from './helpers/processes.js';

const teardown = new Teardown();
afterEach(() => teardown.run());

describe.skipIf(skipWithout(['qemu-nbd']))('fallback source', () => {
  beforeAll(() => assertTools(['qemu-nbd']));

  it('S killed after cut-over and never back: D completes from the replica', async () => {
    const w = workDir('fallback');
    teardown.later(w.cleanup);
    const src = join(w.dir, 'src.img');
    const replica = join(w.dir, 'replica.img');
    const dst = join(w.dir, 'dst.img');
    generateDemoImage(src, 64 * 1024 * 1024, 8);
    copyFileSync(src, replica);
    const nbd = await startQemuNbd(replica, join(w.dir, 'replica.sock'), ['-f', 'raw', '-r']);
    teardown.later(() => nbd.stop());
    const port = await freePort();
    const dEvents = join(w.dir, 'd.jsonl');
    const dest = startAgent([
      'dest', '--listen', `127.0.0.1:${port}`, '--image', dst, '--ticket-file', w.ticket, '--events', dEvents,
      '--fallback', nbd.uri('disk'), '--fallback-after', '1', '--confirm-timeout', '1', '--bulk-window', '128K', '--progress-interval', '20',
    ]);
    teardown.agent(dest);
    await waitForEvent(dEvents, (e) => e.event === 'listening');
    const source = startAgent(['source', '--connect', `127.0.0.1:${port}`, '--image', src, '--ticket-file', w.ticket]);
    teardown.agent(source);
    await waitForEvent(dEvents, (e) => e.event === 'progress' && e.phase === 'postcopy' && Number(e.blocksPresent) > 0);
    source.child.kill('SIGKILL');
    await source.exit;
    await waitForEvent(dEvents, (e) => e.event === 'fallback' && e.active === true, 10_000);
    const d = await dest.exit;
    expect(d.code, dest.stderr()).toBe(0);
    expect((await compareImages(src, dst)).ok).toBe(true);
    const complete = readEvents(dEvents).find((e) => e.event === 'complete')!;
    expect(complete.confirmed).toBe(false);
    expect(Number(complete.bytesFromFallback)).toBeGreaterThan(0);
  });
});
