// Helpers for the hostile-peer tests: raw TCP strangers that send bytes and decode what comes back, a
// recording TCP relay, a gated and range-checking source image, agents with a capture logger and a recording
// EventSink, and fake peers that authenticate properly (they hold the ticket) through the real handshake.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Extent, SourceImage } from '../../src/common/block-device.js';
import type { EventFields, EventSink } from '../../src/common/events.js';
import { DestAgent, type DestAgentOptions } from '../../src/dest/dest-agent.js';
import { handshakeAsDest, handshakeAsSource, type HandshakeResult, type SessionKeys } from '../../src/link/handshake.js';
import { Link } from '../../src/link/link.js';
import type { Endpoint } from '../../src/link/connect.js';
import { FrameDecoder } from '../../src/protocol/frame-codec.js';
import { parseTicket, type Ticket } from '../../src/protocol/handshake.js';
import { decodeMessage, encodeMessage, type Message } from '../../src/protocol/messages.js';
import { captureLogger } from '../guest/helpers/capture-logger.js';
import { nullEvents } from '../../src/common/events.js';
import { EVENTS_SCHEMA_VERSION } from '../../src/common/constants.js';
import { assertValidEvent } from '../../bench/lib/event-schema.js';
import type { DestResult } from '../../src/dest/dest-agent.js';
import { generateDemoImage } from '../../src/guest/image-gen.js';
import { compareImages } from '../../src/guest/verify.js';
import { FileImage } from '../../src/image/file-image.js';
import { SourceAgent, type SourceResult } from '../../src/source/source-agent.js';

export const MiB = 1024 * 1024;
export const TICKET_TEXT = 'hostile-test-ticket-secret-0123456789';
export const ticket = (): Ticket => parseTicket(TICKET_TEXT);
export const LINK_OPTS = { keepaliveIntervalMs: 100, keepaliveTimeoutMs: 3000, handshakeTimeoutMs: 1500 };

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** The bytes of one encoded message. */
export function bytesOf(msg: Message): Buffer {
  return Buffer.concat(encodeMessage(msg));
}

/** Decode whole frames from `buf` into messages (a trailing partial frame or undecodable rest is ignored). */
export function decodeAll(buf: Buffer): Message[] {
  const out: Message[] = [];
  const d = new FrameDecoder();
  try {
    for (const f of d.push(buf)) out.push(decodeMessage(f));
  } catch {
    // What came before the bad bytes is still reported.
  }
  return out;
}

// ---------------------------------------------------------------- events and logs

