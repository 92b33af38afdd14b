// Link over an in-memory socket pair: both directions, urgent before bulk under backpressure, bulk-space
// waits, keepalive, handler errors, held messages, hostile bytes, and closing.
import { describe, expect, it, onTestFinished, vi } from 'vitest';
import { LinkClosedError, ProtocolError, TimeoutError } from '../../src/common/errors.js';
import { FRAME_HEADER_SIZE, MAX_FRAME_PAYLOAD, MAX_PREAUTH_PAYLOAD } from '../../src/protocol/constants.js';
import { FrameDecoder } from '../../src/protocol/frame-codec.js';
import { decodeMessage, encodeBlockData, encodeMessage, type Message } from '../../src/protocol/messages.js';
import { expectError } from '../helpers/errors.js';
import { T, blockReqPayload, buildFrame, buildHeader } from '../helpers/frame-builder.js';
import { autoCleanup, closed, collect, linkAndRaw, linkPair, settled, turns, waitFor } from '../helpers/link-harness.js';
import { showMessage } from '../helpers/wire.js';

autoCleanup();

/** Decode everything a raw side receives. */
function readMessages(raw: import('node:stream').Duplex): Message[] {
  const d = new FrameDecoder();
  const got: Message[] = [];
  raw.on('data', (c: Buffer) => {
    for (const f of d.push(c)) got.push(decodeMessage(f));
  });
  return got;
}

const CHUNK = 32 * 1024;
const bulkFrame = (i: number) => encodeBlockData(i, i * CHUNK, Buffer.alloc(CHUNK, i & 0xff), true, false);

describe('Link: messages', () => {
  it('flow both ways, in order, control and data alike', async () => {
    const { a, b } = linkPair();
    const atB = collect(b);
    const atA = collect(a);
    const toB: Message[] = [];
    for (let i = 0; i < 50; i++) {
      toB.push({ type: 'BLOCK_REQ', id: i, offset: i * 4096, length: 4096, cls: (i % 2) as 0 | 1 });
      toB.push({ type: 'RAM_ROUND_END', round: i, pagesSent: i * 10, dirtyRemaining: 50 - i });
    }
    for (const m of toB) a.send(m);
    const data = Buffer.from('payload bytes');
    b.sendFrame(encodeBlockData(9, 8192, data, true, false), false);
    b.send({ type: 'COMPLETE', blocks: 3, pristineBlocks: 2 });
    await waitFor(() => atB.length === toB.length && atA.length === 2, 'messages');
    expect(atB.map(showMessage)).toEqual(toB.map(showMessage));
    expect(atA.map(showMessage)).toEqual(
      [
        { type: 'BLOCK_DATA', id: 9, offset: 8192, data, done: true, urgent: false },
        { type: 'COMPLETE', blocks: 3, pristineBlocks: 2 },
      ].map((m) => showMessage(m as Message)),
    );
    expect(a.bytesSent).toBe(b.bytesReceived);
    expect(b.bytesSent).toBe(a.bytesReceived);
  });

  it('tells the sender of a frame once the socket is done with its bytes, in order; batch() sends as usual', async () => {
    const { a, b } = linkPair();
    const atB = collect(b);
    const written: number[] = [];
    a.batch(() => {
      for (let i = 0; i < 20; i++) a.sendFrame(bulkFrame(i), i % 3 === 0, () => written.push(i));
    });
    await waitFor(() => atB.length === 20 && written.length === 20, 'frames written');
    expect(new Set(written).size).toBe(20);
    // The socket takes frames in the order they go out (urgent may pass queued bulk): callbacks follow it.
    expect(written).toEqual(atB.map((m) => (m.type === 'BLOCK_DATA' ? m.id : -1)));
  });

  it('send after close is a silent no-op', async () => {
    const { a } = linkPair();
    a.close();
    expect(() => a.send({ type: 'CONFIRM' })).not.toThrow();
    expect(() => a.sendFrame(bulkFrame(1), false)).not.toThrow();
    expect(a.bulkQueuedBytes).toBe(0);
  });
});

