// End to end: `--max-bandwidth` on the real `postcopy source` and `postcopy dest` processes over TCP loopback. A
// random (non-sparse) image streams at the cap, within 10 %, measured from each side's progress events over the
// streaming period, and arrives byte-exact; a guest's demand reads under a tiny cap wait far less than the cap
// would make a block wait.
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { compareImages } from '../../src/guest/verify.js';
import { freePort, readEvents, startAgent, waitForEvent, workDir, writeRandomImage, Teardown, type EventLine } from './helpers/processes.js';

const MiB = 1024 * 1024;
const KiB = 1024;

const teardown = new Teardown();
afterEach(() => teardown.run());

function setup(name: string) {
  const w = workDir(name);
  teardown.later(w.cleanup);
  return { ...w, src: join(w.dir, 'src.img'), dst: join(w.dir, 'dst.img'), dstEvents: join(w.dir, 'dst.jsonl'), srcEvents: join(w.dir, 'src.jsonl') };
}


/**
 * Bytes per second of a bulk counter over the streaming period: from the first progress sample past 10 % of the
 * image to the last one before 90 % (the opening window and the tail are not the steady rate).
 */
function bulkRate(events: EventLine[], field: 'bytesFetchedBulk' | 'bytesServedBulk', total: number): { bytesPerSec: number; seconds: number; samples: number } {
  const samples = events.filter((e) => e.event === 'progress' && typeof e[field] === 'number').map((e) => ({ at: Date.parse(e.ts), bytes: e[field] as number }));
  const steady = samples.filter((s) => s.bytes >= 0.1 * total && s.bytes <= 0.9 * total);
  expect(steady.length, `progress samples of ${field} in the streaming period`).toBeGreaterThanOrEqual(5);
  const first = steady[0]!;
  const last = steady.at(-1)!;
  const seconds = (last.at - first.at) / 1000;
  return { bytesPerSec: (last.bytes - first.bytes) / seconds, seconds, samples: steady.length };
}

/** Migrate `size` random bytes with `--max-bandwidth cap` on S or D; both exit 0 and the images are equal. */
async function cappedMigration(name: string, side: 'source' | 'dest', cap: string, size: number) {
  const t = setup(name);
  writeRandomImage(t.src, size);
  const port = await freePort();
  const capArgs = (s: 'source' | 'dest') => (s === side ? ['--max-bandwidth', cap] : []);
  const common = ['--ticket-file', t.ticket, '--progress-interval', '100'];
  const dest = startAgent(['dest', '--listen', `127.0.0.1:${port}`, '--image', t.dst, ...common, '--events', t.dstEvents, ...capArgs('dest')]);
  teardown.agent(dest);
  await waitForEvent(t.dstEvents, (e) => e.event === 'listening');
  const source = startAgent(['source', '--connect', `127.0.0.1:${port}`, '--image', t.src, ...common, '--events', t.srcEvents, ...capArgs('source')]);
  teardown.agent(source);
  const [s, d] = await Promise.all([source.exit, dest.exit]);
  expect(s.code, source.stderr()).toBe(0);
  expect(d.code, dest.stderr()).toBe(0);
  expect((await compareImages(t.src, t.dst)).ok).toBe(true);
  return { atD: bulkRate(readEvents(t.dstEvents), 'bytesFetchedBulk', size), atS: bulkRate(readEvents(t.srcEvents), 'bytesServedBulk', size) };
}

/** Printed for the record (the report quotes them). */
function report(what: string, cap: number, r: { bytesPerSec: number; seconds: number; samples: number }): void {
  console.log(`${what}: ${(r.bytesPerSec / MiB).toFixed(2)} MiB/s over ${r.seconds.toFixed(2)} s (${r.samples} samples), cap ${(cap / MiB).toFixed(2)} MiB/s, ${((100 * r.bytesPerSec) / cap - 100).toFixed(1)} %`);
}

describe('--max-bandwidth (two processes over TCP)', () => {
  it.each([
    { on: 'S', side: 'source' as const, rate: '16M/s' },
    { on: 'D', side: 'dest' as const, rate: '16M' },
  ])('on $on: the stream runs at the cap within 10 % (both sides measure it), and the image arrives byte-exact', async ({ on, side, rate }) => {
    const r = await cappedMigration(`cap-${on.toLowerCase()}`, side, rate, 48 * MiB);
    report(`${on} capped, measured at D`, 16 * MiB, r.atD);
    report(`${on} capped, measured at S`, 16 * MiB, r.atS);
    for (const m of [r.atD, r.atS]) {
      expect(m.bytesPerSec).toBeGreaterThan(0.9 * 16 * MiB);
      expect(m.bytesPerSec).toBeLessThan(1.1 * 16 * MiB);
    }
  });

  it("a tiny cap on both sides never holds the guest's demand reads: each waits far less than a block takes at the cap", async () => {
    const t = setup('cap-demand');
    writeRandomImage(t.src, 32 * MiB);
    const cap = 64 * KiB; // a 64 KiB block takes a second at this rate
    const port = await freePort();
    const state = join(t.dir, 'dstate');
    const common = ['--ticket-file', t.ticket, '--progress-interval', '100', '--max-bandwidth', `${cap / KiB}K`];
    const dest = startAgent(['dest', '--listen', `127.0.0.1:${port}`, '--image', t.dst, '--state-dir', state, ...common, '--events', t.dstEvents]);
    teardown.agent(dest);
    await waitForEvent(t.dstEvents, (e) => e.event === 'listening');
    const source = startAgent([
      'source', '--connect', `127.0.0.1:${port}`, '--image', t.src, ...common, '--events', t.srcEvents,
      '--guest', 'sim', '--ram', '16M', '--dirty-rate', '500', '--disk-ops', '200', '--write-ratio', '0.2', '--seed', '5',
    ]);
    teardown.agent(source);
    // The guest runs on D and reads blocks the stream has not brought (at the cap, nearly all of them).
    type Brief = { count: number; p50Ms: number; p99Ms: number };
    const sample = await waitForEvent(t.dstEvents, (e) => e.event === 'progress' && ((e.demandStages as Record<string, Brief> | undefined)?.total?.count ?? 0) >= 40, 60_000);
    const total = (sample.demandStages as Record<string, Brief>).total!;
    const blockAtCapMs = ((64 * KiB) / cap) * 1000;
    console.log(`demand reads under a ${cap / KiB} KiB/s cap: ${total.count} reads, p50 ${total.p50Ms} ms, p99 ${total.p99Ms} ms (a block at the cap: ${blockAtCapMs} ms)`);
    expect(total.p50Ms).toBeLessThan(blockAtCapMs / 10);
    expect(total.p99Ms).toBeLessThan(blockAtCapMs / 2);
    // The stream itself kept to the cap meanwhile (what S served in bulk since the link came up, plus one burst).
    const link = readEvents(t.dstEvents).find((e) => e.event === 'link' && e.state === 'up')!;
    const last = readEvents(t.srcEvents).filter((e) => e.event === 'progress').at(-1)!;
    const seconds = (Date.parse(last.ts) - Date.parse(link.ts)) / 1000;
    expect(last.bytesServedBulk as number).toBeLessThanOrEqual(cap * seconds + 256 * KiB + 64 * KiB);
  });
});
