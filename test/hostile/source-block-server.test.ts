// A fake D against a real SourceAgent: it completes the handshake properly (it holds the ticket; handshakeAsDest),
// then sends S's block server hostile requests: out-of-range offsets, a duplicate request id, a flood past
// MAX_OUTSTANDING_REQUESTS, message types S must not take, and a BLOCK_REQ before BEGIN. Each time S answers with an
// ERROR frame of the right code and closes, never reads outside its image, keeps its memory bounded, and (the
// migration not having reached cut-over) rolls back with its guest still its own.
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { nullEvents } from '../../src/common/events.js';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import type { Link } from '../../src/link/link.js';
import { CLASS_BULK, CLASS_URGENT } from '../../src/protocol/constants.js';
import { FrameDecoder } from '../../src/protocol/frame-codec.js';
import { computeProof, newNonce } from '../../src/protocol/handshake.js';
import { decodeMessage, encodeMessage, type Message } from '../../src/protocol/messages.js';
import { MAX_OUTSTANDING_REQUESTS } from '../../src/source/block-server.js';
import { FileImage } from '../../src/image/file-image.js';
import { RolledBackError, SourceAgent, type SourceResult } from '../../src/source/source-agent.js';
import { captureLogger } from '../guest/helpers/capture-logger.js';
import { T, buildFrame } from '../helpers/frame-builder.js';
import { LINK_OPTS, MiB, WatchedImage, bytesOf, expectMessage, fakeDest, linkClosed, sleep, ticket } from './hostile-harness.js';

const SIZE = 1 * MiB;

interface Setup {
  image: WatchedImage;
  source: SourceAgent;
  run: Promise<SourceResult>;
  lines: Array<Record<string, unknown>>;
  cleanup(): Promise<void>;
}

let cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});