describe('Link: priority and backpressure', () => {
  it('an urgent frame overtakes the queued bulk: it waits behind what the socket already holds, no more', async () => {
    const highWater = 64 * 1024;
    const { a, b, sa } = linkPair({ socketHighWaterBytes: highWater, maxBulkQueueBytes: 64 * 1024 * 1024 }, {}, { highWaterMark: 16 * 1024 });
    b.pauseReading(); // the peer does not read: the pair's buffers fill, then the socket's writable buffer
    const N = 200;
    for (let i = 0; i < N; i++) a.sendFrame(bulkFrame(i), false);
    await waitFor(() => sa.writableLength >= highWater, 'the socket to fill to its high-water mark');
    await turns(); // and nothing more moves: the peer is not reading
    const frameBytes = bulkFrame(0).reduce((n, p) => n + p.length, 0);
    // The link stopped feeding the socket near its high-water mark and kept the rest queued.
    expect(sa.writableLength).toBeGreaterThanOrEqual(highWater);
    expect(sa.writableLength).toBeLessThan(highWater + frameBytes);
    const stillQueued = a.bulkQueuedBytes / frameBytes;
    expect(stillQueued).toBeGreaterThan(N / 2);

    a.send({ type: 'ABORT', reason: 'urgent' });
    const got = collect(b); // resumes reading
    await waitFor(() => got.length === N + 1, 'all frames');
    const at = got.findIndex((m) => m.type === 'ABORT');
    const bulkIds = got.filter((m) => m.type === 'BLOCK_DATA').map((m) => (m as { id: number }).id);
    expect(bulkIds).toEqual(Array.from({ length: N }, (_, i) => i)); // bulk itself stays in order
    // Ahead of every frame that was still in the link's queue...
    expect(at).toBeLessThanOrEqual(N - stillQueued);
    // ...and behind at most what the socket and the pair's buffers held (a few frames), not megabytes.
    expect(at * frameBytes).toBeLessThan(highWater + 2 * 16 * 1024 + 2 * frameBytes);
  });

  it('urgent frames keep their own order among themselves while bulk waits', async () => {
    const { a, b } = linkPair({ socketHighWaterBytes: 16 * 1024, maxBulkQueueBytes: 64 * 1024 * 1024 }, {}, { highWaterMark: 8 * 1024 });
    b.pauseReading();
    for (let i = 0; i < 50; i++) a.sendFrame(bulkFrame(i), false);
    for (let i = 0; i < 20; i++) a.send({ type: 'PREPARED', cookie: `u${i}` });
    const got = collect(b);
    await waitFor(() => got.length === 70, 'all frames');
    const urgent = got.filter((m) => m.type === 'PREPARED').map((m) => (m as { cookie: string }).cookie);
    expect(urgent).toEqual(Array.from({ length: 20 }, (_, i) => `u${i}`));
    expect(got.findIndex((m) => m.type === 'PREPARED')).toBeLessThan(10);
    expect(got.at(-1)!.type).toBe('BLOCK_DATA');
  });

  it('waitBulkSpace resolves at once below the cap, waits at the cap, and resolves once the queue drains below it', async () => {
    const cap = 256 * 1024;
    const { a, b } = linkPair({ socketHighWaterBytes: 32 * 1024, maxBulkQueueBytes: cap }, {}, { highWaterMark: 8 * 1024 });
    b.pauseReading();
    expect(await settled(a.waitBulkSpace(), 1)).toBe(true);
    let i = 0;
    while (a.bulkQueuedBytes < cap) a.sendFrame(bulkFrame(i++), false);
    const full = a.bulkQueuedBytes;
    let queuedAtWake = -1;
    const wait = a.waitBulkSpace().then(() => {
      queuedAtWake = a.bulkQueuedBytes;
    });
    expect(await settled(wait, 50)).toBe(false);
    expect(a.bulkQueuedBytes).toBe(full); // nothing moved while the peer is not reading
    const got = collect(b);
    await wait;
    expect(queuedAtWake).toBeGreaterThanOrEqual(0);
    expect(queuedAtWake).toBeLessThan(cap);
    await waitFor(() => got.length === i, 'bulk drained');
    expect(a.bulkQueuedBytes).toBe(0);
  });

  it('waitBulkSpace resolves when the link closes (a producer is never left hanging)', async () => {
    const cap = 128 * 1024;
    const { a, b } = linkPair({ socketHighWaterBytes: 16 * 1024, maxBulkQueueBytes: cap }, {}, { highWaterMark: 8 * 1024 });
    b.pauseReading();
    let i = 0;
    while (a.bulkQueuedBytes < cap) a.sendFrame(bulkFrame(i++), false);
    const waits = [a.waitBulkSpace(), a.waitBulkSpace()];
    expect(await settled(Promise.race(waits), 30)).toBe(false);
    a.destroy();
    await Promise.all(waits);
    expect(a.bulkQueuedBytes).toBe(0);
    expect(await settled(a.waitBulkSpace(), 1)).toBe(true);
  });

  it('an urgent queue over maxUrgentFrames closes the link (bounded queues)', async () => {
    const { a, b } = linkPair({ socketHighWaterBytes: 1, maxUrgentFrames: 10 }, {}, { highWaterMark: 1024 });
    b.pauseReading();
    const done = closed(a);
    for (let i = 0; i < 50 && !a.closed; i++) a.send({ type: 'ABORT', reason: 'x'.repeat(1000) });
    expectError(await done, ProtocolError, 'PC_ERR_MALFORMED');
  });
});

