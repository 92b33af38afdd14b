// The loopback WAN emulator (bench/lib/wan-proxy.ts) over real sockets: bytes intact and in order both ways for any
// chunking, never delivered before their one-way delay, never faster than the rate cap (both bounds are exact: they
// follow from when the bytes were written, so they cannot flake), cuts, the queue bound, a path changed mid-run.
import fc from 'fast-check';
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PIECE_BYTES, WanProxy, type WanPath } from '../../bench/lib/wan-proxy.js';
import { fcParams } from '../helpers/fc.js';
import { turns, waitUntil } from '../helpers/wait.js';

/** A Node socket hands over reads of at most this many bytes (libuv's read buffer). */
const MAX_READ = 64 * 1024;

/** Bytes numbered from `start` (mod 251, so a shifted or reordered byte shows), `n` of them. */
function pattern(start: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (start + i) % 251;
  return b;
}

/** What one side of a connection received: the bytes, and when (performance.now()) each delivery ended at which total. */
interface Received {
  bytes: Buffer[];
  marks: Array<{ at: number; total: number }>;
  ended: Promise<void>;
}

function receive(s: Socket): Received {
  const r: Received = { bytes: [], marks: [], ended: once(s, 'end').then(() => undefined) };
  let total = 0;
  s.on('data', (c: Buffer) => {
    total += c.length;
    r.marks.push({ at: performance.now(), total });
    r.bytes.push(c);
  });
  return r;
}

/** Writes `sizes` chunks of the pattern with `gaps[i]` event-loop turns before each, noting when each was written. */
async function send(s: Socket, sizes: number[], gaps: number[]): Promise<Array<{ at: number; end: number }>> {
  const sent: Array<{ at: number; end: number }> = [];
  let off = 0;
  for (let i = 0; i < sizes.length; i++) {
    await turns(gaps[i] ?? 0);
    const at = performance.now();
    s.write(pattern(off, sizes[i]!));
    off += sizes[i]!;
    sent.push({ at, end: off });
  }
  s.end();
  return sent;
}

/**
 * The two bounds for one direction. Lower: the last byte of each delivery was written at least RTT/2 before it
 * arrived. Upper (with a rate): by each delivery, no more than rate × (time since the first write) + one piece arrived.
 */
function checkTiming(sent: Array<{ at: number; end: number }>, got: Received, path: WanPath): void {
  for (const m of got.marks) {
    const writer = sent.find((w) => w.end >= m.total)!;
    expect(m.at - writer.at, `bytes up to ${m.total} arrived before their one-way delay`).toBeGreaterThanOrEqual(path.rttMs / 2);
    if (path.rateBytesPerSec) {
      const limit = (path.rateBytesPerSec * (m.at - sent[0]!.at)) / 1000 + PIECE_BYTES;
      expect(m.total, `bytes by ${(m.at - sent[0]!.at).toFixed(1)} ms exceed the rate`).toBeLessThanOrEqual(limit);
    }
  }
}

let target: Server;
let accepted: Socket[] = [];
const proxies: WanProxy[] = [];

beforeAll(async () => {
  target = createServer({ allowHalfOpen: true }, (s) => accepted.push(s));
  target.listen(0, '127.0.0.1');
  await once(target, 'listening');
});

afterAll(async () => {
  for (const p of proxies) await p.close();
  for (const s of accepted) s.destroy();
  await new Promise<void>((r) => target.close(() => r()));
});

async function proxyFor(path: WanPath, extra: { queueBytes?: number } = {}): Promise<WanProxy> {
  const p = await WanProxy.start({ target: { port: (target.address() as { port: number }).port }, ...path, ...extra });
  proxies.push(p);
  return p;
}

/** A client through the proxy and the target's side of the same connection. */
async function pair(p: WanProxy): Promise<[Socket, Socket]> {
  const before = accepted.length;
  const client = connect({ port: p.port, host: '127.0.0.1', allowHalfOpen: true });
  await once(client, 'connect');
  await waitUntil(() => accepted.length > before, 'the target to accept the proxied connection');
  return [client, accepted[accepted.length - 1]!];
}

const chunks = fc.array(fc.integer({ min: 1, max: 80_000 }), { minLength: 1, maxLength: 8 });
const gaps = fc.array(fc.integer({ min: 0, max: 30 }), { maxLength: 8 });

