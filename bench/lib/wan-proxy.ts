// A loopback WAN for tests and the bench: a TCP proxy that delays each direction by half the RTT and can pass it
// through a FIFO bottleneck of a given rate with a bounded buffer, as the slowest router of a long path does.
//
// Each direction of each proxied connection is a Lane. A chunk read from the sending socket is cut into pieces of at
// most PIECE_BYTES (packets, roughly); each piece leaves the bottleneck at max(arrival, previous departure) + its
// serialisation time (len ÷ rate) and is delivered one-way delay (RTT ÷ 2) later. Pieces wait in one FIFO per lane
// with one timer for its head; a timer that fires early (Node's timers have ~1 ms granularity and run off a cached
// loop clock) delivers nothing before its time and re-arms, one that fires late delivers everything then due; a lane
// holding little polls its last millisecond instead, so a lone message is not held up by the timer's granularity.
// Bounded both ways, like TCP: above the bottleneck buffer (queueBytes) or the bytes on the wire (wireBytes) the lane
// stops reading from its sender (whose socket buffers then fill and push back on the writer) and reads again once
// back under; a receiver that does not drain stops deliveries, so what it has not taken waits here, inside the bound.
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { MiB } from './units.js';

/** Largest piece a chunk is cut into: about a TSO segment, so a rate cap releases bytes smoothly, not per 64 KiB read. */
export const PIECE_BYTES = 16 * 1024;
/**
 * Default bottleneck buffer per direction: 8 MiB is about one bandwidth-delay product of the bench's paths
 * (100 MiB/s × 80 ms), what a router sized by the rule of thumb (buffer = RTT × rate) holds. Deep enough that a
 * sender pushing more than the link carries builds a standing queue ahead of everything behind it (the bufferbloat
 * the WAN issue is about) instead of being throttled at once by the proxy; bounded, so that memory is too.
 */
export const DEFAULT_QUEUE_BYTES = 8 * MiB;
/**
 * Default cap on bytes past the bottleneck but not yet delivered (in propagation), per direction. With a rate cap
 * they are at most rate × one-way delay anyway; without one this bounds memory: 64 MiB over a 40 ms one-way delay
 * is 1.6 GiB/s, more than two processes on loopback move, so it never becomes the bottleneck of a path meant uncapped.
 */
export const DEFAULT_WIRE_BYTES = 64 * MiB;

const MS_PER_S = 1000;
/** A lane holding at most this much polls the last millisecond before its head is due (see Lane.#arm). */
const POLL_MAX_HELD_BYTES = 256 * 1024;

/** The emulated path: round-trip time, and the bottleneck's rate (absent, null or 0: no cap). */
export interface WanPath {
  rttMs: number;
  rateBytesPerSec?: number | null;
}

export interface WanProxyOptions extends WanPath {
  /** Where each accepted connection is forwarded. */
  target: { host?: string; port: number };
  /** Bottleneck buffer per direction (bytes waiting to leave the bottleneck) before the sender is paused. */
  queueBytes?: number;
  /** Bytes past the bottleneck but not yet delivered, per direction, before the sender is paused. */
  wireBytes?: number;
}

/** Counters of one direction, over every connection the proxy carried. */
export interface LaneStats {
  /** Bytes read from the sender. */
  bytesIn: number;
  /** Bytes delivered to the receiver. */
  bytesOut: number;
  /** Largest bottleneck queue seen (bytes waiting to leave it) on any one connection. */
  maxQueueBytes: number;
  /** Times a sender was paused because a bound was reached. */
  pauses: number;
}

export interface WanProxyStats {
  /** Connections accepted so far. */
  connections: number;
  /** Connections still open. */
  open: number;
  /** Client → target (in the bench and tests: S → D, the block data). */
  toTarget: LaneStats;
  /** Target → client (D → S: requests, acknowledgements). */
  toClient: LaneStats;
  path: { rttMs: number; rateBytesPerSec: number | null };
}

interface Piece {
  data: Buffer;
  /** performance.now() at which its last byte leaves the bottleneck. */
  departAt: number;
  /** performance.now() before which it is never delivered. */
  deliverAt: number;
}

const emptyStats = (): LaneStats => ({ bytesIn: 0, bytesOut: 0, maxQueueBytes: 0, pauses: 0 });

/** One direction of one connection: the bottleneck's FIFO, the propagation delay, and the bounds on both. */
class Lane {
  readonly #from: Socket;
  readonly #to: Socket;
  readonly #proxy: WanProxy;
  readonly #stats: LaneStats;
  /** Pieces not yet delivered, from #head; [#head, #waitingFrom) have left the bottleneck, the rest wait in it. */
  #q: Piece[] = [];
  #head = 0;
  #waitingFrom = 0;
  #waitingBytes = 0;
  #wireBytes = 0;
  #lastDepart = -Infinity;
  #lastDeliver = -Infinity;
  #timer: NodeJS.Timeout | null = null;
  #immediate: NodeJS.Immediate | null = null;
  #paused = false;
  /** The receiver's buffer is above its high-water mark: deliveries wait for 'drain'. */
  #blocked = false;
  #ended = false;
  #finished = false;
  #dead = false;

