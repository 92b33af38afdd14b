// End to end: `postcopy dest` and `postcopy source` as two real processes over TCP loopback, as an operator runs them.
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { compareImages, verifyMigration } from '../../src/guest/verify.js';
import { loadWriteMap } from '../../src/guest/write-map.js';
import { freePort, readEvents, startAgent, waitForEvent, workDir, Teardown } from './helpers/processes.js';

const MiB = 1024 * 1024;

const teardown = new Teardown();
afterEach(() => teardown.run());

function setup(name: string) {
  const w = workDir(name);
  teardown.later(w.cleanup);
  return {
    ...w,
    src: join(w.dir, 'src.img'),
    dst: join(w.dir, 'dst.img'),
    dstEvents: join(w.dir, 'dst.jsonl'),
    srcEvents: join(w.dir, 'src.jsonl'),
  };
}

describe('two processes over TCP', () => {
  it('migrates an image with no guest: S exits 0 only after COMPLETE, D exits 0, images equal', async () => {
    const t = setup('nog');
    generateDemoImage(t.src, 48 * MiB + 12288, 7); // size not a multiple of the block size
    const port = await freePort();
    const dest = startAgent(['dest', '--listen', `127.0.0.1:${port}`, '--image', t.dst, '--ticket-file', t.ticket, '--events', t.dstEvents]);
    teardown.agent(dest);
    await waitForEvent(t.dstEvents, (e) => e.event === 'listening');
    const source = startAgent(['source', '--connect', `127.0.0.1:${port}`, '--image', t.src, '--ticket-file', t.ticket, '--events', t.srcEvents]);
    teardown.agent(source);
    const [s, d] = await Promise.all([source.exit, dest.exit]);
    expect(s.code, source.stderr()).toBe(0);
    expect(d.code, dest.stderr()).toBe(0);
    const cmp = await compareImages(t.src, t.dst);
    expect(cmp.ok).toBe(true);
    // S's confirmed phase comes after D's complete phase (made durable first).
    const dComplete = readEvents(t.dstEvents).find((e) => e.event === 'phase' && e.phase === 'complete')!;
    const sConfirmed = readEvents(t.srcEvents).find((e) => e.event === 'phase' && e.phase === 'confirmed')!;
    expect(dComplete).toBeDefined();
    expect(Date.parse(sConfirmed.ts)).toBeGreaterThanOrEqual(Date.parse(dComplete.ts));
    const summary = readEvents(t.dstEvents).find((e) => e.event === 'summary')!;
    expect(Number(summary.zeroBytesSkipped)).toBeGreaterThan(0);
    // One session id on both sides from the handshake on; null only before it (D listening, S connecting).
    const dLines = readEvents(t.dstEvents);
    const sLines = readEvents(t.srcEvents);
    const dUp = dLines.findIndex((e) => e.event === 'link' && e.state === 'up');
    expect(dLines.slice(0, dUp).map((e) => e.sessionId)).toEqual(dLines.slice(0, dUp).map(() => null));
    expect(sLines[0]).toMatchObject({ event: 'phase', phase: 'connecting', sessionId: null });
    const ids = new Set([...dLines.slice(dUp), ...sLines.filter((e) => e.sessionId !== null)].map((e) => e.sessionId));
    expect([...ids]).toEqual([expect.stringMatching(/^[0-9a-f]{16,}$/)]);
    expect(sLines.at(-1)).toMatchObject({ event: 'exit', sessionId: [...ids][0] });
  });

  it('migrates a running simulated guest; D = S at cut-over overlaid with the guest writes', async () => {
    const t = setup('sim');
    generateDemoImage(t.src, 64 * MiB, 3);
    const port = await freePort();
    const state = join(t.dir, 'dstate');
    const dest = startAgent(['dest', '--listen', `127.0.0.1:${port}`, '--image', t.dst, '--state-dir', state, '--ticket-file', t.ticket, '--events', t.dstEvents]);
    teardown.agent(dest);
    const source = startAgent([
      'source', '--connect', `127.0.0.1:${port}`, '--image', t.src, '--ticket-file', t.ticket, '--events', t.srcEvents,
      '--guest', 'sim', '--ram', '32M', '--dirty-rate', '2000', '--disk-ops', '500', '--seed', '9',
    ]);
    teardown.agent(source);
    const [s, d] = await Promise.all([source.exit, dest.exit]);
    expect(s.code, source.stderr()).toBe(0);
    expect(d.code, dest.stderr()).toBe(0);
    const { map } = loadWriteMap(join(state, 'guest-writes.json'));
    expect(map.size).toBeGreaterThan(0);
    const v = await verifyMigration({ sourceImage: t.src, destImage: t.dst, writeMap: map.entries() });
    expect(v.mismatches).toEqual([]);
    expect(v.ok).toBe(true);
    const summary = readEvents(t.dstEvents).find((e) => e.event === 'summary')!;
    expect((summary.guest as { readMismatches: number }).readMismatches).toBe(0);
    // Every demand miss the guest waited for is split into its stages on D, and every urgent request S served
    // into S's; each histogram's buckets hold all of its samples.
    type Stages = Record<string, { count: number; p50Ms: number; p99Ms: number; maxMs: number; buckets: Array<[number, number]> }>;
    const dStages = summary.demandStages as Stages;
    expect(Number(summary.demandMisses)).toBeGreaterThan(0);
    expect(Object.keys(dStages)).toEqual(['export-to-queued', 'queued-to-socket', 'socket-to-reply', 'reply-to-written', 'written-to-answered', 'total']);
    expect(dStages.total!.count).toBeGreaterThan(0);
    const sSummary = readEvents(t.srcEvents).find((e) => e.event === 'summary')!;
    const sStages = sSummary.urgentStages as Stages;
    expect(sStages.total!.count).toBe((sSummary.blocks as { urgentRequests: number }).urgentRequests);
    for (const st of [...Object.values(dStages), ...Object.values(sStages)]) {
      expect(st.buckets.reduce((a, [, n]) => a + n, 0)).toBe(st.count);
      expect(st.p50Ms).toBeLessThanOrEqual(st.p99Ms);
      expect(st.p99Ms).toBeLessThanOrEqual(st.maxMs);
    }
    const cut = readEvents(t.srcEvents).find((e) => e.event === 'cutover')!;
    expect(typeof cut.downtimeMs).toBe('number');
  });

  it('refuses a source with the wrong ticket before anything starts; D keeps waiting for the right one', async () => {
    const t = setup('auth');
    generateDemoImage(t.src, 8 * MiB, 1);
    const wrong = join(t.dir, 'wrong');
    writeFileSync(wrong, 'this-is-not-the-right-secret-at-all\n');
    const port = await freePort();
    const dest = startAgent(['dest', '--listen', `127.0.0.1:${port}`, '--image', t.dst, '--ticket-file', t.ticket, '--events', t.dstEvents]);
    teardown.agent(dest);
    await waitForEvent(t.dstEvents, (e) => e.event === 'listening');
    const bad = startAgent(['source', '--connect', `127.0.0.1:${port}`, '--image', t.src, '--ticket-file', wrong, '--connect-timeout', '5']);
    teardown.agent(bad);
    const b = await bad.exit;
    expect(b.code).toBe(4);
    expect(bad.stderr()).toMatch(/could not start/);
    await waitForEvent(t.dstEvents, (e) => e.event === 'refused');
    // The destination is still there and still migrates for the right source.
    const good = startAgent(['source', '--connect', `127.0.0.1:${port}`, '--image', t.src, '--ticket-file', t.ticket]);
    teardown.agent(good);
    const [g, d] = await Promise.all([good.exit, dest.exit]);
    expect(g.code, good.stderr()).toBe(0);
    expect(d.code, dest.stderr()).toBe(0);
    expect((await compareImages(t.src, t.dst)).ok).toBe(true);
  });

  it('prints --help for each command and a one-line error for bad usage', async () => {
    for (const cmd of ['dest', 'source', 'demo', 'verify']) {
      const a = startAgent([cmd, '--help']);
      teardown.agent(a);
      expect((await a.exit).code).toBe(0);
    }
    const bad = startAgent(['dest', '--listen', 'nonsense']);
    teardown.agent(bad);
    expect((await bad.exit).code).toBe(2);
    expect(bad.stderr().trim().split('\n')).toHaveLength(1);
  });
});
