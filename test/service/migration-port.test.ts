// One migration port, many dest jobs: real DestAgents registered on a SharedMigrationPort, real SourceAgents over
// loopback TCP. Two migrations with different tickets through the same port both complete byte-exact; strangers
// (unknown ticket, garbage, silence, an oversized frame, a frame that is not HELLO) are cut off with an ERROR frame,
// one log line and a `refused` event, and never disturb the jobs; a resume after a cut reaches its own job.
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FileImage } from '../../src/image/file-image.js';
import { MAX_PREAUTH_CONNECTIONS } from '../../src/protocol/constants.js';
import { newNonce, ticketId } from '../../src/protocol/handshake.js';
import type { Message } from '../../src/protocol/messages.js';
import { buildHeader, T } from '../helpers/frame-builder.js';
import { LINK_OPTS, WatchedImage, bytesOf, refusedLines, stranger, waitFor, type Exchange, type LogLines, type RecordingEvents } from '../hostile/hostile-harness.js';
import { CuttableRelay, finished, newTicket, portPki, sourceFor, startJob, startPort, type PortJob } from './port-harness.js';

const hello = (extra: { ticketId?: string; resumeSession?: string } = {}): Message => ({
  type: 'HELLO',
  versions: [1, 1],
  caps: ['zero-extents', 'ram-precopy', 'resume'],
  nonce: newNonce(),
  ...extra,
});

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function portWithJobs(names: string[]) {
  const p = await startPort();
  cleanups.push(() => p.port.close());
  const jobs: PortJob[] = [];
  for (const [i, name] of names.entries()) {
    const job = await startJob(p.port, name, 100 + i);
    cleanups.push(() => job.cleanup());
    jobs.push(job);
  }
  return { ...p, jobs };
}

/** Exactly one ERROR with `code`, the stranger disconnected, one refusal log line and one `refused` event on the port. */
function expectRefused(x: Exchange, code: string, lines: LogLines, events: RecordingEvents, before: { lines: number; events: number }): void {
  expect(x.error?.code, `ERROR frame; got ${JSON.stringify(x.messages.map((m) => m.type))}`).toBe(code);
  expect(x.messages.filter((m) => m.type === 'ERROR')).toHaveLength(1);
  expect(x.closed, 'disconnected').toBe(true);
  const l = refusedLines(lines).slice(before.lines);
  expect(l).toHaveLength(1);
  expect(l[0]!.code).toBe(code);
  const e = events.named('refused').slice(before.events);
  expect(e).toHaveLength(1);
  expect(e[0]!.code).toBe(code);
}