  constructor(from: Socket, to: Socket, proxy: WanProxy, stats: LaneStats) {
    this.#from = from;
    this.#to = to;
    this.#proxy = proxy;
    this.#stats = stats;
    from.on('data', (chunk: Buffer) => this.#push(chunk));
    from.on('end', () => {
      this.#ended = true;
      this.#finishIfDone();
    });
    to.on('drain', () => {
      this.#blocked = false;
      this.#deliver();
    });
  }

  /** Drop everything queued and stop the timer (the connection is gone). */
  kill(): void {
    this.#dead = true;
    this.#disarm();
    this.#q = [];
    this.#head = this.#waitingFrom = this.#waitingBytes = this.#wireBytes = 0;
  }

  #push(chunk: Buffer): void {
    if (this.#dead) return;
    const now = performance.now();
    const { rttMs, rateBytesPerSec } = this.#proxy.path;
    const rate = rateBytesPerSec && rateBytesPerSec > 0 ? rateBytesPerSec : 0;
    this.#stats.bytesIn += chunk.length;
    for (let at = 0; at < chunk.length; at += PIECE_BYTES) {
      const data = chunk.subarray(at, Math.min(at + PIECE_BYTES, chunk.length));
      // FIFO: never before the previous piece, whatever the path did meanwhile (a shorter delay reorders nothing).
      const departAt = Math.max(now, this.#lastDepart) + (rate ? (data.length / rate) * MS_PER_S : 0);
      const deliverAt = Math.max(departAt + rttMs / 2, this.#lastDeliver);
      this.#lastDepart = departAt;
      this.#lastDeliver = deliverAt;
      this.#q.push({ data, departAt, deliverAt });
      this.#waitingBytes += data.length;
    }
    this.#depart(now);
    this.#stats.maxQueueBytes = Math.max(this.#stats.maxQueueBytes, this.#waitingBytes);
    if (!this.#paused && this.#overBound()) {
      this.#paused = true;
      this.#stats.pauses++;
      this.#from.pause();
    }
    this.#arm();
  }

  /** Move the pieces whose departure time has passed from the bottleneck's queue onto the wire. */
  #depart(now: number): void {
    while (this.#waitingFrom < this.#q.length && this.#q[this.#waitingFrom]!.departAt <= now) {
      const n = this.#q[this.#waitingFrom]!.data.length;
      this.#waitingBytes -= n;
      this.#wireBytes += n;
      this.#waitingFrom++;
    }
  }

  #overBound(): boolean {
    return this.#waitingBytes > this.#proxy.queueBytes || this.#wireBytes > this.#proxy.wireBytes;
  }

  /**
   * One wake-up for the head. A lane holding a lot (a stream) sleeps on a timer rounded up and delivers in batches.
   * A lane holding little (requests, a lone reply, pings) sleeps to the last whole millisecond and polls the rest
   * (setImmediate), so a message is not held up to a millisecond more per direction; the polling lasts under 1 ms
   * per message and never runs while a stream fills the lane.
   */
  #arm(): void {
    if (this.#dead || this.#blocked || this.#timer || this.#immediate || this.#head >= this.#q.length) return;
    const wait = this.#q[this.#head]!.deliverAt - performance.now();
    const little = this.#waitingBytes + this.#wireBytes <= POLL_MAX_HELD_BYTES;
    if (wait <= 0 || (little && wait < 1)) this.#immediate = setImmediate(() => this.#deliver());
    else this.#timer = setTimeout(() => this.#deliver(), little ? Math.floor(wait) : Math.ceil(wait));
  }

  #disarm(): void {
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#immediate) clearImmediate(this.#immediate);
    this.#timer = null;
    this.#immediate = null;
  }

  /** Deliver every piece that is due (none before its time), then re-arm for the next head. */
  #deliver(): void {
    this.#disarm();
    if (this.#dead || this.#blocked) return;
    const now = performance.now();
    this.#depart(now);
    if (this.#head < this.#q.length && this.#q[this.#head]!.deliverAt <= now) {
      this.#to.cork();
      while (this.#head < this.#q.length && this.#q[this.#head]!.deliverAt <= now) {
        const { data } = this.#q[this.#head++]!;
        this.#wireBytes -= data.length;
        this.#stats.bytesOut += data.length;
        if (!this.#to.write(data)) this.#blocked = true;
      }
      this.#to.uncork();
      if (this.#head > 1024 && this.#head * 2 > this.#q.length) {
        this.#q = this.#q.slice(this.#head);
        this.#waitingFrom -= this.#head;
        this.#head = 0;
      }
    }
    if (this.#paused && !this.#overBound()) {
      this.#paused = false;
      this.#from.resume();
    }
    this.#finishIfDone();
    this.#arm();
  }

  /** The sender's FIN follows its last byte: passed on once everything before it was delivered. */
  #finishIfDone(): void {
    if (!this.#ended || this.#finished || this.#dead || this.#head < this.#q.length) return;
    this.#finished = true;
    this.#to.end();
  }
}

/** One proxied connection: the accepted socket, the one to the target, a lane each way. */
class Connection {
  readonly #client: Socket;
  readonly #upstream: Socket;
  readonly #lanes: Lane[];
  #cut = false;
  #socketsClosed = 0;

