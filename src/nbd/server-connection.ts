// One client connection of the NBD server: a small state machine (options [-> tlsHandshake -> options]
// -> transmission -> draining -> closed) over a duplex socket, with requests in flight bounded by pausing the socket.
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { NbdError, ProtocolError, StateError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { ReadTrace } from '../common/block-device.js';
import type { ClientMessage, NbdRequest } from './codec-types.js';
import * as C from './constants.js';
import { encodeGreeting } from './handshake-encoder.js';
import { HANDSHAKE_FLAGS, KNOWN_CLIENT_FLAGS, TRANSITIONS, phaseOf, type ConnPhase, type ConnState, type ConnectionOptions } from './server-connection-state.js';
import { ServerDecoder } from './server-decoder.js';
import { InFlightLoad } from './server-load.js';
import { handleOption, resetAfterTls, transmissionFlagsFor, type NegotiationState } from './server-negotiation.js';
import { errorReply, executeRequest, validateRequest, type TransmissionContext } from './server-requests.js';

export class ServerConnection {
  /** The plain socket, then the TLS socket over it after STARTTLS. */
  #socket: Duplex;
  readonly #opts: ConnectionOptions;
  readonly #log: Logger;
  readonly #decoder: ServerDecoder;
  readonly #negotiation: NegotiationState;
  readonly #listeners = {
    data: (chunk: Buffer) => this.#onData(chunk),
    drain: () => this.#maybeResume(),
    end: () => this.#onEnd(),
    error: (err: Error) => this.#log.debug({ err }, 'socket error'),
    close: () => this.#onClose(),
  };
  readonly #openedAt = Date.now();
  /** Last time bytes came in or a request completed: how long an idle client has held its slot. */
  #lastActivity = Date.now();
  #closeSeen = false;
  #resolveClosed!: () => void;
  #state: ConnState = 'clientFlags';
  #ctx: TransmissionContext | undefined;
  #optionCount = 0;
  readonly #load: InFlightLoad;
  #paused = false;
  /** The client sent FIN: no more input will come. */
  #peerEnded = false;
  #handshakeTimer: NodeJS.Timeout | undefined;
  #requests = 0;
  /** Requests answered with an error (refused or failed on the device). */
  #errors = 0;
  readonly closed: Promise<void>;

  constructor(socket: Duplex, opts: ConnectionOptions) {
    this.#socket = socket;
    this.#opts = opts;
    this.#log = opts.logger;
    this.#load = new InFlightLoad(opts.maxInFlight, opts.maxInFlightBytes);
    this.#decoder = new ServerDecoder({ maxPayload: opts.maxPayload, maxOptionLength: opts.maxOptionLength });
    this.#negotiation = { noZeroes: false, tls: opts.tls ? 'required' : 'none', structuredReplies: false, metaContextExport: undefined };
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    this.#attach(socket);
    this.#handshakeTimer = setTimeout(() => this.#cutOff('handshake timed out'), opts.handshakeTimeoutMs);
    this.#handshakeTimer.unref?.();
    this.#send([encodeGreeting(HANDSHAKE_FLAGS)]);
  }

  get state(): ConnState {
    return this.#state;
  }

  get inFlight(): number {
    return this.#load.requests;
  }

  get phase(): ConnPhase {
    return phaseOf(this.#state);
  }

  get openedAt(): number {
    return this.#openedAt;
  }

  get lastActivity(): number {
    return this.#lastActivity;
  }

  /** Dropped to make room for a new client under the connection cap. */
  evict(reason: string): void {
    if (this.#state === 'closed') this.#socket.destroy();
    else this.#cutOff(reason);
  }

  #attach(socket: Duplex): void {
    for (const [event, fn] of Object.entries(this.#listeners)) socket.on(event, fn);
  }

  /** Stop reading the plain socket (its close and errors still count) before TLS takes it over. */
  #detachReading(socket: Duplex): void {
    socket.pause();
    socket.off('data', this.#listeners.data);
    socket.off('drain', this.#listeners.drain);
    socket.off('end', this.#listeners.end);
  }

  #transition(to: ConnState): void {
    if (!TRANSITIONS[this.#state].includes(to)) throw new StateError('PC_ERR_STATE', `NBD connection ${this.#state} -> ${to}`);
    this.#state = to;
  }

  /** Stop taking requests, let the ones in flight finish, then close (server shutdown). */
  shutdown(): Promise<void> {
    if (this.#state === 'transmission') this.#startDrain('server shutting down');
    else if (this.#state !== 'draining' && this.#state !== 'closed') this.#close('server shutting down');
    return this.closed;
  }

  destroy(): void {
    this.#socket.destroy();
  }

  #onData(chunk: Buffer): void {
    this.#lastActivity = Date.now();
    if (this.#state === 'draining' || this.#state === 'closed' || this.#state === 'tlsHandshake') return;
    this.#decoder.push(chunk);
    this.#pump();
  }

  /** Decode and handle messages until input runs out, we must pause, or the state forbids more. */
  #pump(): void {
    // A decoder error is the client breaking the wire: its message says how. Anything else thrown here is ours.
    let decoding = false;
    try {
      while (!this.#paused && (this.#state === 'clientFlags' || this.#state === 'options' || this.#state === 'transmission')) {
        decoding = true;
        const msg = this.#decoder.next();
        decoding = false;
        if (!msg) {
          // Everything the half-closed client sent has been taken: finish it and close.
          if (this.#peerEnded) this.#onInputExhausted();
          return;
        }
        this.#handle(msg);
      }
    } catch (err) {
      const peerBroke = (decoding && err instanceof NbdError) || err instanceof ProtocolError;
      this.#cutOff(peerBroke ? (err as Error).message : 'internal error', err);
    }
  }

  #handle(msg: ClientMessage): void {
    switch (msg.type) {
      case 'clientFlags':
        return this.#onClientFlags(msg.flags);
      case 'option':
        return this.#onOption(msg.option, msg.data);
      case 'request':
        return this.#onRequest(msg);
    }
  }

  #onClientFlags(flags: number): void {
    // The spec: close on a client flag we don't know or didn't offer.
    if ((flags & ~KNOWN_CLIENT_FLAGS) !== 0) return this.#cutOff(`unknown client flags 0x${flags.toString(16)}`);
    this.#negotiation.noZeroes = (flags & C.NBD_FLAG_C_NO_ZEROES) !== 0;
    this.#transition('options');
  }

  #onOption(option: number, data: Buffer): void {
    if (++this.#optionCount > this.#opts.maxOptions) return this.#cutOff(`more than ${this.#opts.maxOptions} options`);
    this.#log.debug({ option: C.nameOfOption(option), length: data.length }, 'option');
    const outcome = handleOption(this.#negotiation, this.#opts.catalog, option, data);
    this.#send(outcome.replies);
    if (outcome.next === 'close') return this.#close(outcome.reason);
    if (outcome.next === 'starttls') return this.#startTls();
    if (outcome.next === 'continue') return;
    const exp = outcome.export;
    this.#ctx = {
      device: exp.device,
      structuredReplies: this.#negotiation.structuredReplies,
      baseAllocation: outcome.baseAllocation,
      maxPayload: this.#opts.maxPayload,
    };
    this.#decoder.enterTransmission();
    this.#transition('transmission');
    clearTimeout(this.#handshakeTimer);
    const { structuredReplies, baseAllocation } = this.#ctx;
    const tflags = C.nameOfTransmissionFlags(transmissionFlagsFor(exp.device));
    const entered = { export: exp.name, size: exp.device.size, tflags, structuredReplies, baseAllocation, via: C.nameOfOption(option) };
    this.#log.info(entered, 'NBD client entered transmission');
  }

  /** After the STARTTLS ACK (already written in the clear): the TLS handshake on the same socket. */
  #startTls(): void {
    // The client must wait for the ACK before its ClientHello: bytes already here broke that rule.
    if (this.#decoder.buffered > 0) return this.#cutOff('data sent after STARTTLS before its reply');
    const raw = this.#socket as net.Socket;
    this.#transition('tlsHandshake');
    this.#detachReading(raw);
    this.#opts.tls!.upgrade(raw).then(
      (secure) => {
        if (this.#state !== 'tlsHandshake') return void secure.destroy();
        this.#socket = secure;
        this.#attach(secure);
        resetAfterTls(this.#negotiation);
        this.#transition('options');
        this.#log.debug({ protocol: secure.getProtocol(), clientCert: secure.authorized }, 'TLS established');
      },
      (err: Error) => this.#cutOff(`TLS handshake failed: ${err.message}`),
    );
  }

  #onRequest(req: NbdRequest): void {
    const ctx = this.#ctx!;
    if (req.command === C.NBD_CMD_DISC) return this.#startDrain('client sent NBD_CMD_DISC');
    this.#requests++;
    const refusal = validateRequest(req, ctx);
    if (refusal) {
      this.#errors++;
      this.#log.debug({ cmd: C.nameOfCommand(req.command), errno: C.nameOfErrno(refusal.errno), reason: refusal.reason }, 'request refused');
      this.#send(errorReply(req, ctx, refusal.errno, refusal.reason));
      return;
    }
    const bytes = this.#load.begin(req);
    if (this.#load.overloaded) this.#pause();
    // A read's arrival time goes down to the device, which may ask to hear when its reply left (a demand miss).
    const trace: ReadTrace | undefined = req.command === C.NBD_CMD_READ ? { receivedAt: performance.now() } : undefined;
    void executeRequest(req, ctx, trace).then(({ replies, failed }) => {
      this.#lastActivity = Date.now();
      this.#load.end(bytes);
      if (failed) this.#errors++;
      if (this.#state !== 'closed') {
        this.#send(replies);
        trace?.answered?.(performance.now());
      }
      this.#maybeResume();
      if (this.#state === 'draining' && this.#load.requests === 0) this.#close('drained');
    });
  }

  #pause(): void {
    if (this.#paused) return;
    this.#paused = true;
    this.#socket.pause();
  }

  #maybeResume(): void {
    if (!this.#paused || this.#state !== 'transmission') return;
    if (this.#load.overloaded || this.#socket.writableNeedDrain) return;
    this.#paused = false;
    this.#pump();
    if (!this.#paused) this.#socket.resume();
  }

  #send(buffers: readonly Buffer[]): void {
    if (this.#socket.destroyed || !this.#socket.writable) return;
    this.#socket.cork();
    for (const b of buffers) this.#socket.write(b);
    this.#socket.uncork();
    // Replies pile up faster than the client reads them: stop taking requests until drained.
    if (this.#socket.writableNeedDrain && this.#state === 'transmission') this.#pause();
  }

  #startDrain(reason: string): void {
    this.#transition('draining');
    this.#socket.pause();
    this.#log.debug({ reason, inFlight: this.#load.requests }, 'draining');
    if (this.#load.requests === 0) this.#close(reason);
  }

  /** Graceful close: everything queued is flushed, then FIN. */
  #close(reason: string): void {
    if (this.#state === 'closed') return;
    this.#transition('closed');
    clearTimeout(this.#handshakeTimer);
    this.#log.debug({ reason }, 'closing');
    this.#socket.end();
    // A peer that never reads must not keep us half-open forever.
    const timer = setTimeout(() => this.#socket.destroy(), C.SERVER_HALF_CLOSE_TIMEOUT_MS);
    timer.unref?.();
    this.#socket.once('close', () => clearTimeout(timer));
  }

  /** A misbehaving client: one log line, and the connection is dropped. */
  #cutOff(reason: string, err?: unknown): void {
    if (this.#state === 'closed') return;
    this.#log.warn({ err, reason, state: this.#state }, 'NBD client cut off');
    this.#transition('closed');
    clearTimeout(this.#handshakeTimer);
    this.#socket.destroy();
  }

  /** The client half-closed without DISC: answer everything it sent, then close our side too. */
  #onEnd(): void {
    this.#peerEnded = true;
    this.#pump();
  }

  #onInputExhausted(): void {
    if (this.#state === 'transmission') this.#startDrain('client closed its side');
    else if (this.#state === 'clientFlags' || this.#state === 'options') this.#close('client closed its side');
  }

  #onClose(): void {
    // After STARTTLS both the plain and the TLS socket may report it.
    if (this.#closeSeen) return;
    this.#closeSeen = true;
    this.#resolveClosed();
    clearTimeout(this.#handshakeTimer);
    if (this.#state !== 'closed') this.#transition('closed');
    // Per-request failures stay at debug; a connection that saw some gets one summary line.
    const level = this.#errors > 0 ? 'info' : 'debug';
    this.#log[level]({ requests: this.#requests, errors: this.#errors }, 'NBD connection closed');
  }
}