/** D's events in memory, each checked against schema/events.v1.json as the file would hold it. */
export class RecordingEvents implements EventSink {
  readonly events: Array<{ event: string; fields: EventFields }> = [];
  #sessionId: string | null = null;
  emit(event: string, fields: EventFields = {}): void {
    const line = { ...fields, schemaVersion: EVENTS_SCHEMA_VERSION, ts: new Date().toISOString(), role: 'dest', sessionId: this.#sessionId, event };
    assertValidEvent(JSON.parse(JSON.stringify(line)), 'RecordingEvents');
    this.events.push({ event, fields });
  }
  setSession(id: string): void {
    this.#sessionId = id;
  }
  close(): void {}
  named(event: string): EventFields[] {
    return this.events.filter((e) => e.event === event).map((e) => e.fields);
  }
}

export type LogLines = Array<Record<string, unknown>>;

// ---------------------------------------------------------------- a raw stranger

export interface Exchange {
  /** Everything the peer sent us before it closed (or before the deadline). */
  received: Buffer;
  messages: Message[];
  /** The ERROR message the peer sent, if any. */
  error: { code: string; message: string } | undefined;
  /** The peer closed the connection (FIN or reset) before the deadline. */
  closed: boolean;
  socket: Socket;
}

/**
 * Connect to `ep`, run `script` (which writes whatever it likes, and may wait on what arrived so far), then
 * collect everything until the peer closes or `timeoutMs` passes.
 */
export async function stranger(
  ep: Endpoint,
  script: (s: { socket: Socket; received: () => Buffer; messages: () => Message[]; until: (pred: (m: Message[]) => boolean) => Promise<void> }) => Promise<void> | void,
  timeoutMs = 3000,
): Promise<Exchange> {
  const socket = connect(ep.port, ep.host);
  socket.on('error', () => {});
  await once(socket, 'connect');
  const chunks: Buffer[] = [];
  let closed = false;
  const closedP = new Promise<void>((resolve) => {
    const done = () => {
      closed = true;
      resolve();
    };
    socket.once('end', done);
    socket.once('close', done);
  });
  socket.on('data', (c: Buffer) => chunks.push(c));
  const received = () => Buffer.concat(chunks);
  const messages = () => decodeAll(received());
  const until = async (pred: (m: Message[]) => boolean) => {
    const deadline = Date.now() + timeoutMs;
    while (!pred(messages())) {
      if (closed || Date.now() > deadline) throw new Error(`peer closed or timed out before the expected reply; got ${JSON.stringify(messages().map((m) => m.type))}`);
      await sleep(2);
    }
  };
  await script({ socket, received, messages, until });
  await Promise.race([closedP, sleep(timeoutMs)]);
  const all = received();
  const msgs = decodeAll(all);
  const err = msgs.find((m): m is Extract<Message, { type: 'ERROR' }> => m.type === 'ERROR');
  socket.destroy();
  return { received: all, messages: msgs, error: err ? { code: err.code, message: err.message } : undefined, closed, socket };
}

// ---------------------------------------------------------------- a recording relay

/** A TCP relay in front of `target` that records both directions of every connection. */
export class Relay {
  readonly server: Server;
  readonly upstream: Buffer[][] = [];
  readonly downstream: Buffer[][] = [];
  readonly #sockets = new Set<Socket>();
  constructor(readonly target: Endpoint) {
    this.server = createServer((client) => {
      const n = this.upstream.length;
      this.upstream.push([]);
      this.downstream.push([]);
      const server = connect(target.port, target.host);
      for (const s of [client, server]) {
        this.#sockets.add(s);
        s.on('error', () => {});
        s.on('close', () => {
          client.destroy();
          server.destroy();
        });
      }
      client.on('data', (c: Buffer) => {
        this.upstream[n]!.push(Buffer.from(c));
        server.write(c);
      });
      server.on('data', (c: Buffer) => {
        this.downstream[n]!.push(Buffer.from(c));
        client.write(c);
      });
    });
  }
  async listen(): Promise<Endpoint> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    const { port } = this.server.address() as { port: number };
    return { host: '127.0.0.1', port };
  }
  /** Messages S sent on connection n (client to server). */
  upMessages(n = 0): Message[] {
    return decodeAll(Buffer.concat(this.upstream[n] ?? []));
  }
  downMessages(n = 0): Message[] {
    return decodeAll(Buffer.concat(this.downstream[n] ?? []));
  }
  /** The first whole frame S sent on connection n, byte for byte. */
  firstUpFrame(n = 0): Buffer {
    const all = Buffer.concat(this.upstream[n] ?? []);
    const len = all.readUInt32BE(12);
    return Buffer.from(all.subarray(0, 20 + len));
  }
  close(): void {
    this.server.close();
    for (const s of this.#sockets) s.destroy();
  }
}

// ---------------------------------------------------------------- a source image that records and can hold reads

/** Wraps a SourceImage: records every read range, fails the test's check on any read outside it, and can hold reads. */
export class WatchedImage implements SourceImage {
  readonly reads: Array<[number, number]> = [];
  readsOutside = 0;
  #gate: Promise<void> | null = null;
  #open: (() => void) | null = null;
  constructor(readonly inner: SourceImage & { makeReadOnly?: () => void }) {}
  get size(): number {
    return this.inner.size;
  }
  makeReadOnly(): void {
    this.inner.makeReadOnly?.();
  }
  /** Reads wait from now until release(). */
  hold(): void {
    if (this.#gate) return;
    this.#gate = new Promise((r) => (this.#open = r));
  }
  release(): void {
    this.#open?.();
    this.#gate = null;
    this.#open = null;
  }
  async read(offset: number, length: number): Promise<Buffer> {
    this.reads.push([offset, length]);
    if (offset < 0 || length < 0 || offset + length > this.inner.size) this.readsOutside++;
    if (this.#gate) await this.#gate;
    return this.inner.read(offset, length);
  }
  extents(): Promise<Extent[]> {
    return this.inner.extents();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

// ---------------------------------------------------------------- agents

export interface DestOnly {
  dir: string;
  dst: string;
  stateDir: string;
  dest: DestAgent;
  endpoint: Endpoint;
  events: RecordingEvents;
  lines: LogLines;
  cleanup(): Promise<void>;
}

/** A DestAgent alone on 127.0.0.1:0, logging to an array and recording its events. */
export async function startDest(extra: Partial<DestAgentOptions> = {}): Promise<DestOnly> {
  const dir = mkdtempSync(join(tmpdir(), 'pc-hostile-'));
  const dst = join(dir, 'dst.img');
  const { log, lines } = captureLogger('info');
  const events = new RecordingEvents();
  const dest = new DestAgent({
    listen: { host: '127.0.0.1', port: 0 },
    imagePath: dst,
    stateDir: join(dir, 'dstate'),
    ticket: ticket(),
    log,
    events,
    link: LINK_OPTS,
    abortGraceMs: 200,
    confirmGraceMs: 500,
    ...extra,
  });
  const endpoint = await dest.start();
  // A test that expects no outcome must not leave an unhandled rejection behind.
  dest.done.catch(() => {});
  return {
    dir,
    dst,
    stateDir: join(dir, 'dstate'),
    dest,
    endpoint,
    events,
    lines,
    async cleanup() {
      await dest.close().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A real source (no guest) migrates a 2 MiB image to `d`: both outcomes, and how D's image compares to S's. */
export async function migrateDiskOnly(d: DestOnly, seed: number): Promise<{ source: SourceResult; dest: DestResult; cmp: Awaited<ReturnType<typeof compareImages>> }> {
  const src = join(d.dir, 'src.img');
  generateDemoImage(src, 2 * MiB, seed);
  const { log } = captureLogger('silent');
  const agent = new SourceAgent({
    connect: d.endpoint,
    image: FileImage.open(src),
    guest: null,
    guestDefinition: null,
    ticket: ticket(),
    blockSize: 64 * 1024,
    maxDowntimeMs: 50,
    connectTimeoutMs: 5000,
    log,
    events: nullEvents,
    link: LINK_OPTS,
  });
  const [source, dest] = await Promise.all([agent.run(), d.dest.done]);
  return { source, dest, cmp: await compareImages(src, d.dst) };
}

/** D's log lines saying it refused a connection. */
export function refusedLines(lines: LogLines): LogLines {
  return lines.filter((l) => l.msg === 'refused a connection');
}

// ---------------------------------------------------------------- fake peers that hold the ticket

/** Connect to D and authenticate as S with the ticket (and resume `keys` if given): a Link ready to speak. */
export async function fakeSource(ep: Endpoint, keys: SessionKeys | null = null): Promise<{ link: Link; hs: HandshakeResult; inbox: Message[] }> {
  const socket = connect(ep.port, ep.host);
  socket.on('error', () => {});
  await once(socket, 'connect');
  const { log } = captureLogger('silent');
  const link = new Link(socket, { log, ...LINK_OPTS });
  const hs = await handshakeAsSource(link, ticket(), keys);
  const inbox: Message[] = [];
  link.setHandler((m) => void inbox.push(m));
  return { link, hs, inbox };
}

/** Wait until `inbox` holds a message matching `pred`; returns it. */
export async function expectMessage<T extends Message['type']>(inbox: Message[], type: T, timeoutMs = 5000, pred: (m: Extract<Message, { type: T }>) => boolean = () => true): Promise<Extract<Message, { type: T }>> {
  let found: Extract<Message, { type: T }> | undefined;
  await waitFor(() => (found = inbox.find((m): m is Extract<Message, { type: T }> => m.type === type && pred(m as Extract<Message, { type: T }>))) !== undefined, `a ${type}`, timeoutMs);
  return found!;
}

/** A fake D: a TCP server that runs the real handshake as D with the ticket on each connection, then hands the Link to `onSession`. */
export async function fakeDest(onSession: (link: Link, hs: HandshakeResult, inbox: Message[]) => void): Promise<{ endpoint: Endpoint; close(): void; links: Link[] }> {
  const links: Link[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    const { log } = captureLogger('silent');
    const link = new Link(socket, { log, ...LINK_OPTS });
    links.push(link);
    handshakeAsDest(link, { ticket: ticket(), current: null, acceptNew: true, phase: 'idle', seenNonces: new Set() }).then(
      (hs) => {
        const inbox: Message[] = [];
        link.setHandler((m) => void inbox.push(m));
        onSession(link, hs, inbox);
      },
      () => link.destroy(),
    );
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  return {
    endpoint: { host: '127.0.0.1', port },
    links,
    close() {
      server.close();
      for (const l of links) l.destroy();
      for (const s of sockets) s.destroy();
    },
  };
}

/** Resolves with the error a link closed with. */
export function linkClosed(link: Link): Promise<unknown> {
  if (link.closed) return Promise.resolve(link.closeError);
  return new Promise((r) => link.once('close', r));
}
