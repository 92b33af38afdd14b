// The final check before S retires: D sends the digest of every block that holds S's bytes and S compares them
// with its image. With --final-check readback, D reads them back from its image, so a block corrupted on D's disk
// after it arrived is found, fetched again, and only then does S confirm. (The digest mode's digests are taken
// as blocks are written: test/dest/block-store.test.ts.)
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { nullEvents } from '../../src/common/events.js';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { compareImages } from '../../src/guest/verify.js';
import type { Link } from '../../src/link/link.js';
import type { Message } from '../../src/protocol/messages.js';
import { FileImage } from '../../src/image/file-image.js';
import { SourceAgent } from '../../src/source/source-agent.js';
import { FaultDuplex } from '../faults/fault-duplex.js';
import { captureLogger } from '../guest/helpers/capture-logger.js';
import { LINK_OPTS, MiB, expectMessage, fakeDest, ticket, waitFor } from '../hostile/hostile-harness.js';
import { waitUntil } from '../helpers/wait.js';
import { startHarness, type Harness } from './harness.js';

let h: Harness | null = null;
let cleanups: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  await h?.cleanup();
  h = null;
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});

describe('final check of the whole image', () => {
  it('readback mode: finds a block corrupted on D after it arrived, re-fetches it, and confirms only when all match', async () => {
    h = await startHarness({ guest: false, imageBytes: 8 * 1024 * 1024, finalCheck: 'readback', wrapDest: (s) => new FaultDuplex(s, { inboundDelayMs: 2 }) });
    const x = h;
    const run = Promise.all([x.source.run(), x.dest.done]);
    // Wait for block 3 to be on D, then damage it on disk behind the store's back (a bad disk, a stray writer).
    await waitUntil(
      () => {
        const store = x.dest.store;
        if (store && store.presentBlocks >= store.blockCount - 8 && !store.isPresent(3)) throw new Error('migration too fast for the test');
        return !!store && x.dest.phase === 'postcopy' && store.isPresent(3) && store.presentBlocks < store.blockCount - 8;
      },
      'block 3 on D with the migration still under way',
      30_000,
      2,
    );
    const fd = openSync(x.dst, 'r+');
    writeSync(fd, Buffer.from('corrupted on the destination disk'), 0, 33, 3 * 65536 + 100);
    closeSync(fd);
    const [s, d] = await run;
    expect(s.phase).toBe('confirmed');
    expect(d.phase).toBe('confirmed');
    expect((await compareImages(x.src, x.dst)).ok).toBe(true);
  });
});

describe("final check of blocks S did not send (its re-read path: after an S restart, or D's zero map from an NBD backend)", () => {
  it('S reads such a block again, finds it differs from what D holds, and answers DIGEST_MISMATCH, not CONFIRM', async () => {
    // A fake D (it holds the ticket) takes S to post-copy, then reports digests for data blocks it never asked S
    // for: S knows nothing of them and must read its image to judge them.
    const BS = 64 * 1024;
    const dir = mkdtempSync(join(tmpdir(), 'pc-final-reread-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const src = join(dir, 'src.img');
    generateDemoImage(src, 2 * MiB, 11);
    const bytes = readFileSync(src);
    const blockCrc = (b: number) => crc32(bytes.subarray(b * BS, (b + 1) * BS)) >>> 0;
    const dataBlocks = Array.from({ length: bytes.length / BS }, (_, b) => b).filter((b) => bytes.subarray(b * BS, (b + 1) * BS).some((x) => x !== 0));
    expect(dataBlocks.length).toBeGreaterThanOrEqual(2);
    const [bad, good] = dataBlocks as [number, number];

    let session!: (s: { link: Link; inbox: Message[] }) => void;
    const sessionP = new Promise<{ link: Link; inbox: Message[] }>((r) => (session = r));
    const fake = await fakeDest((link, _hs, inbox) => session({ link, inbox }));
    cleanups.push(() => fake.close());
    const source = new SourceAgent({
      connect: fake.endpoint,
      image: FileImage.open(src),
      guest: null,
      guestDefinition: null,
      ticket: ticket(),
      blockSize: BS,
      maxDowntimeMs: 50,
      connectTimeoutMs: 3000,
      resumeTimeoutMs: 500,
      log: captureLogger('silent').log,
      events: nullEvents,
      link: LINK_OPTS,
    });
    const run = source.run();
    run.catch(() => {});
    cleanups.push(() => source.close().catch(() => {}));
    const { link, inbox } = await sessionP;
    const begin = await expectMessage(inbox, 'BEGIN');
    link.send({ type: 'PREPARED', cookie: begin.cookie });
    await expectMessage(inbox, 'DEVICE_STATE');
    link.send({ type: 'FINISH_RESULT', running: true });
    await expectMessage(inbox, 'EXTENTS_END');
    expect(source.phase).toBe('postcopy');
    const blocks = bytes.length / BS;

    // D's copy of `bad` differs from S's image (one bit), `good` matches.
    link.send({ type: 'BLOCK_DIGESTS', entries: [[bad, (blockCrc(bad) ^ 1) >>> 0], [good, blockCrc(good)]] });
    link.send({ type: 'COMPLETE', blocks, pristineBlocks: 2 });
    // S's verdict, whichever it is (a wrong one fails at once, not at a timeout).
    await waitFor(() => inbox.some((m) => m.type === 'DIGEST_MISMATCH' || m.type === 'CONFIRM'), "S's verdict on the final check");
    expect(inbox.filter((m) => m.type === 'DIGEST_MISMATCH' || m.type === 'CONFIRM')).toEqual([{ type: 'DIGEST_MISMATCH', blocks: [bad] }]);
    expect(source.phase).toBe('postcopy');

    // D fetched it again: now every digest matches, and S confirms.
    link.send({ type: 'BLOCK_DIGESTS', entries: [[bad, blockCrc(bad)], [good, blockCrc(good)]] });
    link.send({ type: 'COMPLETE', blocks, pristineBlocks: 2 });
    await expectMessage(inbox, 'CONFIRM');
    expect(inbox.filter((m) => m.type === 'DIGEST_MISMATCH')).toHaveLength(1);
    expect((await run).phase).toBe('confirmed');
  });
});