describe('Link: keepalive', () => {
  it('a silent peer is declared dead after keepaliveTimeoutMs (TimeoutError PC_ERR_TIMEOUT), after being pinged', async () => {
    const { link, raw } = linkAndRaw({ keepaliveIntervalMs: 50, keepaliveTimeoutMs: 200 });
    const pings = readMessages(raw); // the raw end reads but never answers
    const t0 = Date.now();
    const err = await closed(link);
    const elapsed = Date.now() - t0;
    expectError(err, TimeoutError, 'PC_ERR_TIMEOUT');
    expect(elapsed).toBeGreaterThanOrEqual(190);
    expect(elapsed).toBeLessThan(1000);
    expect(pings.length).toBeGreaterThanOrEqual(1);
    expect(pings.every((m) => m.type === 'PING')).toBe(true);
    expect(pings.map((m) => (m as { seq: number }).seq)).toEqual(pings.map((_, i) => i));
  });

  it('a PING is answered with a PONG of the same seq, and neither reaches the handler', async () => {
    const { link, raw } = linkAndRaw();
    const atLink = collect(link);
    const back = readMessages(raw);
    for (const p of encodeMessage({ type: 'PING', seq: 77 })) raw.write(p);
    for (const p of encodeMessage({ type: 'PONG', seq: 5 })) raw.write(p);
    for (const p of encodeMessage({ type: 'CONFIRM' })) raw.write(p);
    await waitFor(() => back.length === 1 && atLink.length === 1, 'PONG');
    expect(back).toEqual([{ type: 'PONG', seq: 77 }]);
    expect(atLink).toEqual([{ type: 'CONFIRM' }]);
  });

  it('ping() sends a PING whose PONG reports the round trip as an rtt event; a PONG for an older PING reports nothing', async () => {
    const { link, raw } = linkAndRaw();
    collect(link);
    const back = readMessages(raw);
    const rtts: number[] = [];
    link.on('rtt', (ms) => rtts.push(ms));
    link.ping();
    link.ping();
    await waitFor(() => back.length === 2, 'two PINGs');
    const [first, second] = back as Array<Extract<Message, { type: 'PING' }>>;
    for (const p of encodeMessage({ type: 'PONG', seq: first!.seq })) raw.write(p);
    for (const p of encodeMessage({ type: 'PONG', seq: second!.seq })) raw.write(p);
    for (const p of encodeMessage({ type: 'CONFIRM' })) raw.write(p);
    await waitFor(() => rtts.length === 1, 'rtt');
    await turns(5);
    expect(rtts).toHaveLength(1);
    expect(rtts[0]).toBeGreaterThanOrEqual(0);
  });

  it('frameStartedAt is when the first byte of the frame being handled arrived, for a frame spread over chunks', async () => {
    const { link, raw } = linkAndRaw();
    const starts: Array<[string, number]> = [];
    link.setHandler((m) => void starts.push([m.type, link.frameStartedAt]));
    const big = Buffer.concat(encodeBlockData(1, 0, Buffer.alloc(64 * 1024, 7), true, false));
    const small = Buffer.concat(encodeMessage({ type: 'CONFIRM' }));
    const t0 = performance.now();
    raw.write(big.subarray(0, 1000));
    await turns(5);
    // Time passes before the rest of the frame comes, and a whole small frame with its last bytes.
    const waited = performance.now();
    while (performance.now() - waited < 5) await turns(1);
    const t1 = performance.now();
    raw.write(Buffer.concat([big.subarray(1000), small]));
    await waitFor(() => starts.length === 2, 'two frames');
    expect(starts[0]![0]).toBe('BLOCK_DATA');
    expect(starts[0]![1]).toBeGreaterThanOrEqual(t0);
    expect(starts[0]![1]).toBeLessThan(t1);
    expect(starts[1]![0]).toBe('CONFIRM');
    expect(starts[1]![1]).toBeGreaterThanOrEqual(t1);
  });

  it('two idle links keep each other alive well past the timeout', async () => {
    // The keepalive's clock is fake (its interval and Date.now); the streams between the links run for real.
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'Date'] });
    onTestFinished(() => void vi.useRealTimers());
    const opts = { keepaliveIntervalMs: 40, keepaliveTimeoutMs: 200 };
    const { a, b } = linkPair(opts, opts);
    collect(a);
    collect(b);
    // 700 ms, 10 ms at a time, each step letting the pings travel.
    for (let t = 0; t < 700; t += 10) {
      vi.advanceTimersByTime(10);
      await turns(5);
    }
    expect(a.closed).toBe(false);
    expect(b.closed).toBe(false);
    expect(a.peerAlive && b.peerAlive).toBe(true);
    expect(a.bytesReceived).toBeGreaterThan(0);
    expect(b.bytesReceived).toBeGreaterThan(0);
  });
});

