// End to end across a long, narrow path: real `postcopy dest` and `postcopy source` processes, S connecting through
// the loopback WAN emulator (bench/lib/wan-proxy.ts, in this process), a simulated guest reading and writing on D
// while the disk arrives. The link is cut mid-stream, or the path changes under the migration; either way both agents
// exit 0 and D's image is S's at cut-over overlaid with the guest's writes, byte for byte. Default options only.
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { WanProxy, type WanPath } from '../../bench/lib/wan-proxy.js';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { verifyMigration } from '../../src/guest/verify.js';
import { loadWriteMap } from '../../src/guest/write-map.js';
import { waitUntil } from '../helpers/wait.js';
import { freePort, readEvents, startAgent, waitForEvent, workDir, Teardown, type EventLine } from './helpers/processes.js';

const MiB = 1024 * 1024;

const teardown = new Teardown();
afterEach(() => teardown.run());

/** Share of the image D holds, from a post-copy progress event (0 for any other event). */
const held = (e: EventLine) => (e.event === 'progress' && e.phase === 'postcopy' ? Number(e.blocksPresent) / Number(e.blocksTotal) : 0);
const heldNow = (events: string) => Math.max(0, ...readEvents(events).map(held));

/** D listening, the proxy in front of it on `path`, S connecting through it with a simulated guest. */
async function start(name: string, path: WanPath) {
  const w = workDir(name);
  teardown.later(w.cleanup);
  const f = (n: string) => join(w.dir, n);
  generateDemoImage(f('src.img'), 56 * MiB, 21);
  const port = await freePort();
  const dest = teardown.agent(
    startAgent(['dest', '--listen', `127.0.0.1:${port}`, '--image', f('dst.img'), '--state-dir', f('dstate'), '--ticket-file', w.ticket, '--events', f('d.jsonl'), '--progress-interval', '20']),
  );
  await waitForEvent(f('d.jsonl'), (e) => e.event === 'listening');
  const proxy = await WanProxy.start({ target: { port }, ...path });
  teardown.later(() => proxy.close());
  const source = teardown.agent(
    startAgent([
      'source', '--connect', `127.0.0.1:${proxy.port}`, '--image', f('src.img'), '--ticket-file', w.ticket, '--events', f('s.jsonl'),
      '--guest', 'sim', '--ram', '32M', '--dirty-rate', '2000', '--disk-ops', '500', '--seed', '9',
    ]),
  );
  return { f, dest, source, proxy, dEvents: f('d.jsonl'), sEvents: f('s.jsonl') };
}

/** Both agents exit 0; D = S at cut-over overlaid with every guest write; the guest never read a wrong byte. */
async function expectByteExact(t: Awaited<ReturnType<typeof start>>): Promise<void> {
  const [s, d] = await Promise.all([t.source.exit, t.dest.exit]);
  expect(s.code, t.source.stderr()).toBe(0);
  expect(d.code, t.dest.stderr()).toBe(0);
  const { map } = loadWriteMap(join(t.f('dstate'), 'guest-writes.json'));
  expect(map.size).toBeGreaterThan(0);
  const v = await verifyMigration({ sourceImage: t.f('src.img'), destImage: t.f('dst.img'), writeMap: map.entries() });
  expect(v.mismatches).toEqual([]);
  expect(v.ok).toBe(true);
  const summary = readEvents(t.dEvents).find((e) => e.event === 'summary')!;
  expect((summary.guest as { readMismatches: number }).readMismatches).toBe(0);
  expect(Number(summary.demandMisses)).toBeGreaterThan(0);
}

describe('across a WAN (loopback emulator)', () => {
  it('60 ms RTT through 40 MiB/s, the link cut three times mid-stream: completes byte-exact', async () => {
    const t = await start('wan-cuts', { rttMs: 60, rateBytesPerSec: 40 * MiB });
    const cutAt: number[] = [];
    for (const fraction of [0.25, 0.5, 0.75]) {
      await waitForEvent(t.dEvents, (e) => held(e) >= fraction, 30_000);
      const accepted = t.proxy.stats().connections;
      expect(t.proxy.stats().open, 'a connection to cut').toBeGreaterThan(0);
      t.proxy.cutAll();
      cutAt.push(heldNow(t.dEvents));
      // S comes back through the same path (a new connection the proxy accepts) and the session resumes.
      await waitUntil(() => t.proxy.stats().connections > accepted, 'S to reconnect through the proxy', 20_000);
    }
    // Every cut landed before D held the whole image.
    expect(Math.max(...cutAt)).toBeLessThan(1);
    await expectByteExact(t);
    const sSummary = readEvents(t.sEvents).find((e) => e.event === 'summary')!;
    expect(Number(sSummary.reconnects)).toBeGreaterThanOrEqual(3);
    expect(t.proxy.stats().connections).toBeGreaterThanOrEqual(4);
  }, 60_000);

  it('the path lengthens mid-stream (10 → 80 ms RTT, 40 MiB/s): completes byte-exact', async () => {
    const t = await start('wan-path', { rttMs: 10, rateBytesPerSec: 40 * MiB });
    await waitForEvent(t.dEvents, (e) => held(e) >= 0.3, 30_000);
    t.proxy.setPath({ rttMs: 80, rateBytesPerSec: 40 * MiB });
    const changedAt = heldNow(t.dEvents);
    await expectByteExact(t);
    expect(changedAt).toBeLessThan(1);
    // The bytes after the change took the long path (the proxy carried all of the run on one connection or more).
    expect(t.proxy.stats().path.rttMs).toBe(80);
    expect(t.proxy.stats().toTarget.bytesOut).toBeGreaterThan(0);
  }, 60_000);
});
