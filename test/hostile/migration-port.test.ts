// Strangers on D's migration port. While a real migration (SourceAgent with a simulated guest → DestAgent, over
// real TCP through a recording relay) sits in post-copy, hostile or broken peers connect to D: garbage, bad magic,
// an oversized declared length, a HELLO replayed from the real session, a second new session, a resume of the real
// session with a wrong proof. Each gets an ERROR frame with the right code and is disconnected, D logs the refusal
// and emits a 'refused' event, and the real migration is never disturbed: its link stays up and it completes with
// a correct image. Then, on an idle D: peers that look authenticated but are not never get an image created.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { restoreGuest } from '../../src/cli/guest-factory.js';
import { simGuestDefinition } from '../../src/cli/guest-factory.js';
import { nullEvents } from '../../src/common/events.js';
import { captureLogger } from '../guest/helpers/capture-logger.js';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { SimGuest } from '../../src/guest/sim-guest.js';
import type { SimGuestSpec } from '../../src/guest/types.js';
import { verifyMigration } from '../../src/guest/verify.js';
import { connectOnce, type Endpoint } from '../../src/link/connect.js';
import { FRAME_HEADER_SIZE, MAX_CONTROL_PAYLOAD } from '../../src/protocol/constants.js';
import { computeProof, newNonce, parseTicket } from '../../src/protocol/handshake.js';
import type { Message } from '../../src/protocol/messages.js';
import { FileImage } from '../../src/image/file-image.js';
import { SourceAgent, type SourceResult } from '../../src/source/source-agent.js';
import type { DestResult } from '../../src/dest/dest-agent.js';
import { T, buildControl, buildFrame, buildHeader } from '../helpers/frame-builder.js';
import {
  LINK_OPTS,
  MiB,
  migrateDiskOnly,
  Relay,
  WatchedImage,
  bytesOf,
  refusedLines,
  startDest,
  stranger,
  ticket,
  waitFor,
  type DestOnly,
  type Exchange,
} from './hostile-harness.js';

const hello = (nonce = newNonce(), resumeSession?: string): Message => ({
  type: 'HELLO',
  versions: [1, 1],
  caps: ['zero-extents', 'ram-precopy', 'resume'],
  nonce,
  ...(resumeSession !== undefined ? { resumeSession } : {}),
});

/** What D said, keepalive aside (D pings any silent peer, authenticated or not). */
const typesOf = (x: Exchange) => x.messages.map((m) => m.type).filter((t) => t !== 'PING' && t !== 'PONG');

/** The stranger got exactly one ERROR with `code`, was disconnected, and D logged and emitted the refusal. */
function expectRefused(d: DestOnly, x: Exchange, code: string, before: { lines: number; events: number }): void {
  expect(x.error, `ERROR frame; got ${JSON.stringify(x.messages.map((m) => m.type))}`).toBeDefined();
  expect(x.error!.code).toBe(code);
  expect(x.messages.filter((m) => m.type === 'ERROR')).toHaveLength(1);
  expect(x.closed, 'disconnected').toBe(true);
  const lines = refusedLines(d.lines).slice(before.lines);
  expect(lines).toHaveLength(1);
  expect(lines[0]!.code).toBe(code);
  expect(lines[0]!.role).toBe('dest');
  const events = d.events.named('refused').slice(before.events);
  expect(events).toHaveLength(1);
  expect(events[0]!.code).toBe(code);
}

