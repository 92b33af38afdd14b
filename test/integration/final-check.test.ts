// The final check before S retires: D sends the digest of every block that holds S's bytes and S compares them
// with its image. With --final-check readback, D reads them back from its image, so a block corrupted on D's disk
// after it arrived is found, fetched again, and only then does S confirm. (The digest mode's digests are taken
// as blocks are written: test/dest/block-store.test.ts.)
import { openSync, closeSync, writeSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { compareImages } from '../../src/guest/verify.js';
import { FaultDuplex } from '../faults/fault-duplex.js';
import { startHarness, type Harness } from './harness.js';

let h: Harness | null = null;
afterEach(async () => {
  await h?.cleanup();
  h = null;
});

describe('final check of the whole image', () => {
  it('readback mode: finds a block corrupted on D after it arrived, re-fetches it, and confirms only when all match', async () => {
    h = await startHarness({ guest: false, imageBytes: 8 * 1024 * 1024, finalCheck: 'readback', wrapDest: (s) => new FaultDuplex(s, { inboundDelayMs: 2 }) });
    const x = h;
    const run = Promise.all([x.source.run(), x.dest.done]);
    // Wait for block 3 to be on D, then damage it on disk behind the store's back (a bad disk, a stray writer).
    for (;;) {
      const store = x.dest.store;
      if (store && x.dest.phase === 'postcopy' && store.isPresent(3) && store.presentBlocks < store.blockCount - 8) break;
      if (store && store.presentBlocks >= store.blockCount - 8) throw new Error('migration too fast for the test');
      await new Promise((r) => setTimeout(r, 2));
    }
    const fd = openSync(x.dst, 'r+');
    writeSync(fd, Buffer.from('corrupted on the destination disk'), 0, 33, 3 * 65536 + 100);
    closeSync(fd);
    const [s, d] = await run;
    expect(s.phase).toBe('confirmed');
    expect(d.phase).toBe('confirmed');
    expect((await compareImages(x.src, x.dst)).ok).toBe(true);
  });
});
