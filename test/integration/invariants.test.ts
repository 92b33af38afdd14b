// The invariants of DESIGN.md §1, each shown to hold, over real TCP with fault layers where a failure is needed.
import { existsSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { FRAME_MAGIC, MSG } from '../../src/protocol/constants.js';
import { RolledBackError } from '../../src/source/source-agent.js';
import { DestRolledBackError } from '../../src/dest/dest-agent.js';
import { verifyMigration } from '../../src/guest/verify.js';
import { FaultDuplex } from '../faults/fault-duplex.js';
import { startHarness, type Harness } from './harness.js';

let h: Harness | null = null;
afterEach(async () => {
  await h?.cleanup();
  h = null;
});

function isFrameHeader(chunk: Buffer, type: number): boolean {
  return chunk.length >= 20 && chunk.readUInt32BE(0) === FRAME_MAGIC && chunk[4] === type;
}

/** Cut `f` `delayMs` after `cond` first holds (polled). */
function cutWhen(cond: () => boolean, f: FaultDuplex, delayMs: number, onCut?: () => void): void {
  const timer = setInterval(() => {
    if (!cond()) return;
    clearInterval(timer);
    setTimeout(() => {
      onCut?.();
      f.cut();
    }, delayMs);
  }, 5);
  timer.unref();
}

async function verifyFinal(x: Harness): Promise<void> {
  const g = x.destGuest()!;
  await g.pause();
  const v = await verifyMigration({ sourceImage: x.src, destImage: x.dst, writeMap: g.writeMapEntries() });
  expect(v.mismatches).toEqual([]);
  expect(v.ok).toBe(true);
  expect(g.stats.readMismatches).toBe(0);
  expect(x.sourceGuest!.stats.readMismatches).toBe(0);
}

describe('DESIGN §1 invariants', () => {
  it('exactly one side runs the guest at every moment, and D ends = S at cut-over + guest writes', async () => {
    h = await startHarness();
    const [s, d] = await Promise.all([h.source.run(), h.dest.done]);
    expect(s.phase).toBe('confirmed');
    expect(d.phase).toBe('confirmed');
    expect(h.overlapSamples()).toBe(0);
    expect(h.sourceGuest!.running).toBe(false);
    expect(h.destGuest()!.running).toBe(true);
    await verifyFinal(h);
  });

  it("S's progress after D's COMPLETE: nothing is only on S, and its bytes served by class add up to what it sent", async () => {
    h = await startHarness();
    expect(h.source.progress()).toMatchObject({ phase: 'connecting', link: 'down', bytesServedDemand: 0, bytesServedBulk: 0 });
    const [s] = await Promise.all([h.source.run(), h.dest.done]);
    const p = h.source.progress();
    expect(p).toMatchObject({ phase: 'confirmed', bytesTotal: h.dest.store!.size, bytesOnlyOnSource: 0 });
    expect(p.bytesServedDemand + p.bytesServedBulk).toBe(s.blocks.bytesSent);
  });

  it('D failing Finish answers "not running" first; only then S resumes its guest; D keeps nothing', async () => {
    h = await startHarness({
      createGuest: () => {
        throw new Error('hypervisor refused to start');
      },
    });
    // Looked at the moment done rejects (not after S's own rejection, by which time a late delete may have run).
    const imageAtReject = h.dest.done.then(
      () => 'resolved',
      () => existsSync(h!.dst),
    );
    const run = h.source.run();
    await expect(run).rejects.toBeInstanceOf(RolledBackError);
    await expect(h.dest.done).rejects.toBeInstanceOf(DestRolledBackError);
    expect(h.sourceGuest!.running).toBe(true);
    expect(h.destGuest()).toBeNull();
    // D reports the rollback only once it is true: its image is gone when done rejects, not some time after.
    expect(await imageAtReject).toBe(false);
    expect(existsSync(h.dst)).toBe(false);
    expect(h.overlapSamples()).toBe(0);
  });

  it('a link lost between the final state and D\'s answer: S stays paused, reconnects, learns D runs it, completes', async () => {
    let cutDone = false;
    h = await startHarness({
      wrapDest: (s) =>
        new FaultDuplex(s, {
          cutBeforeWrite: (chunk) => {
            if (!cutDone && isFrameHeader(chunk, MSG.FINISH_RESULT)) return (cutDone = true);
            return false;
          },
        }),
    });
    const [s, d] = await Promise.all([h.source.run(), h.dest.done]);
    expect(cutDone).toBe(true);
    expect(s.phase).toBe('confirmed');
    expect(s.reconnects).toBeGreaterThanOrEqual(1);
    expect(d.phase).toBe('confirmed');
    // S never resumed: the guest moved exactly once.
    expect(h.sourceGuest!.running).toBe(false);
    expect(h.overlapSamples()).toBe(0);
    await verifyFinal(h);
  });

  it('S never confirms (and so never shuts down) before D has said COMPLETE', async () => {
    h = await startHarness({ guest: false });
    let destPhaseAtConfirm = '';
    const s = h.source.run().then((r) => {
      destPhaseAtConfirm = h!.dest.phase;
      return r;
    });
    await Promise.all([s, h.dest.done]);
    expect(['complete', 'confirmed']).toContain(destPhaseAtConfirm);
  });

  it('after cut-over, repeated link cuts (mid-frame) are survived: resume, re-issue, complete correctly', async () => {
    // The first link is cut shortly into post-copy; the next three after odd byte counts (mid-frame).
    h = await startHarness({
      imageBytes: 24 * 1024 * 1024,
      wrapDest: (s, n) => {
        if (n === 0) {
          const f = new FaultDuplex(s, {});
          cutWhen(() => h?.dest.phase === 'postcopy', f, 30);
          return f;
        }
        return new FaultDuplex(s, n <= 3 ? { cutAfterRead: 150_001 + n * 77_777 } : {});
      },
    });
    const [s, d] = await Promise.all([h.source.run(), h.dest.done]);
    expect(s.phase).toBe('confirmed');
    expect(d.resumes).toBeGreaterThanOrEqual(1);
    expect(h.overlapSamples()).toBe(0);
    await verifyFinal(h);
  });

  it('a ticket that expires during the migration breaks nothing: reconnects use the resume key', async () => {
    const expires = new Date(Date.now() + 1500).toISOString();
    let firstCut = false;
    h = await startHarness({
      imageBytes: 32 * 1024 * 1024,
      ticket: `integration-test-ticket-secret-0123456789\nexpires=${expires}\n`,
      wrapDest: (s, n) => {
        if (n > 0) return s;
        // The first link is slowed so post-copy outlives the ticket, then cut once the ticket has expired.
        const f = new FaultDuplex(s, { inboundDelayMs: 4 });
        cutWhen(() => Date.now() > Date.parse(expires) + 100 && h?.dest.phase === 'postcopy', f, 0, () => (firstCut = true));
        return f;
      },
    });
    const [s] = await Promise.all([h.source.run(), h.dest.done]);
    expect(s.phase).toBe('confirmed');
    expect(firstCut).toBe(true);
    expect(s.reconnects).toBeGreaterThanOrEqual(1);
    await verifyFinal(h);
  });
});

describe('reads through D before Finish (pass-through)', () => {
  it('never leave stale copies anywhere: S caches nothing while its guest still writes', async () => {
    h = await startHarness({ diskOpsPerSec: 3000, ramBytes: 96 * 1024 * 1024 });
    const x = h;
    const run = Promise.all([x.source.run(), x.dest.done]);
    // A hypervisor on D probing its disk before the switch-over, over and over, at the start of the disk.
    let probes = 0;
    while (x.dest.phase !== 'postcopy' && x.dest.phase !== 'complete' && x.dest.phase !== 'confirmed') {
      const store = x.dest.store;
      if (store && store.mode === 'pass-through') {
        await store.read((probes % 8) * 65536, 4096);
        probes++;
      } else {
        await new Promise((r) => setTimeout(r, 1));
      }
    }
    await run;
    expect(probes).toBeGreaterThan(0);
    await verifyFinal(x);
  });
});