describe('strangers on D\'s migration port while a real migration runs', () => {
  let d: DestOnly;
  let relay: Relay;
  let image: WatchedImage;
  let src: string;
  let sourceGuest: SimGuest;
  let run: Promise<SourceResult>;
  let sessionId: string;
  const mark = () => ({ lines: refusedLines(d.lines).length, events: d.events.named('refused').length });

  beforeAll(async () => {
    let destRef: DestOnly | null = null;
    const { log: guestLog } = captureLogger('silent');
    d = destRef = await startDest({
      createGuest: (def, ram, state) => restoreGuest(def, ram, state, destRef!.dest.store!.size, guestLog),
    });
    src = join(d.dir, 'src.img');
    generateDemoImage(src, 8 * MiB, 11);
    relay = new Relay(d.endpoint);
    const relayEp = await relay.listen();
    const file = FileImage.open(src, { writable: true });
    image = new WatchedImage(file);
    // Hold S's block reads: the migration stays in post-copy, link up, until the last test lets it finish.
    image.hold();
    const spec: SimGuestSpec = { kind: 'sim', seed: 11, ramBytes: 2 * MiB, dirtyPagesPerSec: 2000, diskOpsPerSec: 500, writeRatio: 0.4, residentFraction: 0.5 };
    sourceGuest = new SimGuest(spec, { diskSize: file.size, log: guestLog });
    const source = new SourceAgent({
      connect: relayEp,
      image,
      guestDisk: file,
      guest: sourceGuest,
      guestDefinition: simGuestDefinition(spec),
      ticket: ticket(),
      blockSize: 64 * 1024,
      maxDowntimeMs: 50,
      connectTimeoutMs: 5000,
      log: guestLog,
      events: nullEvents,
      link: LINK_OPTS,
      openSocket: (ep: Endpoint) => connectOnce(ep, 2000),
    });
    run = source.run();
    run.catch(() => {});
    await waitFor(() => d.dest.phase === 'postcopy', 'cut-over', 10_000);
    const welcome = relay.downMessages(0).find((m) => m.type === 'WELCOME');
    if (welcome?.type !== 'WELCOME') throw new Error('no WELCOME seen by the relay');
    sessionId = welcome.sessionId;
  });

  afterAll(async () => {
    image?.release();
    await sourceGuest?.pause();
    await (d?.dest.guest as SimGuest | null)?.pause();
    relay?.close();
    await d?.cleanup();
  });

  /** After each stranger: the real migration is where it was, on the same link. */
  function expectUndisturbed(): void {
    expect(d.dest.phase).toBe('postcopy');
    expect(d.dest.linkUp).toBe(true);
    expect(d.events.named('link').filter((e) => e.state === 'down')).toEqual([]);
  }

  it('garbage bytes (an HTTP request): PC_ERR_BAD_MAGIC', async () => {
    const before = mark();
    const x = await stranger(d.endpoint, ({ socket }) => void socket.write('GET / HTTP/1.1\r\nHost: dest\r\n\r\n'));
    expectRefused(d, x, 'PC_ERR_BAD_MAGIC', before);
    expectUndisturbed();
  });

  it('a well-formed frame with a bad magic: PC_ERR_BAD_MAGIC', async () => {
    const before = mark();
    const x = await stranger(d.endpoint, ({ socket }) => {
      const frame = bytesOf(hello());
      frame.write('PCY2', 0, 'latin1');
      socket.write(frame);
    });
    expectRefused(d, x, 'PC_ERR_BAD_MAGIC', before);
    expectUndisturbed();
  });

  it('an unknown frame type and a bad checksum: PC_ERR_UNKNOWN_TYPE, PC_ERR_CHECKSUM', async () => {
    let before = mark();
    let x = await stranger(d.endpoint, ({ socket }) => void socket.write(buildFrame({ type: 99, payload: Buffer.from('{}') })));
    expectRefused(d, x, 'PC_ERR_UNKNOWN_TYPE', before);
    before = mark();
    x = await stranger(d.endpoint, ({ socket }) => void socket.write(buildFrame({ type: T.HELLO, flags: 1, payload: Buffer.from('{}'), crc: 1234 })));
    expectRefused(d, x, 'PC_ERR_CHECKSUM', before);
    expectUndisturbed();
  });

  it('an oversized declared length is refused when the header arrives; memory does not grow by it', async () => {
    // Allocated before the baseline: what the test itself sends must not count as D's memory.
    const flood = Buffer.alloc(32 * MiB, 0x41);
    global.gc?.();
    const base = process.memoryUsage();
    const before = mark();
    const started = performance.now();
    let refusedAfterMs = -1;
    const x = await stranger(d.endpoint, async ({ socket, until }) => {
      // Just the 20-byte header of a 4 GiB BLOCK_DATA: the refusal must not wait for any payload.
      socket.write(buildHeader({ type: T.BLOCK_DATA, id: 1, length: 0xfffffff0 }));
      await until((m) => m.some((y) => y.type === 'ERROR'));
      refusedAfterMs = performance.now() - started;
      // Then keep pushing payload at it: D has stopped reading and buffers none of it.
      socket.write(flood);
    });
    expectRefused(d, x, 'PC_ERR_FRAME_TOO_LARGE', before);
    expect(refusedAfterMs).toBeGreaterThanOrEqual(0);
    expect(refusedAfterMs).toBeLessThan(LINK_OPTS.handshakeTimeoutMs);
    const now = process.memoryUsage();
    // Far below both the declared 4 GiB and the 32 MiB pushed after the header.
    expect(now.arrayBuffers - base.arrayBuffers).toBeLessThan(16 * MiB);
    expect(now.rss - base.rss).toBeLessThan(64 * MiB);
    // A control frame just over its own (smaller) cap, likewise.
    const before2 = mark();
    const y = await stranger(d.endpoint, ({ socket }) => void socket.write(buildHeader({ type: T.HELLO, flags: 1, length: MAX_CONTROL_PAYLOAD + 1 })));
    expectRefused(d, y, 'PC_ERR_FRAME_TOO_LARGE', before2);
    expect(y.received.length).toBeGreaterThan(FRAME_HEADER_SIZE);
    expectUndisturbed();
  });

  it('a HELLO replayed byte for byte from the real session (captured by the relay): PC_ERR_AUTH', async () => {
    const captured = relay.firstUpFrame(0);
    const original = relay.upMessages(0)[0]!;
    expect(original.type).toBe('HELLO');
    const before = mark();
    const x = await stranger(d.endpoint, ({ socket }) => void socket.write(captured));
    expectRefused(d, x, 'PC_ERR_AUTH', before);
    expect(x.error!.message).toMatch(/replayed nonce/);
    // Refused at HELLO: no CHALLENGE (nothing to build a proof on) went out.
    expect(typesOf(x)).toEqual(['ERROR']);
    expectUndisturbed();
  });

  it('a second new session, even from a peer holding the ticket: PC_ERR_UNEXPECTED', async () => {
    const before = mark();
    const x = await stranger(d.endpoint, ({ socket }) => void socket.write(bytesOf(hello())));
    expectRefused(d, x, 'PC_ERR_UNEXPECTED', before);
    expect(x.error!.message).toMatch(/already in progress/);
    expect(typesOf(x)).toEqual(['ERROR']);
    expectUndisturbed();
  });

  it('a resume of the real session (its id seen on the wire) with a wrong proof: PC_ERR_AUTH, the real link stays', async () => {
    const before = mark();
    const x = await stranger(d.endpoint, async ({ socket, until, messages }) => {
      const nonce = newNonce();
      socket.write(bytesOf(hello(nonce, sessionId)));
      await until((m) => m.some((y) => y.type === 'CHALLENGE'));
      const ch = messages().find((m) => m.type === 'CHALLENGE');
      if (ch?.type !== 'CHALLENGE') throw new Error('no CHALLENGE');
      // The best a stranger can do: a proof made with the ticket (it has no resume key), or D's own proof reflected.
      socket.write(bytesOf({ type: 'AUTH', proof: computeProof(ticket().secret, 'source', nonce, ch.nonce, sessionId) }));
    });
    expectRefused(d, x, 'PC_ERR_AUTH', before);
    const before2 = mark();
    const y = await stranger(d.endpoint, async ({ socket, until, messages }) => {
      socket.write(bytesOf(hello(newNonce(), sessionId)));
      await until((m) => m.some((z) => z.type === 'CHALLENGE'));
      const ch = messages().find((m) => m.type === 'CHALLENGE');
      if (ch?.type !== 'CHALLENGE') throw new Error('no CHALLENGE');
      socket.write(bytesOf({ type: 'AUTH', proof: ch.proof }));
    });
    expectRefused(d, y, 'PC_ERR_AUTH', before2);
    expectUndisturbed();
  });

  it('a resume of an unknown session: PC_ERR_AUTH', async () => {
    const before = mark();
    const x = await stranger(d.endpoint, ({ socket }) => void socket.write(bytesOf(hello(newNonce(), 'ab'.repeat(16)))));
    expectRefused(d, x, 'PC_ERR_AUTH', before);
    expect(x.error!.message).toMatch(/unknown session/);
    expectUndisturbed();
  });

  it('the real migration then completes, never having lost its link, with a correct image', async () => {
    const refusals = d.events.named('refused').length;
    expect(refusals).toBeGreaterThanOrEqual(11);
    image.release();
    const [s, dr] = (await Promise.all([run, d.dest.done])) as [SourceResult, DestResult];
    expect(s.phase).toBe('confirmed');
    expect(dr.phase).toBe('confirmed');
    expect(s.reconnects).toBe(0);
    expect(dr.resumes).toBe(0);
    expect(d.events.named('link').filter((e) => e.state === 'down')).toEqual([]);
    expect(image.readsOutside).toBe(0);
    const g = d.dest.guest as SimGuest;
    await g.pause();
    const v = await verifyMigration({ sourceImage: src, destImage: d.dst, writeMap: g.writeMapEntries() });
    expect(v.mismatches).toEqual([]);
    expect(v.ok).toBe(true);
    expect(g.stats.readMismatches).toBe(0);
  });
});