describe('Link: handlers', () => {
  it('a handler that throws a PostcopyError cuts the peer off with an ERROR frame carrying its code', async () => {
    const { a, b } = linkPair();
    const atA = collect(a);
    const aClosed = closed(a);
    const bClosed = closed(b);
    b.setHandler(() => {
      throw new ProtocolError('PC_ERR_OUT_OF_RANGE', 'offset past the end of the image');
    });
    a.send({ type: 'BLOCK_REQ', id: 1, offset: 1 << 40, length: 4096, cls: 0 });
    expectError(await bClosed, ProtocolError, 'PC_ERR_OUT_OF_RANGE');
    expectError(await aClosed, LinkClosedError, 'PC_ERR_LINK_CLOSED');
    expect(atA).toHaveLength(1);
    expect(atA[0]).toMatchObject({ type: 'ERROR', code: 'PC_ERR_OUT_OF_RANGE' });
    expect((atA[0] as { message: string }).message).toContain('offset past the end');
  });

  it('a handler that throws a plain Error: ProtocolError PC_ERR_MALFORMED with the cause kept', async () => {
    const { a, b } = linkPair();
    const atA = collect(a);
    const boom = new TypeError('cannot read properties of undefined');
    b.setHandler(() => {
      throw boom;
    });
    a.send({ type: 'CONFIRM' });
    const err = expectError(await closed(b), ProtocolError, 'PC_ERR_MALFORMED');
    expect(err.cause).toBe(boom);
    await waitFor(() => atA.length === 1, 'ERROR frame');
    expect(atA[0]).toMatchObject({ type: 'ERROR', code: 'PC_ERR_MALFORMED' });
  });

  it('a handler that fails on a local system error (ENOSPC saving state): the link stays up, the peer is not blamed', async () => {
    const { a, b } = linkPair();
    const atA = collect(a);
    const atB: Message[] = [];
    let first = true;
    b.setHandler((m) => {
      if (first) {
        first = false;
        // What fs.writeSync throws on a full disk.
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
      }
      atB.push(m);
    });
    a.send({ type: 'CONFIRM' });
    a.send({ type: 'RAM_ROUND_END', round: 1, pagesSent: 2, dirtyRemaining: 3 });
    await waitFor(() => atB.length === 1, 'the next message handled');
    expect(b.closed).toBe(false);
    expect(a.closed).toBe(false);
    expect(atA).toHaveLength(0);
  });

  it('with no handler, messages are held (reading paused) and delivered in order once one is set', async () => {
    const { a, b, sb } = linkPair();
    for (let i = 0; i < 40; i++) a.send({ type: 'RAM_ROUND_END', round: i, pagesSent: 0, dirtyRemaining: 0 });
    await waitFor(() => sb.isPaused(), 'reading paused with no handler');
    const got = collect(b);
    for (let i = 40; i < 50; i++) a.send({ type: 'RAM_ROUND_END', round: i, pagesSent: 0, dirtyRemaining: 0 });
    await waitFor(() => got.length === 50, 'all rounds');
    expect(got.map((m) => (m as { round: number }).round)).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });

  it('setHandler(null) from inside a handler holds the rest, in order, for the next handler', async () => {
    const { a, b } = linkPair();
    const first: number[] = [];
    b.setHandler((m) => {
      first.push((m as { count: number }).count);
      if (first.length === 3) b.setHandler(null);
    });
    // One write: all ten frames arrive in the same chunk.
    a.sendFrame(Array.from({ length: 10 }, (_, i) => encodeMessage({ type: 'EXTENTS_END', count: i })).flat(), true);
    await waitFor(() => first.length >= 3, 'the first handler to take three');
    await turns();
    expect(first).toEqual([0, 1, 2]);
    const rest = collect(b);
    await waitFor(() => rest.length === 7, 'held messages');
    expect(rest.map((m) => (m as { count: number }).count)).toEqual([3, 4, 5, 6, 7, 8, 9]);
    expect(first).toHaveLength(3);
  });
});

