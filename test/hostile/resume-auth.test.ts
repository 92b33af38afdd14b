// Issue 10 case 4, the authentication half, with real processes (`node dist/cli/main.js`): a resume proves
// the ticket as well as the resume key, and never displaces a link that is alive.
//  - S killed mid-post-copy; an attacker holding S's state (session id and resume key) but not the ticket
//    runs `postcopy source` on S's image (with another image S's own state check refuses it before D is reached):
//    refused, nothing of it reaches D; the real S resumes and the image is byte-exact.
//  - S alive mid-post-copy; a second `postcopy source` holding S's state AND the ticket (a duplicate started by
//    mistake on S's host, with S's image; with another image S's own state check refuses it at start): refused
//    (PC_ERR_BUSY) while S's link is alive, again each time it retries, and S's link is never dropped.
//    Then S is stopped (SIGSTOP): once D declares its link dead, a rescuer with S's state resumes and completes.
import { cpSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { compareImages } from '../../src/guest/verify.js';
import { Teardown, freePort, readEvents, startAgent, waitForEvent, workDir, type EventLine } from '../e2e/helpers/processes.js';
import { throttledRelay } from '../e2e/helpers/throttled-relay.js';
import { waitUntil } from '../helpers/wait.js';
import { MiB, sleep } from './hostile-harness.js';

const teardown = new Teardown();
afterEach(() => teardown.run());

const SIZE = 64 * MiB;

function fractionPresent(e: EventLine): number {
  return e.event === 'progress' && e.phase === 'postcopy' ? Number(e.blocksPresent) / Number(e.blocksTotal) : 0;
}

/** A real D and a real S, in post-copy with some blocks present and many still to come. */
async function midPostcopy(name: string) {
  const w = workDir(name);
  teardown.later(w.cleanup);
  const src = join(w.dir, 'src.img');
  const dst = join(w.dir, 'dst.img');
  generateDemoImage(src, SIZE, 21);
  const wrongTicket = join(w.dir, 'wrong-ticket');
  writeFileSync(wrongTicket, randomBytes(24).toString('hex') + '\n', { mode: 0o600 });
  const port = await freePort();
  const dEvents = join(w.dir, 'd.jsonl');
  const sState = join(w.dir, 'sstate');
  const dest = teardown.agent(
    startAgent(['dest', '--listen', `127.0.0.1:${port}`, '--image', dst, '--state-dir', join(w.dir, 'dstate'), '--ticket-file', w.ticket, '--events', dEvents, '--bulk-window', '64K', '--progress-interval', '20']),
  );
  await waitForEvent(dEvents, (e) => e.event === 'listening');
  const sourceArgs = (state: string, image: string, ticketFile: string, events: string, to = port) => [
    'source', '--connect', `127.0.0.1:${to}`, '--image', image, '--state-dir', state, '--ticket-file', ticketFile, '--events', join(w.dir, events),
  ];
  const relay = await throttledRelay(port, 4 * MiB);
  teardown.later(relay.close);
  const source = teardown.agent(startAgent(sourceArgs(sState, src, w.ticket, 's.jsonl', relay.port)));
  await waitForEvent(dEvents, (e) => fractionPresent(e) >= 0.05, 60_000);
  expect(Math.max(...readEvents(dEvents).map(fractionPresent))).toBeLessThan(0.5);
  /** A copy of S's state dir as it is now: the session id and resume key a local reader could take. */
  const stolenState = (as: string) => {
    const to = join(w.dir, as);
    cpSync(sState, to, { recursive: true });
    return to;
  };
  return { w, src, dst, wrongTicket, dest, source, dEvents, sState, sourceArgs, stolenState };
}

const linkEvents = (path: string, state: string) => readEvents(path).filter((e) => e.event === 'link' && e.state === state);

describe('a resume proves the ticket as well as the resume key (issue 10 case 4)', () => {
  it('S killed mid-post-copy: an attacker with S\'s state but the wrong ticket is refused; the real S resumes, byte-exact', async () => {
    const m = await midPostcopy('steal');
    m.source.child.kill('SIGKILL');
    await m.source.exit;
    await waitForEvent(m.dEvents, (e) => e.event === 'link' && e.state === 'down', 10_000);
    const upsBefore = linkEvents(m.dEvents, 'up').length;

    const attacker = teardown.agent(startAgent(m.sourceArgs(m.stolenState('astate'), m.src, m.wrongTicket, 'a.jsonl')));
    const a = await Promise.race([attacker.exit, sleep(20_000).then(() => null)]);
    expect(a, 'the attacker gives up on its own').not.toBeNull();
    expect(a!.code, attacker.stderr()).not.toBe(0);
    // S's message names the failed proof (mutual: the attacker's side finds D's proof wrong and hangs up first).
    expect(attacker.stderr()).toMatch(/ticket authentication failed/);
    // D never took the attacker as its source and still waits in post-copy.
    expect(m.dest.child.exitCode).toBeNull();
    expect(linkEvents(m.dEvents, 'up')).toHaveLength(upsBefore);
    expect(readEvents(m.dEvents).some((e) => e.event === 'complete')).toBe(false);

    const again = teardown.agent(startAgent(m.sourceArgs(m.sState, m.src, m.w.ticket, 's2.jsonl')));
    const [s, d] = await Promise.all([again.exit, m.dest.exit]);
    expect(s.code, again.stderr()).toBe(0);
    expect(d.code, m.dest.stderr()).toBe(0);
    expect(linkEvents(m.dEvents, 'up').filter((e) => e.resumed === true)).toHaveLength(1);
    const cmp = await compareImages(m.src, m.dst);
    expect(cmp.firstDifference).toBeUndefined();
    expect(cmp.ok).toBe(true);
  }, 120_000);

  it('S alive: a duplicate source with S\'s state and the ticket is refused (PC_ERR_BUSY) without disturbing S; once S is stopped and its link dead, a rescuer resumes, byte-exact', async () => {
    const m = await midPostcopy('busy');
    const duplicate = teardown.agent(startAgent(m.sourceArgs(m.stolenState('dupstate'), m.src, m.w.ticket, 'dup.jsonl')));
    const busy = await waitForEvent(m.dEvents, (e) => e.event === 'refused' && e.code === 'PC_ERR_BUSY', 20_000);
    expect(String(busy.message)).toMatch(/alive/);
    // The duplicate keeps retrying (it holds a valid session) but never gets in: a second refusal proves it tried
    // again rather than gave up; S's link stays up throughout.
    const busyRefusals = () => readEvents(m.dEvents).filter((e) => e.event === 'refused' && e.code === 'PC_ERR_BUSY').length;
    await waitUntil(() => busyRefusals() >= 2 || duplicate.child.exitCode !== null, 'a second PC_ERR_BUSY refusal of the duplicate', 20_000);
    expect(duplicate.child.exitCode, duplicate.stderr()).toBeNull();
    expect(linkEvents(m.dEvents, 'down')).toEqual([]);
    expect(linkEvents(m.dEvents, 'up')).toHaveLength(1);
    duplicate.child.kill('SIGKILL');
    await duplicate.exit;

    // S stops answering (SIGSTOP): its link is alive until D's keepalive timeout, then a resume gets in.
    m.source.child.kill('SIGSTOP');
    const stoppedAt = Date.now();
    const rescuer = teardown.agent(startAgent(m.sourceArgs(m.stolenState('rescue'), m.src, m.w.ticket, 'r.jsonl')));
    const resumed = await waitForEvent(m.dEvents, (e) => e.event === 'link' && e.state === 'up' && e.resumed === true, 60_000);
    expect(Date.parse(resumed.ts) - stoppedAt).toBeGreaterThan(1000);
    const [r, d] = await Promise.all([rescuer.exit, m.dest.exit]);
    expect(r.code, rescuer.stderr()).toBe(0);
    expect(d.code, m.dest.stderr()).toBe(0);
    const cmp = await compareImages(m.src, m.dst);
    expect(cmp.firstDifference).toBeUndefined();
    expect(cmp.ok).toBe(true);
  }, 120_000);
});