/** A real SourceAgent (no guest) over a 1 MiB image, connecting to `port`. */
function startSource(port: number): Setup {
  const dir = mkdtempSync(join(tmpdir(), 'pc-hostile-s-'));
  const src = join(dir, 'src.img');
  generateDemoImage(src, SIZE, 7);
  const image = new WatchedImage(FileImage.open(src));
  const { log, lines } = captureLogger('info');
  const source = new SourceAgent({
    connect: { host: '127.0.0.1', port },
    image,
    guest: null,
    guestDefinition: null,
    ticket: ticket(),
    blockSize: 64 * 1024,
    maxDowntimeMs: 50,
    connectTimeoutMs: 3000,
    resumeTimeoutMs: 500,
    log,
    events: nullEvents,
    link: LINK_OPTS,
  });
  const run = source.run();
  run.catch(() => {});
  const s: Setup = {
    image,
    source,
    run,
    lines,
    async cleanup() {
      image.release();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  cleanups.push(() => s.cleanup());
  return s;
}

/**
 * Run a fake D whose `attack` gets the authenticated link (after S's BEGIN arrived) and S's messages; returns the
 * ERROR S sent, and S's outcome.
 */
async function attackSource(attack: (link: Link, inbox: Message[], s: Setup) => void | Promise<void>): Promise<{ error: Extract<Message, { type: 'ERROR' }>; s: Setup; inbox: Message[] }> {
  let resolveSession!: (v: { link: Link; inbox: Message[] }) => void;
  const session = new Promise<{ link: Link; inbox: Message[] }>((r) => (resolveSession = r));
  const fake = await fakeDest((link, _hs, inbox) => resolveSession({ link, inbox }));
  cleanups.push(() => fake.close());
  const s = startSource(fake.endpoint.port);
  const { link, inbox } = await session;
  await expectMessage(inbox, 'BEGIN');
  await attack(link, inbox, s);
  const error = await expectMessage(inbox, 'ERROR');
  await linkClosed(link);
  // Before cut-over: S rolls back (its guest, had it one, keeps running there).
  await expect(s.run).rejects.toBeInstanceOf(RolledBackError);
  expect(s.source.phase).toBe('rolled-back');
  expect(s.source.failedInPhase).toBe('begin');
  // S logged why it cut D off.
  expect(s.lines.some((l) => l.msg === 'closing migration link' && l.code === error.code)).toBe(true);
  // Never a read outside the image.
  expect(s.image.readsOutside).toBe(0);
  for (const [o, l] of s.image.reads) expect(o + l).toBeLessThanOrEqual(SIZE);
  return { error, s, inbox };
}

describe('hostile block requests to S, from a fake D that holds the ticket', () => {
  it.each([
    ['straddling the end', SIZE - 4096, 8192],
    ['starting at the end', SIZE, 1],
    ['far past the end', 2 ** 52, 4096],
    ['at the largest safe offset', Number.MAX_SAFE_INTEGER - 10, 4096],
  ])('an out-of-range request (%s): ERROR PC_ERR_OUT_OF_RANGE and close, nothing read outside', async (_name, offset, length) => {
    const { error, s, inbox } = await attackSource(async (link, inbox) => {
      // A valid request first: S serves it (so the connection was really working).
      link.send({ type: 'BLOCK_REQ', id: 1, offset: 0, length: 64 * 1024, cls: CLASS_URGENT });
      await expectMessage(inbox, 'BLOCK_DATA', 3000, (m) => m.id === 1 && m.done);
      link.send({ type: 'BLOCK_REQ', id: 2, offset, length, cls: CLASS_URGENT });
    });
    expect(error.code).toBe('PC_ERR_OUT_OF_RANGE');
    expect(inbox.some((m) => (m.type === 'BLOCK_DATA' || m.type === 'BLOCK_ZERO') && m.id === 2)).toBe(false);
    expect(s.image.reads.every(([o]) => o < SIZE)).toBe(true);
  });

  it('a duplicate request id while the first is outstanding: ERROR PC_ERR_MALFORMED', async () => {
    const { error, s } = await attackSource((link, _inbox, s) => {
      s.image.hold();
      link.send({ type: 'BLOCK_REQ', id: 7, offset: 0, length: 64 * 1024, cls: CLASS_URGENT });
      link.send({ type: 'BLOCK_REQ', id: 7, offset: 64 * 1024, length: 64 * 1024, cls: CLASS_BULK });
    });
    expect(error.code).toBe('PC_ERR_MALFORMED');
    expect(error.message).toMatch(/already outstanding/);
    expect(s.image.reads).toEqual([[0, 64 * 1024]]);
  });

  it(`a flood of 100,000 requests (cap ${MAX_OUTSTANDING_REQUESTS}): cut off at the cap, memory bounded`, async () => {
    const FLOOD = 100_000;
    // Encoded up front (and outside the measurement): 100,000 × 33 bytes.
    const frames = Buffer.concat(Array.from({ length: FLOOD }, (_, i) => bytesOf({ type: 'BLOCK_REQ', id: i + 1, offset: (i % 256) * 4096, length: 4096, cls: CLASS_URGENT })));
    global.gc?.();
    const base = process.memoryUsage();
    const { error, s } = await attackSource((link, _inbox, s) => {
      s.image.hold();
      link.sendFrame([frames], true);
    });
    expect(error.code).toBe('PC_ERR_MALFORMED');
    expect(error.message).toMatch(/too many outstanding/);
    // Exactly the cap was taken on (each waiting on a held read); nothing past it.
    expect(s.image.reads.length).toBe(MAX_OUTSTANDING_REQUESTS);
    const now = process.memoryUsage();
    expect(now.arrayBuffers - base.arrayBuffers).toBeLessThan(32 * MiB);
    expect(now.heapUsed - base.heapUsed).toBeLessThan(64 * MiB);
  });

  it.each([
    ['an unknown frame type', 'PC_ERR_UNKNOWN_TYPE', () => buildFrame({ type: 99, flags: 1, payload: Buffer.from('{}') })],
    ['BEGIN (a source\'s own message)', 'PC_ERR_UNEXPECTED', () => bytesOf({ type: 'BEGIN', guest: null, size: SIZE, blockSize: 65536, cookie: 'x' })],
    ['RAM_PAGES', 'PC_ERR_UNEXPECTED', () => bytesOf({ type: 'RAM_PAGES', indices: [0x80000001], data: Buffer.alloc(0) })],
    ['BLOCK_DATA', 'PC_ERR_UNEXPECTED', () => bytesOf({ type: 'BLOCK_DATA', id: 1, offset: 0, data: Buffer.alloc(4096, 1), done: true, urgent: true })],
    ['EXTENTS', 'PC_ERR_UNEXPECTED', () => bytesOf({ type: 'EXTENTS', runs: [{ offset: 0, length: 4096 }] })],
    ['a malformed BLOCK_REQ (class 7)', 'PC_ERR_MALFORMED', () => buildFrame({ type: T.BLOCK_REQ, id: 3, payload: Buffer.concat([Buffer.alloc(8), Buffer.from([0, 0, 16, 0, 7])]) })],
    ['a zero-length BLOCK_REQ', 'PC_ERR_MALFORMED', () => buildFrame({ type: T.BLOCK_REQ, id: 3, payload: Buffer.alloc(13) })],
  ])('%s sent to S: ERROR %s and close', async (_name, code, frame) => {
    const { error, s } = await attackSource((link) => link.sendFrame([frame()], true));
    expect(error.code).toBe(code);
    expect(s.image.reads).toEqual([]);
  });

  it('a BLOCK_REQ before BEGIN (pipelined behind WELCOME): ERROR PC_ERR_UNEXPECTED, nothing read', async () => {
    // The real handshake as D, by hand, so WELCOME and the BLOCK_REQ leave in one write and arrive together.
    const server = createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    cleanups.push(() => void server.close());
    const accepted = once(server, 'connection') as Promise<[Socket]>;
    const s = startSource((server.address() as { port: number }).port);
    const [sock] = await accepted;
    cleanups.push(() => void sock.destroy());
    const got: Message[] = [];
    const decoder = new FrameDecoder();
    let closed = false;
    sock.on('data', (c: Buffer) => {
      for (const f of decoder.push(c)) got.push(decodeMessage(f));
    });
    sock.on('close', () => (closed = true));
    sock.on('error', () => {});
    const next = async <K extends Message['type']>(type: K) => {
      for (let i = 0; i < 1000; i++) {
        const m = got.find((x) => x.type === type);
        if (m) return m as Extract<Message, { type: K }>;
        await sleep(3);
      }
      throw new Error(`no ${type}`);
    };
    const hello = await next('HELLO');
    const destNonce = newNonce();
    const secret = ticket().secret;
    sock.write(Buffer.concat(encodeMessage({ type: 'CHALLENGE', version: 1, caps: [], nonce: destNonce, proof: computeProof(secret, 'dest', hello.nonce, destNonce) })));
    const auth = await next('AUTH');
    expect(auth.proof).toBe(computeProof(secret, 'source', hello.nonce, destNonce));
    sock.write(
      Buffer.concat([
        bytesOf({ type: 'WELCOME', sessionId: 'ab'.repeat(16), resumed: false, phase: 'idle' }),
        bytesOf({ type: 'BLOCK_REQ', id: 1, offset: 0, length: 4096, cls: CLASS_URGENT }),
      ]),
    );
    const error = await next('ERROR');
    expect(error.code).toBe('PC_ERR_UNEXPECTED');
    expect(error.message).toMatch(/before BEGIN/);
    await expect(s.run).rejects.toBeInstanceOf(RolledBackError);
    for (let i = 0; i < 100 && !closed; i++) await sleep(10);
    expect(closed).toBe(true);
    expect(s.image.reads).toEqual([]);
    expect(got.some((m) => m.type === 'BLOCK_DATA' || m.type === 'BLOCK_ZERO')).toBe(false);
  });
});