describe('a peer that looks authenticated but is not, on an idle D', () => {
  let d: DestOnly;
  beforeAll(async () => {
    d = await startDest();
  });
  afterAll(async () => {
    await d?.cleanup();
  });
  const mark = () => ({ lines: refusedLines(d.lines).length, events: d.events.named('refused').length });
  const begin = (): Message => ({ type: 'BEGIN', guest: null, size: 4 * MiB, blockSize: 64 * 1024, cookie: 'c00c1e' });

  /** Nothing of a migration exists on D: no image, no bitmap, no session state; D is still idle. */
  function expectNothingCreated(): void {
    expect(existsSync(d.dst)).toBe(false);
    expect(existsSync(d.stateDir) ? readdirSync(d.stateDir) : []).toEqual([]);
    expect(d.dest.phase).toBe('idle');
    expect(d.dest.store).toBeNull();
  }

  it('a proof made with a wrong ticket, BEGIN pipelined right behind it: PC_ERR_AUTH, no image', async () => {
    const wrong = parseTicket('not-the-ticket-but-long-enough-0123');
    const before = mark();
    const x = await stranger(d.endpoint, async ({ socket, until, messages }) => {
      const nonce = newNonce();
      socket.write(bytesOf(hello(nonce)));
      await until((m) => m.some((y) => y.type === 'CHALLENGE'));
      const ch = messages().find((m) => m.type === 'CHALLENGE');
      if (ch?.type !== 'CHALLENGE') throw new Error('no CHALLENGE');
      // Guest data right behind the forged AUTH, in the same write: it must never be acted on.
      socket.write(Buffer.concat([bytesOf({ type: 'AUTH', proof: computeProof(wrong.secret, 'source', nonce, ch.nonce) }), bytesOf(begin())]));
    });
    expectRefused(d, x, 'PC_ERR_AUTH', before);
    expect(typesOf(x)).toEqual(['CHALLENGE', 'ERROR']);
    await new Promise((r) => setTimeout(r, 50));
    expectNothingCreated();
  });

  it('D\'s own proof reflected back as AUTH: PC_ERR_AUTH, no image', async () => {
    const before = mark();
    const x = await stranger(d.endpoint, async ({ socket, until, messages }) => {
      socket.write(bytesOf(hello()));
      await until((m) => m.some((y) => y.type === 'CHALLENGE'));
      const ch = messages().find((m) => m.type === 'CHALLENGE');
      if (ch?.type !== 'CHALLENGE') throw new Error('no CHALLENGE');
      socket.write(Buffer.concat([bytesOf({ type: 'AUTH', proof: ch.proof }), bytesOf(begin())]));
    });
    expectRefused(d, x, 'PC_ERR_AUTH', before);
    expectNothingCreated();
  });

  it('skipping AUTH and sending BEGIN (all in one write with the HELLO): PC_ERR_UNEXPECTED, no image', async () => {
    const before = mark();
    const x = await stranger(d.endpoint, ({ socket }) => void socket.write(Buffer.concat([bytesOf(hello()), bytesOf(begin())])));
    expectRefused(d, x, 'PC_ERR_UNEXPECTED', before);
    expect(x.error!.message).toMatch(/got BEGIN, expected AUTH/);
    expectNothingCreated();
  });

  it('an empty or short nonce: PC_ERR_AUTH, no image', async () => {
    const before = mark();
    const x = await stranger(d.endpoint, ({ socket }) => void socket.write(buildControl(T.HELLO, { versions: [1, 1], caps: [], nonce: 'ab' })));
    expectRefused(d, x, 'PC_ERR_AUTH', before);
    expectNothingCreated();
  });

  it('afterwards a real source (no guest) still migrates to that D', async () => {
    const r = await migrateDiskOnly(d, 3);
    expect(r.source.phase).toBe('confirmed');
    expect(r.dest.phase).toBe('confirmed');
    expect(r.cmp).toEqual({ ok: true, sizes: { a: 2 * MiB, b: 2 * MiB } });
  });
});