describe('WAN proxy', () => {
  it('delivers every byte intact and in order both ways, never before RTT/2, never above the rate', async () => {
    await fc.assert(
      fc.asyncProperty(
        chunks,
        chunks,
        gaps,
        fc.integer({ min: 0, max: 24 }),
        fc.option(fc.integer({ min: 4, max: 64 }).map((mib) => mib * 2 ** 20), { nil: null }),
        async (up, down, gap, rttMs, rateBytesPerSec) => {
          const path = { rttMs, rateBytesPerSec };
          const p = await proxyFor(path);
          const [client, server] = await pair(p);
          const atServer = receive(server);
          const atClient = receive(client);
          const [sentUp, sentDown] = await Promise.all([send(client, up, gap), send(server, down, [...gap].reverse())]);
          await Promise.all([atServer.ended, atClient.ended]);
          const total = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
          expect(Buffer.concat(atServer.bytes).equals(pattern(0, total(up)))).toBe(true);
          expect(Buffer.concat(atClient.bytes).equals(pattern(0, total(down)))).toBe(true);
          checkTiming(sentUp, atServer, path);
          checkTiming(sentDown, atClient, path);
          const s = p.stats();
          expect([s.toTarget.bytesIn, s.toTarget.bytesOut, s.toClient.bytesIn, s.toClient.bytesOut]).toEqual([total(up), total(up), total(down), total(down)]);
          expect(s.connections).toBe(1);
          client.destroy();
          server.destroy();
          await p.close();
        },
      ),
      fcParams(25),
    );
  });

  it('holds a burst to the rate cap: 1 MiB at 4 MiB/s spreads over 250 ms, none of it early', async () => {
    const path = { rttMs: 10, rateBytesPerSec: 4 * 2 ** 20 };
    const p = await proxyFor(path);
    const [client, server] = await pair(p);
    const got = receive(server);
    const sent = await send(client, [2 ** 20], [0]);
    await got.ended;
    checkTiming(sent, got, path);
    // The whole megabyte cannot have arrived sooner than its serialisation time plus the one-way delay.
    expect(got.marks[got.marks.length - 1]!.at - sent[0]!.at).toBeGreaterThanOrEqual(250 + 5);
    expect(got.marks.length).toBeGreaterThan(4);
    client.destroy();
  });

  it('cutAll destroys both ends of every proxied connection and keeps accepting new ones', async () => {
    const p = await proxyFor({ rttMs: 2 });
    const [client, server] = await pair(p);
    const [c2, s2] = await pair(p);
    // Each end sees the cut as its peer going away: a FIN ('end'), or a reset ('error', then 'close').
    const gone = [client, server, c2, s2].map((s) => {
      s.on('error', () => {});
      return new Promise<void>((resolve) => {
        s.once('end', resolve);
        s.once('close', resolve);
      });
    });
    p.cutAll();
    await Promise.all(gone);
    expect(p.stats().open).toBe(0);
    const [again, againServer] = await pair(p);
    const got = receive(againServer);
    await send(again, [1000], [0]);
    await got.ended;
    expect(Buffer.concat(got.bytes).equals(pattern(0, 1000))).toBe(true);
    expect(p.stats().connections).toBe(3);
    again.destroy();
  });

  it('stops reading from the sender above the queue bound (backpressure) and reads again below it', async () => {
    const queueBytes = 256 * 1024;
    const p = await proxyFor({ rttMs: 0, rateBytesPerSec: 2 * 2 ** 20 }, { queueBytes });
    const [client, server] = await pair(p);
    let outOfBound = 0;
    server.on('data', () => {
      const s = p.stats().toTarget;
      // Read but not yet delivered: never more than the bound and the one read that crossed it.
      if (s.bytesIn - s.bytesOut > queueBytes + MAX_READ) outOfBound++;
    });
    // Far more than the kernel's socket buffers hold: most of it must stay in the writer's own buffer.
    const big = Buffer.alloc(48 * 2 ** 20);
    client.write(big);
    await waitUntil(() => p.stats().toTarget.bytesOut >= 2 * queueBytes, 'the proxy to deliver twice the queue bound', 10_000);
    const s = p.stats().toTarget;
    expect(s.maxQueueBytes).toBeGreaterThan(queueBytes);
    expect(s.maxQueueBytes).toBeLessThanOrEqual(queueBytes + MAX_READ);
    expect(s.pauses).toBeGreaterThanOrEqual(2); // paused, resumed, paused again
    expect(outOfBound).toBe(0);
    expect(client.writableLength).toBeGreaterThan(0);
    client.on('error', () => {});
    server.on('error', () => {});
    p.cutAll();
  });

  it('a path changed mid-run applies to the bytes read after it, in order', async () => {
    const p = await proxyFor({ rttMs: 0 });
    const [client, server] = await pair(p);
    const got = receive(server);
    client.write(pattern(0, 5000));
    await waitUntil(() => got.marks.length > 0 && got.marks[got.marks.length - 1]!.total === 5000, 'the first bytes over the fast path');
    p.setPath({ rttMs: 60, rateBytesPerSec: 8 * 2 ** 20 });
    const t0 = performance.now();
    client.write(pattern(5000, 70_000));
    await waitUntil(() => p.stats().toTarget.bytesIn === 75_000, 'the proxy to read the bytes sent on the slow path');
    p.setPath({ rttMs: 2 }); // shorter again: the bytes after must still come after the slow ones
    client.end(pattern(75_000, 1000));
    await got.ended;
    expect(Buffer.concat(got.bytes).equals(pattern(0, 76_000))).toBe(true);
    const afterChange = got.marks.filter((m) => m.total > 5000);
    expect(afterChange[0]!.at - t0).toBeGreaterThanOrEqual(30);
    client.destroy();
  });
});
