// NbdClient: one NBD connection (TCP or Unix socket) with many requests in flight matched by
// cookie, bounded; splits large reads/writes; clean close() drains then sends NBD_CMD_DISC.
import net from 'node:net';
import { NbdError, StateError } from '../common/errors.js';
import { silentLogger, type Logger } from '../common/logger.js';
import { ClientDecoder, DEFAULT_MAX_CHUNK_LENGTH } from './client-decoder.js';
import { negotiate, type NegotiatedExport } from './client-handshake.js';
import { PendingRequest, type RequestResult } from './client-request.js';
import * as codec from './codec.js';
import type { BlockSizeLimits, ServerMessage } from './codec.js';
import * as C from './constants.js';
import { formatNbdUri, parseNbdUri, type NbdAddress } from './uri.js';
import { utf8 } from './wire-write.js';

export { parseNbdUri, formatNbdUri, type NbdAddress, type NbdUri } from './uri.js';

export type NbdTarget = string | NbdAddress;

export type ClientState = 'negotiating' | 'ready' | 'closing' | 'closed' | 'failed';

const CLIENT_TRANSITIONS: Record<ClientState, readonly ClientState[]> = {
  negotiating: ['ready', 'failed'],
  ready: ['closing', 'failed'],
  closing: ['closed', 'failed'],
  closed: [],
  failed: [],
};

export interface NbdClientOptions {
  logger?: Logger;
  /** Requests on the wire at once; more wait their turn. Default 16 (qemu's depth). */
  maxInFlight?: number;
  /** Ask for structured replies (default true). */
  structuredReplies?: boolean;
  /** Ask for base:allocation (default true; needs structured replies). */
  baseAllocation?: boolean;
  /** Time allowed for TCP connect plus handshake. Default 30 s. */
  connectTimeoutMs?: number;
  /** Upper bound on one READ/WRITE request even if the server allows more. Default 32 MiB. */
  maxRequestBytes?: number;
  /** Time close() waits for the server to close after NBD_CMD_DISC. Default 5 s. */
  closeTimeoutMs?: number;
  /**
   * Time close() waits for requests in flight before giving up on them and dropping the
   * connection (which nbdkit 1.32 does not survive: keep it generous). Default 60 s.
   */
  drainTimeoutMs?: number;
}

/** One run of base:allocation: flags are NBD_STATE_HOLE / NBD_STATE_ZERO bits. */
export interface BlockStatusExtent {
  offset: number;
  length: number;
  flags: number;
}

export interface RequestOptions {
  fua?: boolean;
}

/** Largest length a payload-less request carries, kept aligned for any block size ≤ 64 KiB. */
const MAX_U32_ALIGNED = 0x100000000 - C.NBD_MAX_MIN_BLOCK;

export class NbdClient {
  readonly #socket: net.Socket;
  readonly #log: Logger;
  readonly #decoder: ClientDecoder;
  readonly #pending = new Map<bigint, PendingRequest>();
  readonly #maxInFlight: number;
  readonly #slotWaiters: Array<() => void> = [];
  readonly #drainWaiters: Array<() => void> = [];
  readonly #closeTimeoutMs: number;
  readonly #drainTimeoutMs: number;
  #info!: NegotiatedExport;
  #nextCookie = 1n;
  #inFlight = 0;
  /** Requests accepted by the API but not finished (in flight or waiting for a slot). */
  #active = 0;
  #idleWaiters: Array<() => void> = [];
  #state: ClientState = 'negotiating';
  /** Why the connection failed (set on entering 'failed'). */
  #failure: NbdError | undefined;
  #maxRequest = C.NBD_DEFAULT_MAX_PAYLOAD;
  #minBlock = 1;
  // Handshake plumbing: a waiter for the next decoded message.
  #handshakeWaiter: { resolve: (m: ServerMessage) => void; reject: (e: Error) => void } | undefined;
  readonly closed: Promise<void>;