  constructor(client: Socket, proxy: WanProxy, stats: WanProxyStats, onGone: (c: Connection) => void) {
    this.#client = client;
    const { host = '127.0.0.1', port } = proxy.target;
    this.#upstream = connect({ host, port, allowHalfOpen: true });
    for (const s of [client, this.#upstream]) {
      s.setNoDelay(true);
      s.on('error', () => this.cut());
      // A clean close comes only after both FINs passed (half-open allowed both sides), so nothing is left queued;
      // a close on error (a reset) takes the other side down at once, as the cut of a real path would.
      s.on('close', (hadError: boolean) => {
        if (hadError) this.cut();
        if (++this.#socketsClosed === 2) {
          for (const l of this.#lanes) l.kill();
          onGone(this);
        }
      });
    }
    this.#lanes = [new Lane(client, this.#upstream, proxy, stats.toTarget), new Lane(this.#upstream, client, proxy, stats.toClient)];
  }

  /** Destroy both sockets now, dropping what is queued either way (a link cut). */
  cut(): void {
    if (this.#cut) return;
    this.#cut = true;
    for (const l of this.#lanes) l.kill();
    this.#client.destroy();
    this.#upstream.destroy();
  }
}

/** The proxy: listens on 127.0.0.1 (port 0 by default) and forwards each connection to the target through the path. */
export class WanProxy {
  readonly target: { host?: string; port: number };
  readonly queueBytes: number;
  readonly wireBytes: number;
  #path: { rttMs: number; rateBytesPerSec: number | null };
  readonly #server: Server;
  readonly #conns = new Set<Connection>();
  readonly #stats: WanProxyStats;

  private constructor(o: WanProxyOptions, server: Server) {
    this.target = o.target;
    this.queueBytes = o.queueBytes ?? DEFAULT_QUEUE_BYTES;
    this.wireBytes = o.wireBytes ?? DEFAULT_WIRE_BYTES;
    this.#path = checkPath(o);
    this.#server = server;
    this.#stats = { connections: 0, open: 0, toTarget: emptyStats(), toClient: emptyStats(), path: this.#path };
    server.on('connection', (s: Socket) => {
      this.#stats.connections++;
      const c = new Connection(s, this, this.#stats, (gone) => this.#conns.delete(gone));
      this.#conns.add(c);
    });
  }

  static async start(o: WanProxyOptions & { listen?: { host?: string; port?: number } }): Promise<WanProxy> {
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: false });
    const proxy = new WanProxy(o, server);
    server.listen(o.listen?.port ?? 0, o.listen?.host ?? '127.0.0.1');
    await once(server, 'listening');
    return proxy;
  }

  get port(): number {
    return (this.#server.address() as { port: number }).port;
  }

  get path(): { rttMs: number; rateBytesPerSec: number | null } {
    return this.#path;
  }

  /** Change the path for every byte read from now on (bytes already queued keep their times; order is kept). */
  setPath(p: WanPath): void {
    this.#path = checkPath(p);
    this.#stats.path = this.#path;
  }

  stats(): WanProxyStats {
    return { ...this.#stats, open: this.#conns.size, toTarget: { ...this.#stats.toTarget }, toClient: { ...this.#stats.toClient }, path: { ...this.#path } };
  }

  /** Destroy every proxied connection, both sides, now; the proxy goes on accepting new ones. */
  cutAll(): void {
    for (const c of this.#conns) c.cut();
    this.#conns.clear();
  }

  /** Stop accepting, cut what is open, and resolve once the listener is closed. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.cutAll();
    await closed;
  }
}

function checkPath(p: WanPath): { rttMs: number; rateBytesPerSec: number | null } {
  if (!Number.isFinite(p.rttMs) || p.rttMs < 0) throw new RangeError(`rttMs must be ≥ 0, got ${p.rttMs}`);
  const rate = p.rateBytesPerSec ?? null;
  if (rate !== null && (!Number.isFinite(rate) || rate < 0)) throw new RangeError(`rateBytesPerSec must be ≥ 0, got ${rate}`);
  return { rttMs: p.rttMs, rateBytesPerSec: rate || null };
}