describe('Link: hostile peer', () => {
  it('garbage bytes: the link closes with ProtocolError PC_ERR_BAD_MAGIC and tells the peer in an ERROR frame', async () => {
    const { link, raw } = linkAndRaw();
    collect(link);
    const back = readMessages(raw);
    raw.write(Buffer.from('GET / HTTP/1.1\r\nHost: postcopy\r\n\r\n'));
    expectError(await closed(link), ProtocolError, 'PC_ERR_BAD_MAGIC');
    await waitFor(() => back.length === 1, 'ERROR frame');
    expect(back[0]).toMatchObject({ type: 'ERROR', code: 'PC_ERR_BAD_MAGIC' });
  });

  it.each([
    { name: 'checksum', bytes: buildFrame({ type: T.PING, payload: Buffer.from('{"seq":1}'), crc: 1 }), code: 'PC_ERR_CHECKSUM' },
    { name: 'unknown type', bytes: buildFrame({ type: 200, payload: Buffer.from('{}') }), code: 'PC_ERR_UNKNOWN_TYPE' },
    { name: 'oversized frame (header only)', bytes: buildFrame({ type: T.BLOCK_DATA, length: 0xffffffff }).subarray(0, 20), code: 'PC_ERR_FRAME_TOO_LARGE' },
    { name: 'malformed BLOCK_REQ', bytes: buildFrame({ type: T.BLOCK_REQ, id: 1, payload: blockReqPayload(0, 4096, 7) }), code: 'PC_ERR_MALFORMED' },
    { name: 'malformed JSON field', bytes: buildFrame({ type: T.PING, payload: Buffer.from('{"seq":"x"}') }), code: 'PC_ERR_MALFORMED' },
  ] as const)('$name: ProtocolError $code, ERROR frame to the peer, nothing delivered', async ({ bytes, code }) => {
    const { link, raw } = linkAndRaw();
    const got = collect(link);
    const back = readMessages(raw);
    raw.write(bytes);
    expectError(await closed(link), ProtocolError, code);
    await waitFor(() => back.length === 1, 'ERROR frame');
    expect(back[0]).toMatchObject({ type: 'ERROR', code });
    expect(got).toEqual([]);
  });

  it('bytes after the link closed are ignored', async () => {
    const { link, raw } = linkAndRaw();
    collect(link);
    raw.write(Buffer.alloc(20));
    await closed(link);
    expect(() => raw.write(Buffer.alloc(100, 1))).not.toThrow();
    await turns();
    expect(link.closed).toBe(true);
  });
});

