// The migration connection: frames in and out of one socket, urgent before bulk, bounded queues,
// backpressure on both sides, and a keepalive that notices a dead or silent peer.
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { LinkClosedError, PostcopyError, ProtocolError, TimeoutError, systemErrorCode, toPostcopyError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { MAX_PREAUTH_PAYLOAD } from '../protocol/constants.js';
import { FrameDecoder } from '../protocol/frame-codec.js';
import { decodeMessage, encodeMessage, type Message } from '../protocol/messages.js';
import * as L from './constants.js';
import { SendQueue, writeParts } from './send-queue.js';

export interface LinkOptions {
  log: Logger;
  /** Send a PING when nothing has been received for this long. */
  keepaliveIntervalMs?: number;
  /** Declare the peer dead when nothing at all has been received for this long. */
  keepaliveTimeoutMs?: number;
  /** Stop handing frames to the socket while it holds this many unsent bytes (keeps urgent frames near the front). */
  socketHighWaterBytes?: number;
  /** Cap on queued urgent frames; exceeding it is a bug or a flood, and closes the link. */
  maxUrgentFrames?: number;
  /** Cap on queued bulk bytes; producers wait for space with waitBulkSpace(). */
  maxBulkQueueBytes?: number;
  /** How long the whole handshake may take. */
  handshakeTimeoutMs?: number;
  /**
   * The peer is a stranger until markAuthenticated(): only frames of up to MAX_PREAUTH_PAYLOAD bytes are
   * taken meanwhile (a larger declared length cuts the connection at its header, before any is buffered).
   */
  unauthenticated?: boolean;
}

export interface LinkEvents {
  close: [PostcopyError | undefined];
  /** A PING's round trip (ms): the path's delay as the peer's event loop sees it. */
  rtt: [number];
}

/** Takes each message in order; throwing from it cuts the peer off with an error frame. */
export type MessageHandler = (msg: Message) => void;

export class Link extends EventEmitter<LinkEvents> {
  readonly #socket: Duplex;
  readonly #log: Logger;
  readonly #decoder = new FrameDecoder();
  readonly #queue: SendQueue;
  #handler: MessageHandler | null = null;
  /** Messages that arrived while no handler was set (reading is paused meanwhile, so this stays small). */
  #backlog: Message[] = [];
  #closed = false;
  #closeError: PostcopyError | undefined;
  #lastReceived = Date.now();
  #pingSeq = 0;
  /** The latest PING not answered yet: its sequence number and when it was handed to the socket. */
  #pingOut: { seq: number; at: number } | null = null;
  #keepalive: NodeJS.Timeout | undefined;
  readonly #highWater: number;
  readonly #interval: number;
  readonly #timeout: number;
  readonly handshakeTimeoutMs: number;
  /** When the first byte of a frame still being assembled arrived (null: none is). */
  #partialSince: number | null = null;
  #frameStartedAt = 0;
  /** Counters for progress and benchmarks. */
  bytesSent = 0;
  bytesReceived = 0;

  constructor(socket: Duplex, opts: LinkOptions) {
    super();
    this.#socket = socket;
    this.#log = opts.log;
    this.#highWater = opts.socketHighWaterBytes ?? L.LINK_SOCKET_HIGH_WATER_BYTES;
    this.#queue = new SendQueue(opts.maxUrgentFrames ?? L.LINK_MAX_URGENT_FRAMES, opts.maxBulkQueueBytes ?? L.LINK_MAX_BULK_QUEUE_BYTES);
    this.#interval = opts.keepaliveIntervalMs ?? L.LINK_KEEPALIVE_INTERVAL_MS;
    this.#timeout = opts.keepaliveTimeoutMs ?? L.LINK_KEEPALIVE_TIMEOUT_MS;
    this.handshakeTimeoutMs = opts.handshakeTimeoutMs ?? L.LINK_HANDSHAKE_TIMEOUT_MS;
    if (opts.unauthenticated) this.#decoder.setPayloadLimit(MAX_PREAUTH_PAYLOAD, 'before authentication');
    (socket as { setNoDelay?: (v: boolean) => void }).setNoDelay?.(true);
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('drain', () => this.#pump());
    socket.on('error', (err) => this.#finish(new LinkClosedError('PC_ERR_LINK_CLOSED', err.message, { cause: err })));
    socket.on('end', () => this.#finish(new LinkClosedError('PC_ERR_LINK_CLOSED', 'peer ended the connection')));
    socket.on('close', () => this.#finish(new LinkClosedError('PC_ERR_LINK_CLOSED', 'socket closed')));
    this.#keepalive = setInterval(() => this.#tick(), Math.max(L.LINK_MIN_TICK_MS, Math.min(this.#interval, this.#timeout / L.LINK_TICKS_PER_TIMEOUT)));
    this.#keepalive.unref();
  }

  get closed(): boolean {
    return this.#closed;
  }
  get closeError(): PostcopyError | undefined {
    return this.#closeError;
  }
  /** Open, and the peer was heard from within the keepalive timeout. */
  get peerAlive(): boolean {
    if (this.#closed) return false;
    return this.#socket.isPaused() || Date.now() - this.#lastReceived < this.#timeout;
  }
  get bulkQueuedBytes(): number {
    return this.#queue.bulkBytes;
  }
  /** Bytes handed to the socket but not yet to the kernel. */
  get socketQueuedBytes(): number {
    return this.#socket.writableLength;
  }

  /**
   * Set who takes incoming messages (null: hold them, and pause reading, until a handler is set again).
   * Messages held meanwhile are delivered first, in order.
   */
  setHandler(handler: MessageHandler | null): void {
    this.#handler = handler;
    while (this.#handler !== null && this.#backlog.length > 0 && !this.#closed) {
      this.#dispatch(this.#backlog.shift()!);
    }
    if (this.#handler !== null && !this.#closed) this.#socket.resume();
  }

  /** The handshake proved the peer: frames up to the per-type caps are taken from now on. */
  markAuthenticated(): void {
    this.#decoder.setPayloadLimit(Infinity);
  }

  /** Send a control or urgent message ahead of all bulk data; `onSent` as for sendFrame. */
  send(msg: Message, onSent?: () => void): void {
    this.sendFrame(encodeMessage(msg), true, undefined, onSent);
  }

  /**
   * Queue an encoded frame (header + payload parts). Bulk callers should respect waitBulkSpace().
   * `onWritten` runs once the socket no longer needs the parts (a pooled buffer may then be reused); `onSent` once
   * the frame has been written to the socket (with the kernel unless the socket was already backed up).
   */
  sendFrame(parts: Buffer[], urgent: boolean, onWritten?: () => void, onSent?: () => void): void {
    if (this.#closed) return;
    let bytes = 0;
    for (const p of parts) bytes += p.length;
    if (!this.#queue.push({ parts, bytes, onWritten, onSent }, urgent)) {
      this.close(new ProtocolError('PC_ERR_MALFORMED', 'urgent send queue overflow'));
      return;
    }
    this.#pump();
  }

  /** Run fn with the socket corked: the frames it sends leave in one write, not one system call each. */
  batch<T>(fn: () => T): T {
    if (this.#closed) return fn();
    this.#socket.cork();
    try {
      return fn();
    } finally {
      this.#socket.uncork();
    }
  }

  /** Resolves when the bulk queue has room (or the link is closed). */
  waitBulkSpace(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return this.#queue.waitBulkSpace();
  }

  pauseReading(): void {
    this.#socket.pause();
  }
  resumeReading(): void {
    this.#socket.resume();
  }

  /** Close the link. With an error, tell the peer first (an ERROR frame) and log it. */
  close(err?: PostcopyError): void {
    if (this.#closed) return;
    if (err) {
      this.#log.warn({ err, code: err.code }, 'closing migration link');
      const frame = encodeMessage({ type: 'ERROR', code: err.code, message: err.message });
      this.#queue.clear(false);
      for (const p of frame) this.#socket.write(p);
      // Nothing more is taken from a peer cut off for an error: what it still sends stays in the kernel.
      this.#socket.pause();
      this.#finish(err);
      this.#socket.end();
      setTimeout(() => this.#socket.destroy(), L.LINK_LINGER_MS).unref();
    } else {
      // A clean close still sends what was queued as urgent (ABORT, CONFIRM, ...) before the FIN.
      for (const f of this.#queue.takeUrgent()) {
        writeParts(this.#socket, f);
        this.bytesSent += f.bytes;
      }
      this.#finish(undefined);
      this.#socket.end();
      setTimeout(() => this.#socket.destroy(), L.LINK_LINGER_MS).unref();
    }
  }

  /** Drop the connection at once without a goodbye (tests and fatal local errors). */
  destroy(err?: PostcopyError): void {
    this.#finish(err);
    this.#socket.destroy();
  }

  #pump(): void {
    const s = this.#socket;
    if (this.#closed || s.destroyed) return;
    let wrote = false;
    let sent: Array<() => void> | null = null;
    while (s.writableLength < this.#highWater) {
      const f = this.#queue.next();
      if (!f) break;
      if (!wrote) {
        s.cork();
        wrote = true;
      }
      writeParts(s, f);
      if (f.onSent) (sent ??= []).push(f.onSent);
      this.bytesSent += f.bytes;
    }
    if (!wrote) return;
    // Uncorking writes the batch to the socket: only now has it left this process's queues.
    s.uncork();
    if (sent) for (const f of sent) f();
  }

  /**
   * When the first byte of the frame now being handled arrived (valid while its message is handled): a round trip
   * read from it does not include the frame's own transfer, which on a slow link is longer than the queue it measures.
   */
  get frameStartedAt(): number {
    return this.#frameStartedAt;
  }

  #onData(chunk: Buffer): void {
    if (this.#closed) return;
    this.bytesReceived += chunk.length;
    const now = performance.now();
    // The first frame this chunk completes began with the partial one held before it (or in this chunk); the rest
    // began in this chunk.
    const firstStartedAt = this.#partialSince ?? now;
    let frames;
    try {
      frames = this.#decoder.push(chunk);
    } catch (e) {
      this.close(asProtocolError(e));
      return;
    }
    this.#partialSince = this.#decoder.buffered === 0 ? null : frames.length === 0 ? firstStartedAt : now;
    let index = 0;
    // The peer is heard when a whole frame arrives, not a byte: a length field corrupted upward makes the decoder
    // swallow everything after it (PINGs too) into one frame that never ends, and bytes alone kept that link up.
    if (frames.length > 0) this.#lastReceived = Date.now();
    for (const f of frames) {
      if (this.#closed) return;
      this.#frameStartedAt = index++ === 0 ? firstStartedAt : now;
      let msg: Message;
      try {
        msg = decodeMessage(f);
      } catch (e) {
        this.close(asProtocolError(e));
        return;
      }
      if (msg.type === 'PING') {
        this.send({ type: 'PONG', seq: msg.seq });
        continue;
      }
      if (msg.type === 'PONG') {
        // Only the latest PING is timed: an answer to an older one says nothing about it.
        if (this.#pingOut?.seq === msg.seq) {
          this.emit('rtt', performance.now() - this.#pingOut.at);
          this.#pingOut = null;
        }
        continue;
      }
      if (this.#handler === null) {
        this.#backlog.push(msg);
        this.#socket.pause();
        continue;
      }
      this.#dispatch(msg);
    }
  }

  #dispatch(msg: Message): void {
    try {
      this.#handler!(msg);
    } catch (e) {
      // A local system error (a full disk while saving state, say) is not the peer's fault: the link stays up.
      if (systemErrorCode(e) !== null) {
        this.#log.error({ err: e, type: msg.type }, 'local failure while handling a message; the link stays up');
        return;
      }
      // A handler rejected the message (out of range, unknown id, wrong phase): the peer is cut off.
      this.close(asProtocolError(e));
    }
  }

  #tick(): void {
    if (this.#closed) return;
    // While we hold reading paused the peer's bytes wait in the kernel: that is not the peer's silence.
    if (this.#socket.isPaused()) this.#lastReceived = Date.now();
    const silent = Date.now() - this.#lastReceived;
    if (silent >= this.#timeout) {
      this.#log.warn({ silentMs: silent }, 'migration link silent past keepalive timeout');
      this.destroy(new TimeoutError('PC_ERR_TIMEOUT', `no data from peer for ${silent} ms`));
      return;
    }
    if (silent >= this.#interval) this.ping();
  }

  /** Send a PING now; its PONG reports the round trip as an 'rtt' event. */
  ping(): void {
    if (this.#closed) return;
    const seq = this.#pingSeq++ & L.PING_SEQ_MASK;
    const out = { seq, at: performance.now() };
    this.#pingOut = out;
    this.send({ type: 'PING', seq }, () => void (out.at = performance.now()));
  }

  #finish(err: PostcopyError | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeError = err;
    clearInterval(this.#keepalive);
    this.#queue.clear(true);
    this.emit('close', err);
  }
}

/**
 * Turn a connection away before any link exists for it (too many at once): one ERROR frame, then the
 * connection ends; nothing it sends is read.
 */
export function refuseConnection(socket: Duplex, err: PostcopyError): void {
  socket.on('error', () => {});
  socket.pause();
  socket.end(Buffer.concat(encodeMessage({ type: 'ERROR', code: err.code, message: err.message })));
  setTimeout(() => socket.destroy(), L.LINK_LINGER_MS).unref();
}

/** What cuts the peer off: our own error as it is, anything else thrown while decoding or handling as malformed. */
function asProtocolError(e: unknown): PostcopyError {
  return toPostcopyError(e, (detail, options) => new ProtocolError('PC_ERR_MALFORMED', detail, options));
}
