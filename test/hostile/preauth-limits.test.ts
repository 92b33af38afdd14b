// Issue 10 case 6, the limits behind the memory bound, on a DestAgent over real TCP: at most
// MAX_PREAUTH_CONNECTIONS connections authenticate at once (more are refused at accept with an ERROR frame
// saying PC_ERR_BUSY), each is cut once the handshake's time box is over (PC_ERR_TIMEOUT), and a real source
// gets in once strangers have been cut.
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_PREAUTH_CONNECTIONS } from '../../src/protocol/constants.js';
import { LINK_OPTS, MiB, decodeAll, migrateDiskOnly, startDest, waitFor, type DestOnly } from './hostile-harness.js';

let d: DestOnly | null = null;
afterEach(async () => {
  await d?.cleanup();
  d = null;
});

interface Idle {
  socket: Socket;
  received: Buffer[];
  closedAt: number | null;
}

/** A connection that says nothing at all. */
async function idle(port: number): Promise<Idle> {
  const socket = connect(port, '127.0.0.1');
  const x: Idle = { socket, received: [], closedAt: null };
  socket.on('error', () => {});
  socket.on('data', (c: Buffer) => x.received.push(c));
  socket.on('close', () => (x.closedAt = Date.now()));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  return x;
}

const codesOf = (x: Idle) => decodeAll(Buffer.concat(x.received)).filter((m) => m.type === 'ERROR').map((m) => (m as { code: string }).code);

describe('unauthenticated connections are capped and time-boxed', () => {
  it(`beyond ${MAX_PREAUTH_CONNECTIONS} at once: PC_ERR_BUSY at accept; the silent ones are cut at the handshake deadline; then a real source migrates`, async () => {
    d = await startDest();
    const port = d.endpoint.port;
    const t0 = Date.now();
    const held: Idle[] = [];
    for (let i = 0; i < MAX_PREAUTH_CONNECTIONS; i++) held.push(await idle(port));
    const extra: Idle[] = [];
    for (let i = 0; i < 8; i++) extra.push(await idle(port));
    // The extra ones are refused at once (well before any handshake deadline), told why.
    await waitFor(() => extra.every((x) => x.closedAt !== null), 'the extra connections refused', LINK_OPTS.handshakeTimeoutMs / 2);
    for (const x of extra) expect(codesOf(x)).toEqual(['PC_ERR_BUSY']);
    expect(held.every((x) => x.closedAt === null)).toBe(true);
    const busy = d.events.named('refused').filter((e) => e.code === 'PC_ERR_BUSY');
    expect(busy).toHaveLength(8);
    expect(String(busy[0]!.message)).toContain(`${MAX_PREAUTH_CONNECTIONS} connections are already authenticating`);

    // The silent ones are cut when the whole handshake's time is up, with PC_ERR_TIMEOUT.
    await waitFor(() => held.every((x) => x.closedAt !== null), 'the silent connections cut', LINK_OPTS.handshakeTimeoutMs * 3);
    for (const x of held) {
      expect(codesOf(x)).toEqual(['PC_ERR_TIMEOUT']);
      expect(x.closedAt! - t0).toBeGreaterThanOrEqual(LINK_OPTS.handshakeTimeoutMs - 50);
      expect(x.closedAt! - t0).toBeLessThan(LINK_OPTS.handshakeTimeoutMs * 2);
    }

    // The slots are free again: a real source gets in and migrates.
    const r = await migrateDiskOnly(d, 9);
    expect(r.source.phase).toBe('confirmed');
    expect(r.dest.phase).toBe('confirmed');
    expect(r.cmp).toEqual({ ok: true, sizes: { a: 2 * MiB, b: 2 * MiB } });
  }, 30_000);

  it(`a new source that finds all ${MAX_PREAUTH_CONNECTIONS} slots held by strangers is turned away, tries again, and migrates once they are cut`, async () => {
    d = await startDest();
    const port = d.endpoint.port;
    const held: Idle[] = [];
    for (let i = 0; i < MAX_PREAUTH_CONNECTIONS; i++) held.push(await idle(port));
    // Started while every slot is taken: its first attempts get PC_ERR_BUSY (it must not give up: exit 4).
    const r = await migrateDiskOnly(d, 11);
    expect(d.events.named('refused').some((e) => e.code === 'PC_ERR_BUSY')).toBe(true);
    expect(held.every((x) => x.closedAt !== null)).toBe(true);
    expect(r.source.phase).toBe('confirmed');
    expect(r.cmp).toEqual({ ok: true, sizes: { a: 2 * MiB, b: 2 * MiB } });
  }, 30_000);
});