describe('SharedMigrationPort', () => {
  it('two dest jobs behind one port: two sources with different tickets both complete byte-exact', async () => {
    const { port, endpoint, jobs } = await portWithJobs(['a', 'b']);
    expect(port.registeredTickets).toBe(2);
    const [a, b] = jobs as [PortJob, PortJob];
    const runs = [sourceFor(a, endpoint).run, sourceFor(b, endpoint).run];
    const [ra, rb] = await Promise.all([finished(a, runs[0]!), finished(b, runs[1]!)]);
    expect(ra.identical).toBe(true);
    expect(rb.identical).toBe(true);
    await a.dest.close();
    await b.dest.close();
    expect(port.registeredTickets).toBe(0);
  });

  it('over mutual TLS: two sources reach their jobs byte-exact; a plain-TCP stranger is refused at the TLS layer', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pc-port-pki-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const pki = portPki(dir);
    const p = await startPort({ tls: pki.port });
    cleanups.push(() => p.port.close());
    const jobs = await Promise.all(['ta', 'tb'].map((name, i) => startJob(p.port, name, 200 + i)));
    for (const j of jobs) cleanups.push(() => j.cleanup());
    const before = p.events.named('refused').length;
    const x = await stranger(p.endpoint, ({ socket }) => void socket.write(bytesOf(hello({ ticketId: ticketId(jobs[0]!.ticket) }))));
    expect(x.closed).toBe(true);
    expect(x.messages).toEqual([]);
    await waitFor(() => p.events.named('refused').length > before, 'the TLS refusal');
    expect(p.events.named('refused').at(-1)!.code).toBe('TLS');
    const results = await Promise.all(jobs.map((j) => finished(j, sourceFor(j, p.endpoint, undefined, pki.source).run)));
    expect(results.map((r) => r.identical)).toEqual([true, true]);
  });

  it('strangers are refused while two migrations sit in post-copy, which then complete undisturbed', async () => {
    const { endpoint, jobs, lines, events } = await portWithJobs(['a', 'b']);
    const [a, b] = jobs as [PortJob, PortJob];
    // S's block reads held: both stay in post-copy with their links up while the strangers come.
    const held = [a, b].map((j) => {
      const image = new WatchedImage(FileImage.open(j.src));
      image.hold();
      return sourceFor(j, endpoint, image);
    });
    await waitFor(() => a.dest.phase === 'postcopy' && b.dest.phase === 'postcopy', 'both in post-copy', 10_000);
    const mark = () => ({ lines: refusedLines(lines).length, events: events.named('refused').length });
    const undisturbed = () => {
      for (const j of [a, b]) {
        expect(j.dest.phase).toBe('postcopy');
        expect(j.dest.linkUp).toBe(true);
      }
    };
    const cases: Array<[string, string, (s: Socket) => void, number?]> = [
      ['an unknown ticket', 'PC_ERR_BUSY', (s) => void s.write(bytesOf(hello({ ticketId: ticketId(newTicket('nobody')) })))],
      ['a HELLO without a ticket id while two jobs share the port', 'PC_ERR_VERSION', (s) => void s.write(bytesOf(hello()))],
      ['garbage (an HTTP request)', 'PC_ERR_BAD_MAGIC', (s) => void s.write('GET / HTTP/1.1\r\nHost: d\r\n\r\n')],
      ['an oversized declared length', 'PC_ERR_FRAME_TOO_LARGE', (s) => void s.write(buildHeader({ type: T.HELLO, flags: 1, length: 4097 }))],
      ['AUTH before HELLO', 'PC_ERR_UNEXPECTED', (s) => void s.write(bytesOf({ type: 'AUTH', proof: 'ab'.repeat(32) }))],
      ['a HELLO cut short, then silence', 'PC_ERR_TIMEOUT', (s) => void s.write(bytesOf(hello()).subarray(0, 30))],
      ['silence', 'PC_ERR_TIMEOUT', () => {}],
    ];
    for (const [what, code, script] of cases) {
      const before = mark();
      const started = Date.now();
      const x = await stranger(endpoint, ({ socket }) => script(socket), LINK_OPTS.handshakeTimeoutMs + 2000);
      expectRefused(x, code, lines, events, before);
      // Cut off within the handshake's time box (plus the linger after our FIN, for a peer that does not close).
      expect(Date.now() - started, what).toBeLessThan(LINK_OPTS.handshakeTimeoutMs + 1500);
      undisturbed();
    }
    for (const h of held) h.image.release();
    const [ra, rb] = await Promise.all([finished(a, held[0]!.run), finished(b, held[1]!.run)]);
    expect(ra.identical).toBe(true);
    expect(rb.identical).toBe(true);
  });

  it('a resume after a cut reaches the job of its ticket, and completes byte-exact', async () => {
    const { endpoint, jobs } = await portWithJobs(['a', 'b']);
    const [a, b] = jobs as [PortJob, PortJob];
    const relay = new CuttableRelay(endpoint);
    cleanups.push(() => relay.close());
    const viaRelay = await relay.listen();
    const image = new WatchedImage(FileImage.open(b.src));
    image.hold();
    const sb = sourceFor(b, viaRelay, image);
    await waitFor(() => b.dest.phase === 'postcopy', 'b in post-copy', 10_000);
    relay.cut();
    await waitFor(() => relay.connections >= 2 && b.dest.linkUp, 'S resumed through the port', 10_000);
    const resume = relay.firstUp(1);
    expect(resume?.type).toBe('HELLO');
    if (resume?.type !== 'HELLO') return;
    expect(resume.resumeSession).toBeDefined();
    expect(resume.ticketId).toBe(ticketId(b.ticket));
    // The other job never saw a session.
    expect(a.dest.phase).toBe('idle');
    image.release();
    const rb = await finished(b, sb.run);
    expect(rb.identical).toBe(true);
    const ra = await finished(a, sourceFor(a, endpoint).run);
    expect(ra.identical).toBe(true);
  });

  it('a HELLO without a ticket id (an older source) goes to the one job on the port', async () => {
    const { endpoint, jobs, lines } = await portWithJobs(['only']);
    const x = await stranger(endpoint, async ({ socket, until }) => {
      socket.write(bytesOf(hello()));
      await until((m) => m.some((y) => y.type === 'CHALLENGE'));
      socket.destroy();
    }, 2000);
    expect(x.messages.map((m) => m.type)).toContain('CHALLENGE');
    expect(refusedLines(lines)).toEqual([]);
    expect(jobs[0]!.dest.phase).toBe('idle');
  });

  it('with one job on the port, an unknown ticket is still refused at the port, not handed to that job', async () => {
    const { endpoint, lines, events } = await portWithJobs(['only']);
    const before = { lines: refusedLines(lines).length, events: events.named('refused').length };
    const x = await stranger(endpoint, ({ socket }) => void socket.write(bytesOf(hello({ ticketId: ticketId(newTicket('nobody')) }))));
    expectRefused(x, 'PC_ERR_BUSY', lines, events, before);
    expect(x.messages.map((m) => m.type)).not.toContain('CHALLENGE');
  });

  it('each refusal gives its pre-authentication slot back: after more refusals than the cap, a real source still gets in', async () => {
    const { endpoint, jobs, events } = await portWithJobs(['a']);
    for (let i = 0; i < MAX_PREAUTH_CONNECTIONS + 4; i++) {
      const x = await stranger(endpoint, ({ socket }) => void socket.write('garbage, not a frame, long enough to hold a header'));
      expect(x.error?.code, `stranger ${i}`).toBe('PC_ERR_BAD_MAGIC');
    }
    expect(events.named('refused').filter((e) => e.code === 'PC_ERR_BUSY')).toEqual([]);
    const r = await finished(jobs[0]!, sourceFor(jobs[0]!, endpoint).run);
    expect(r.identical).toBe(true);
  });

  it('a ticket registered twice is refused; a closed job leaves the port to the next holder of its ticket', async () => {
    const { port, jobs } = await portWithJobs(['same']);
    await expect(startJob(port, 'same', 7)).rejects.toThrow(/already holds ticket/);
    expect(port.registeredTickets).toBe(1);
    await jobs[0]!.cleanup();
    expect(port.registeredTickets).toBe(0);
    const again = await startJob(port, 'same', 8);
    cleanups.push(() => again.cleanup());
    expect(port.registeredTickets).toBe(1);
  });

  it('the pre-authentication cap holds across the port: silent peers beyond it are refused PC_ERR_BUSY at once', async () => {
    const { endpoint, lines, events } = await portWithJobs(['a']);
    const sockets = await Promise.all(
      Array.from({ length: MAX_PREAUTH_CONNECTIONS }, async () => {
        const s = connect(endpoint.port, endpoint.host);
        s.on('error', () => {});
        await new Promise((r) => s.once('connect', r));
        return s;
      }),
    );
    cleanups.push(() => sockets.forEach((s) => s.destroy()));
    const before = { lines: refusedLines(lines).length, events: events.named('refused').length };
    const x = await stranger(endpoint, () => {}, 1000);
    expect(x.error?.code).toBe('PC_ERR_BUSY');
    expect(refusedLines(lines).length).toBe(before.lines);
    expect(events.named('refused').slice(before.events).some((e) => e.code === 'PC_ERR_BUSY')).toBe(true);
  });
});
