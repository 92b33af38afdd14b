// Crash safety with real processes: SIGKILL of D or of S after cut-over, at several points of the
// post-copy, then a restart with the same state dir; the migration completes and D's image equals S's.
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { compareImages } from '../../src/guest/verify.js';
import { freePort, readEvents, startAgent, waitForEvent, workDir, Teardown, type EventLine } from './helpers/processes.js';
import { throttledRelay } from './helpers/throttled-relay.js';

const MiB = 1024 * 1024;

const teardown = new Teardown();
afterEach(() => teardown.run());

function fractionPresent(e: EventLine): number {
  return e.event === 'progress' && e.phase === 'postcopy' ? Number(e.blocksPresent) / Number(e.blocksTotal) : 0;
}

async function scenario(victim: 'dest' | 'source', atFraction: number): Promise<void> {
  const w = workDir(`kill-${victim}`);
  teardown.later(w.cleanup);
  const src = join(w.dir, 'src.img');
  const dst = join(w.dir, 'dst.img');
  generateDemoImage(src, 96 * MiB, 11);
  const port = await freePort();
  const dstArgs = [
    'dest', '--listen', `127.0.0.1:${port}`, '--image', dst, '--state-dir', join(w.dir, 'dstate'), '--ticket-file', w.ticket,
    // A small window slows the stream down so the kill lands mid-way.
    '--bulk-window', '128K', '--progress-interval', '20',
  ];
  // S's bytes through a relay capped at 24 MiB/s: the last tenth of the image takes ~0.4 s, so a kill at 90% lands
  // before the copy is done (unthrottled it sometimes did not: the source finished first).
  const relay = await throttledRelay(port, 24 * MiB);
  teardown.later(relay.close);
  const srcArgs = ['source', '--connect', `127.0.0.1:${relay.port}`, '--image', src, '--state-dir', join(w.dir, 'sstate'), '--ticket-file', w.ticket];
  const dEvents = join(w.dir, 'd.jsonl');
  const sEvents = join(w.dir, 's.jsonl');
  let dest = startAgent([...dstArgs, '--events', dEvents]);
  teardown.agent(dest);
  await waitForEvent(dEvents, (e) => e.event === 'listening');
  let source = startAgent([...srcArgs, '--events', sEvents]);
  teardown.agent(source);
  await waitForEvent(dEvents, (e) => fractionPresent(e) >= atFraction, 60_000);
  const killed = victim === 'dest' ? dest : source;
  killed.child.kill('SIGKILL');
  await killed.exit;
  const presentAtKill = Math.max(...readEvents(dEvents).map(fractionPresent));
  expect(presentAtKill).toBeLessThan(1);
  if (victim === 'dest') {
    dest = startAgent([...dstArgs, '--events', dEvents]);
    teardown.agent(dest);
  } else {
    source = startAgent([...srcArgs, '--events', sEvents]);
    teardown.agent(source);
  }
  const [s, d] = await Promise.all([source.exit, dest.exit]);
  expect(s.code, source.stderr()).toBe(0);
  expect(d.code, dest.stderr()).toBe(0);
  const victimLines = readEvents(victim === 'dest' ? dEvents : sEvents);
  const restartAt = victimLines.findIndex((e) => e.event === 'phase' && e.restarted === true);
  expect(restartAt).toBeGreaterThan(0);
  // The restarted agent resumes the session: every line from its restart on names the survivor's session.
  const sessionId = readEvents(victim === 'dest' ? sEvents : dEvents).at(-1)!.sessionId;
  expect(sessionId).toEqual(expect.any(String));
  expect(new Set(victimLines.slice(restartAt).map((e) => e.sessionId))).toEqual(new Set([sessionId]));
  const cmp = await compareImages(src, dst);
  expect(cmp.firstDifference).toBeUndefined();
  expect(cmp.ok).toBe(true);
}

describe('SIGKILL after cut-over, then restart with the same state dir', () => {
  for (const victim of ['dest', 'source'] as const) {
    for (const at of [0.05, 0.5, 0.9]) {
      it(`${victim} killed at ${Math.round(at * 100)}% present`, () => scenario(victim, at), 120_000);
    }
  }
});