describe('Link: before authentication (issue 10 case 6: a stranger costs D a few KiB at most)', () => {
  it('the decoder\'s payload limit refuses a larger declared length at the header, and can be raised again', () => {
    const d = new FrameDecoder();
    d.setPayloadLimit(MAX_PREAUTH_PAYLOAD, 'before authentication');
    const ok = buildFrame({ type: T.PING, payload: Buffer.from('{"seq":1}') });
    expect(d.push(ok)).toHaveLength(1);
    const e = expectError(
      (() => {
        try {
          d.push(buildHeader({ type: T.BLOCK_DATA, id: 1, length: MAX_PREAUTH_PAYLOAD + 1 }));
        } catch (x) {
          return x;
        }
      })(),
      ProtocolError,
      'PC_ERR_FRAME_TOO_LARGE',
    );
    expect(e.message).toContain('before authentication');
    expect(d.buffered).toBe(0);
    const raised = new FrameDecoder();
    raised.setPayloadLimit(MAX_PREAUTH_PAYLOAD);
    raised.setPayloadLimit(Infinity);
    const big = Buffer.alloc(MAX_PREAUTH_PAYLOAD * 4, 7);
    expect(raised.push(Buffer.concat(encodeBlockData(1, 0, big, true, false)))[0]!.payload.length).toBeGreaterThan(big.length);
    // Raising never goes past the per-type caps.
    expect(() => raised.push(buildHeader({ type: T.BLOCK_DATA, id: 2, length: MAX_FRAME_PAYLOAD + 1 }))).toThrow(/cap/);
  });

  it('an unauthenticated link cuts a 4 MiB BLOCK_DATA at its header with an ERROR frame, buffering none of it', async () => {
    const { link, raw } = linkAndRaw({ unauthenticated: true });
    const got = collect(link);
    const back = readMessages(raw);
    raw.write(buildHeader({ type: T.BLOCK_DATA, id: 1, length: 4 * 1024 * 1024 }));
    const err = expectError(await closed(link), ProtocolError, 'PC_ERR_FRAME_TOO_LARGE');
    expect(err.message).toContain(`cap ${MAX_PREAUTH_PAYLOAD} before authentication`);
    await waitFor(() => back.length === 1, 'ERROR frame');
    expect(back[0]).toMatchObject({ type: 'ERROR', code: 'PC_ERR_FRAME_TOO_LARGE' });
    expect(got).toEqual([]);
    // What the stranger pushes after the header is not read (nor held) by the closed link.
    const received = link.bytesReceived;
    expect(received).toBe(FRAME_HEADER_SIZE);
    raw.write(Buffer.alloc(1024 * 1024, 0x41));
    await turns();
    expect(link.bytesReceived).toBe(received);
  });

  it('a control frame over the small cap is refused too; after markAuthenticated() large frames flow', async () => {
    const a = linkAndRaw({ unauthenticated: true });
    collect(a.link);
    a.raw.write(buildHeader({ type: T.BEGIN, length: MAX_PREAUTH_PAYLOAD + 1 }));
    expectError(await closed(a.link), ProtocolError, 'PC_ERR_FRAME_TOO_LARGE');

    const b = linkAndRaw({ unauthenticated: true });
    const got = collect(b.link);
    b.link.markAuthenticated();
    const data = Buffer.alloc(1024 * 1024, 3);
    for (const p of encodeBlockData(4, 0, data, true, false)) b.raw.write(p);
    await waitFor(() => got.length === 1, 'BLOCK_DATA');
    expect(got[0]).toMatchObject({ type: 'BLOCK_DATA', id: 4 });
    expect(b.link.closed).toBe(false);
  });

  it('peerAlive turns false once the peer is silent past the keepalive timeout (two idle links stay alive: above)', async () => {
    const { link } = linkAndRaw({ keepaliveIntervalMs: 40, keepaliveTimeoutMs: 200 }); // the raw end never answers a PING
    collect(link);
    expect(link.peerAlive).toBe(true);
    await waitFor(() => !link.peerAlive, 'silence past the timeout', 2000);
  });
});