  private constructor(socket: net.Socket, opts: NbdClientOptions, log: Logger) {
    this.#socket = socket;
    this.#log = log;
    this.#maxInFlight = Math.max(1, opts.maxInFlight ?? C.CLIENT_MAX_IN_FLIGHT);
    this.#closeTimeoutMs = opts.closeTimeoutMs ?? C.CLIENT_CLOSE_TIMEOUT_MS;
    this.#drainTimeoutMs = opts.drainTimeoutMs ?? C.CLIENT_DRAIN_TIMEOUT_MS;
    this.#decoder = new ClientDecoder({
      simpleReplyLength: (cookie) => this.#pending.get(cookie)?.simpleReplyLength,
      knownCookie: (cookie) => this.#pending.has(cookie),
      maxChunkLength: DEFAULT_MAX_CHUNK_LENGTH,
    });
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('drain', () => this.#drainWaiters.splice(0).forEach((w) => w()));
    socket.on('error', (err) => this.#fail(new NbdError('NBD_ERR_CLOSED', err.message, { cause: err })));
    socket.on('close', () => this.#fail(new NbdError('NBD_ERR_CLOSED', 'connection closed by peer')));
  }

  /**
   * Connect and negotiate. target is a URI (nbd://, nbd+unix://) or an address; exportName,
   * when given, overrides the URI's (default "").
   */
  static async connect(target: NbdTarget, exportName?: string, opts: NbdClientOptions = {}): Promise<NbdClient> {
    const parsed = typeof target === 'string' ? parseNbdUri(target) : { address: target, exportName: '' };
    const name = exportName ?? parsed.exportName;
    const uri = formatNbdUri(parsed.address, name);
    // Refused here, before a socket, as the encoder would refuse it: a name the spec does not allow is the caller's mistake.
    utf8(name, 'export name');
    const log = (opts.logger ?? silentLogger()).child({ component: 'nbd-client', uri });
    const timeoutMs = opts.connectTimeoutMs ?? C.CLIENT_CONNECT_TIMEOUT_MS;
    const socket = 'socketPath' in parsed.address
      ? net.connect({ path: parsed.address.socketPath })
      : net.connect({ host: parsed.address.host, port: parsed.address.port });
    socket.setNoDelay(true);
    const client = new NbdClient(socket, opts, log);
    const timer = setTimeout(() => client.#fail(new NbdError('NBD_ERR_HANDSHAKE', `no handshake within ${timeoutMs} ms`)), timeoutMs);
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
        socket.once('close', () => reject(client.#failure ?? new NbdError('NBD_ERR_CLOSED', 'closed while connecting')));
      });
      const info = await negotiate(
        { next: () => client.#nextHandshakeMessage(), send: (b) => socket.write(b), decoder: client.#decoder },
        name,
        { structuredReplies: opts.structuredReplies ?? true, baseAllocation: opts.baseAllocation ?? true },
        log,
      );
      client.#enterTransmission(info, opts);
    } catch (err) {
      socket.destroy();
      // A connection lost mid-handshake (timeout, reset, EOF) is a handshake failure to the caller.
      if (err instanceof NbdError && err.code === 'NBD_ERR_CLOSED') {
        const cause = err.cause instanceof Error ? err.cause : err;
        throw new NbdError('NBD_ERR_HANDSHAKE', `cannot connect to ${uri}: ${cause.message}`, { cause: err });
      }
      // The server's refusal of an option is told as it is; a server that broke the handshake cannot be connected to.
      if (err instanceof NbdError && err.code === 'NBD_ERR_OPTION') throw err;
      throw new NbdError('NBD_ERR_HANDSHAKE', `cannot connect to ${uri}: ${(err as Error).message}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
    return client;
  }

  // ---------- what the server told us ----------

  get size(): number {
    return this.#info.size;
  }
  get exportName(): string {
    return this.#info.exportName;
  }
  get transmissionFlags(): number {
    return this.#info.transmissionFlags;
  }
  get structuredReplies(): boolean {
    return this.#info.structuredReplies;
  }
  /** base:allocation is available: blockStatus() reports real holes and zeroes. */
  get baseAllocation(): boolean {
    return this.#info.baseAllocationId !== undefined;
  }
  get blockSizes(): BlockSizeLimits | undefined {
    return this.#info.blockSizes;
  }
  get readOnly(): boolean {
    return this.#flag(C.NBD_FLAG_READ_ONLY);
  }
  get canMultiConn(): boolean {
    return this.#flag(C.NBD_FLAG_CAN_MULTI_CONN);
  }
  get negotiatedVia(): 'GO' | 'EXPORT_NAME' {
    return this.#info.via;
  }
  /** Set when the connection has failed (the reason); undefined while healthy or closed cleanly. */
  get failure(): NbdError | undefined {
    return this.#failure;
  }
  get isOpen(): boolean {
    return this.#state === 'ready';
  }

  get state(): ClientState {
    return this.#state;
  }

  #transition(to: ClientState): void {
    if (!CLIENT_TRANSITIONS[this.#state].includes(to)) {
      throw new StateError('PC_ERR_STATE', `NBD client ${this.#state} -> ${to}`);
    }
    this.#state = to;
  }

  #flag(bit: number): boolean {
    return (this.#info.transmissionFlags & bit) !== 0;
  }

  // ---------- commands ----------

  /** Read [offset, offset+length); split into requests the server accepts. */
  async read(offset: number, length: number): Promise<Buffer> {
    this.#checkRange(offset, length);
    if (length === 0) return Buffer.alloc(0);
    const m = this.#minBlock;
    if (offset % m !== 0 || length % m !== 0) {
      // The server asked for aligned requests: read the covering aligned range and cut (size % m == 0).
      const start = offset - (offset % m);
      const end = Math.min(Math.ceil((offset + length) / m) * m, this.size);
      const whole = await this.read(start, end - start);
      return whole.subarray(offset - start, offset - start + length);
    }
    if (length <= this.#maxRequest) return (await this.#request(C.NBD_CMD_READ, 0, offset, length)) as Buffer;
    const parts: Promise<RequestResult>[] = [];
    for (let at = 0; at < length; at += this.#maxRequest) {
      parts.push(this.#request(C.NBD_CMD_READ, 0, offset + at, Math.min(this.#maxRequest, length - at)));
    }
    return Buffer.concat((await Promise.all(parts)) as Buffer[], length);
  }

  async write(offset: number, data: Buffer, opts: RequestOptions = {}): Promise<void> {
    this.#checkWritable(offset, data.length, 0);
    const flags = this.#fuaFlag(opts);
    const parts: Promise<RequestResult>[] = [];
    for (let at = 0; at < data.length; at += this.#maxRequest) {
      const piece = data.subarray(at, Math.min(at + this.#maxRequest, data.length));
      parts.push(this.#request(C.NBD_CMD_WRITE, flags, offset + at, piece.length, piece));
    }
    await Promise.all(parts);
  }

  async flush(): Promise<void> {
    this.#requireFlag(C.NBD_FLAG_SEND_FLUSH, 'FLUSH');
    await this.#request(C.NBD_CMD_FLUSH, 0, 0, 0);
  }

  async trim(offset: number, length: number, opts: RequestOptions = {}): Promise<void> {
    this.#checkWritable(offset, length, C.NBD_FLAG_SEND_TRIM);
    await this.#payloadless(C.NBD_CMD_TRIM, this.#fuaFlag(opts), offset, length);
  }

  async writeZeroes(offset: number, length: number, opts: RequestOptions & { noHole?: boolean } = {}): Promise<void> {
    this.#checkWritable(offset, length, C.NBD_FLAG_SEND_WRITE_ZEROES);
    const flags = this.#fuaFlag(opts) | (opts.noHole ? C.NBD_CMD_FLAG_NO_HOLE : 0);
    await this.#payloadless(C.NBD_CMD_WRITE_ZEROES, flags, offset, length);
  }

  async cache(offset: number, length: number): Promise<void> {
    this.#checkRange(offset, length);
    this.#requireFlag(C.NBD_FLAG_SEND_CACHE, 'CACHE');
    await this.#payloadless(C.NBD_CMD_CACHE, 0, offset, length, this.#maxRequest);
  }

  /**
   * base:allocation for exactly [offset, offset+length): re-asks after short answers, trims
   * overrun. Without base:allocation everything is reported as data (flags 0).
   */
  async blockStatus(offset: number, length: number): Promise<BlockStatusExtent[]> {
    this.#checkRange(offset, length);
    if (length === 0) return [];
    if (!this.baseAllocation) return [{ offset, length, flags: 0 }];
    const end = offset + length;
    const out: BlockStatusExtent[] = [];
    let pos = offset;
    const m = this.#minBlock;
    while (pos < end) {
      // Ask on block boundaries (size % m == 0), then drop what lies before pos.
      const askFrom = pos - (pos % m);
      const askEnd = Math.min(Math.ceil(end / m) * m, this.size, askFrom + MAX_U32_ALIGNED);
      const descriptors = (await this.#request(C.NBD_CMD_BLOCK_STATUS, 0, askFrom, askEnd - askFrom)) as codec.BlockStatusDescriptor[];
      const before = pos;
      let cursor = askFrom;
      for (const d of descriptors) {
        if (pos >= end) break;
        const dEnd = cursor + d.length;
        cursor = dEnd;
        if (dEnd <= pos) continue;
        const len = Math.min(dEnd, end) - pos;
        const last = out[out.length - 1];
        if (last && last.flags === d.flags && last.offset + last.length === pos) last.length += len;
        else out.push({ offset: pos, length: len, flags: d.flags });
        pos += len;
      }
      if (pos === before) throw new NbdError('NBD_ERR_MALFORMED', 'BLOCK_STATUS reply made no progress');
    }
    return out;
  }

  /** Wait for every request to finish, send NBD_CMD_DISC, and close the socket. Idempotent. */
  async close(): Promise<void> {
    if (this.#state === 'ready') {
      this.#transition('closing');
      let timer: NodeJS.Timeout | undefined;
      const drained = await Promise.race([
        this.#idle().then(() => true),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), this.#drainTimeoutMs);
        }),
      ]);
      clearTimeout(timer);
      if (!drained) {
        this.#log.warn({ active: this.#active }, 'NBD requests did not finish before close; dropping the connection');
        this.#fail(new NbdError('NBD_ERR_CLOSED', `requests still in flight after ${this.#drainTimeoutMs} ms at close`));
      }
      if (this.state === 'closing') {
        this.#log.debug('sending NBD_CMD_DISC');
        this.#socket.end(codec.encodeRequest({ flags: 0, command: C.NBD_CMD_DISC, cookie: this.#nextCookie++, offset: 0, length: 0 }));
        const timer = setTimeout(() => this.#socket.destroy(), this.#closeTimeoutMs);
        await this.closed;
        clearTimeout(timer);
      }
    }
    this.#socket.destroy();
    await this.closed;
  }

  /** Hard close: fail everything now (no DISC). For tests of servers and for giving up. */
  destroy(reason = 'destroyed by caller'): void {
    this.#fail(new NbdError('NBD_ERR_CLOSED', reason));
  }

  // ---------- plumbing ----------

  #checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new NbdError('NBD_ERR_REQUEST', `range [${offset}, +${length}) outside the export (${this.size})`, { errno: C.NBD_EINVAL });
    }
  }

  #checkWritable(offset: number, length: number, flag: number): void {
    this.#checkRange(offset, length);
    if (offset % this.#minBlock !== 0 || length % this.#minBlock !== 0) {
      throw new NbdError('NBD_ERR_REQUEST', `[${offset}, +${length}) not aligned to the server's ${this.#minBlock}-byte blocks`, {
        errno: C.NBD_EINVAL,
      });
    }
    if (this.readOnly) throw new NbdError('NBD_ERR_REQUEST', 'export is read-only', { errno: C.NBD_EPERM });
    if (flag) this.#requireFlag(flag, C.nameOfTransmissionFlags(flag));
  }

  #requireFlag(flag: number, what: string): void {
    if (!this.#flag(flag)) throw new NbdError('NBD_ERR_REQUEST', `server does not support ${what}`, { errno: C.NBD_EINVAL });
  }

  #fuaFlag(opts: RequestOptions): number {
    if (!opts.fua) return 0;
    this.#requireFlag(C.NBD_FLAG_SEND_FUA, 'FUA');
    return C.NBD_CMD_FLAG_FUA;
  }

  /** TRIM/WRITE_ZEROES/CACHE: lengths are u32, so split very long ranges. */
  async #payloadless(command: number, flags: number, offset: number, length: number, step = MAX_U32_ALIGNED): Promise<void> {
    const parts: Promise<RequestResult>[] = [];
    for (let at = 0; at < length; at += step) parts.push(this.#request(command, flags, offset + at, Math.min(step, length - at)));
    await Promise.all(parts);
  }

  #enterTransmission(info: NegotiatedExport, opts: NbdClientOptions): void {
    if (!Number.isSafeInteger(info.size)) throw new NbdError('NBD_ERR_HANDSHAKE', `export size ${info.size} too large`);
    this.#info = info;
    this.#minBlock = info.blockSizes?.minimum ?? 1;
    let max = Math.min(opts.maxRequestBytes ?? C.NBD_DEFAULT_MAX_PAYLOAD, info.blockSizes?.maximum ?? C.NBD_DEFAULT_MAX_PAYLOAD);
    max -= max % this.#minBlock;
    this.#maxRequest = Math.max(max, this.#minBlock);
    // No honest chunk is longer than our largest read (+ its offset) or a full status reply.
    this.#decoder.maxChunkLength = Math.max(this.#maxRequest + C.NBD_OFFSET_DATA_PREFIX, C.NBD_BLOCK_STATUS_HEAD + C.NBD_BLOCK_STATUS_EXTENT * C.NBD_MAX_EXTENTS);
    this.#transition('ready');
    this.#log.debug(
      {
        size: info.size,
        tflags: C.nameOfTransmissionFlags(info.transmissionFlags),
        structuredReplies: info.structuredReplies,
        baseAllocation: info.baseAllocationId !== undefined,
        blockSizes: info.blockSizes,
        via: info.via,
      },
      'NBD export negotiated',
    );
    // Bytes that arrived with the last handshake message belong to transmission.
    this.#dispatch();
  }

  #nextHandshakeMessage(): Promise<ServerMessage> {
    if (this.#failure) return Promise.reject(this.#failure);
    try {
      const msg = this.#decoder.next();
      if (msg) return Promise.resolve(msg);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      this.#handshakeWaiter = { resolve, reject };
    });
  }

  #onData(chunk: Buffer): void {
    this.#decoder.push(chunk);
    if (this.#state !== 'negotiating') return this.#dispatch();
    const waiter = this.#handshakeWaiter;
    if (!waiter) return;
    try {
      const msg = this.#decoder.next();
      if (!msg) return;
      this.#handshakeWaiter = undefined;
      waiter.resolve(msg);
    } catch (err) {
      this.#handshakeWaiter = undefined;
      waiter.reject(err as Error);
      this.#fail(err as Error);
    }
  }

  #dispatch(): void {
    try {
      for (let msg = this.#decoder.next(); msg; msg = this.#decoder.next()) this.#onReply(msg);
    } catch (err) {
      this.#log.warn({ err }, 'NBD server broke the protocol; closing the connection');
      this.#fail(err as Error);
    }
  }

  #onReply(msg: ServerMessage): void {
    if (msg.type !== 'simpleReply' && msg.type !== 'chunk') {
      throw new NbdError('NBD_ERR_MALFORMED', `unexpected ${msg.type} in transmission`);
    }
    const req = this.#pending.get(msg.cookie);
    if (!req) throw new NbdError('NBD_ERR_UNKNOWN_COOKIE', `reply for cookie ${msg.cookie}`);
    if (msg.type === 'simpleReply') {
      this.#pending.delete(msg.cookie);
      req.simpleReply(msg.error, msg.data);
    } else if (req.chunk(msg.body, msg.done)) {
      this.#pending.delete(msg.cookie);
    }
  }

  async #request(command: number, flags: number, offset: number, length: number, data?: Buffer): Promise<RequestResult> {
    if (this.#failure) throw this.#failure;
    if (this.#state !== 'ready') throw new NbdError('NBD_ERR_CLOSED', `client is ${this.#state}`);
    this.#active++;
    try {
      await this.#acquireSlot();
      try {
        if (this.#failure) throw this.#failure;
        while (this.#socket.writableNeedDrain && !this.#failure) await new Promise<void>((r) => this.#drainWaiters.push(r));
        if (this.#failure) throw this.#failure;
        const cookie = this.#nextCookie++;
        const done = new Promise<RequestResult>((resolve, reject) => {
          this.#pending.set(cookie, new PendingRequest(cookie, command, offset, length, this.#info.baseAllocationId, resolve, reject));
        });
        this.#socket.cork();
        this.#socket.write(codec.encodeRequest({ flags, command, cookie, offset, length }));
        if (data) this.#socket.write(data);
        this.#socket.uncork();
        return await done;
      } finally {
        this.#releaseSlot();
      }
    } finally {
      if (--this.#active === 0) this.#idleWaiters.splice(0).forEach((w) => w());
    }
  }

  #acquireSlot(): Promise<void> {
    if (this.#inFlight < this.#maxInFlight) {
      this.#inFlight++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#slotWaiters.push(resolve));
  }

  /** Hand the slot straight to the next waiter, if any, so the in-flight count never overshoots. */
  #releaseSlot(): void {
    const next = this.#slotWaiters.shift();
    if (next) next();
    else this.#inFlight--;
  }

  #idle(): Promise<void> {
    if (this.#active === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Connection is dead: reject everything in flight and everything waiting. */
  #fail(err: Error): void {
    if (this.#state === 'failed' || this.#state === 'closed') return;
    // The socket closing after our DISC, with nothing outstanding, is the clean end.
    if (this.#state === 'closing' && this.#active === 0) {
      this.#transition('closed');
      this.#socket.destroy();
      return;
    }
    const failure = err instanceof NbdError && err.code === 'NBD_ERR_CLOSED'
      ? err
      : new NbdError('NBD_ERR_CLOSED', err.message, { cause: err });
    this.#transition('failed');
    this.#failure = failure;
    this.#socket.destroy();
    this.#handshakeWaiter?.reject(failure);
    this.#handshakeWaiter = undefined;
    for (const req of this.#pending.values()) req.fail(failure);
    this.#pending.clear();
    // Waiters wake holding a slot each, see the failure and reject their own requests.
    const waiters = this.#slotWaiters.splice(0);
    this.#inFlight += waiters.length;
    waiters.forEach((w) => w());
    this.#drainWaiters.splice(0).forEach((w) => w());
  }
}