describe('Link: closing', () => {
  it('peer close: a "close" event with LinkClosedError PC_ERR_LINK_CLOSED; our own clean close carries no error', async () => {
    const { a, b } = linkPair();
    collect(a);
    collect(b);
    const aClosed = closed(a);
    const bClosed = closed(b);
    a.close();
    expect(await aClosed).toBeUndefined();
    expectError(await bClosed, LinkClosedError, 'PC_ERR_LINK_CLOSED');
    expect(b.closeError?.code).toBe('PC_ERR_LINK_CLOSED');
  });

  it('peer vanishes (socket destroyed): LinkClosedError', async () => {
    const { a, b, sa } = linkPair();
    collect(b);
    const bClosed = closed(b);
    sa.destroy();
    expectError(await bClosed, LinkClosedError, 'PC_ERR_LINK_CLOSED');
    expect(a.closed).toBe(true);
  });

  it('close(err) sends an ERROR frame with the code, then ends', async () => {
    const { a, b } = linkPair();
    const atB = collect(b);
    const bClosed = closed(b);
    a.close(new ProtocolError('PC_ERR_DIGEST', 'RAM digest mismatch'));
    expectError(a.closeError, ProtocolError, 'PC_ERR_DIGEST');
    expectError(await bClosed, LinkClosedError, 'PC_ERR_LINK_CLOSED');
    expect(atB).toHaveLength(1);
    expect(atB[0]).toMatchObject({ type: 'ERROR', code: 'PC_ERR_DIGEST' });
  });

  it('a clean close() still delivers urgent messages queued before it (ABORT/CONFIRM then close)', async () => {
    // The source sends ABORT (or CONFIRM) and closes at once; with the socket above its high-water mark
    // the message is still in the link's urgent queue, and must not be dropped.
    const { a, b } = linkPair({ socketHighWaterBytes: 16 * 1024, maxBulkQueueBytes: 64 * 1024 * 1024 }, {}, { highWaterMark: 8 * 1024 });
    b.pauseReading();
    for (let i = 0; i < 20; i++) a.sendFrame(bulkFrame(i), false);
    a.send({ type: 'ABORT', reason: 'rolled back' });
    a.close();
    const got = collect(b);
    await closed(b);
    expect(got.some((m) => m.type === 'ABORT')).toBe(true);
  });

  it('close(err) with a very long message: the peer still learns the error code', async () => {
    const { a, b } = linkPair();
    const atB = collect(b);
    const bClosed = closed(b);
    a.close(new ProtocolError('PC_ERR_PEER', `PC_ERR_BACKEND: ${'detail '.repeat(700)}`));
    await bClosed;
    expect(atB[0]).toMatchObject({ type: 'ERROR', code: 'PC_ERR_PEER' });
  });
});
