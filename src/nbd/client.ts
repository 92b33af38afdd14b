// NbdClient: one NBD connection (TCP or Unix socket) with many requests in flight matched by
// cookie, bounded; splits large reads/writes; clean close() drains then sends NBD_CMD_DISC.
import type net from 'node:net';
import { NbdError, StateError } from '../common/errors.js';
import { withTimeout } from '../common/retry.js';
import { silentLogger, type Logger } from '../common/logger.js';
import { ClientDecoder, DEFAULT_MAX_CHUNK_LENGTH } from './client-decoder.js';
import { negotiate, type NegotiatedExport } from './client-handshake.js';
import { connectFailure, openSocket } from './client-connect.js';
import { HandshakeInbox } from './client-inbox.js';
import { MAX_U32_ALIGNED, alignedCover, collectBlockStatus, pieces } from './client-ranges.js';
import { PendingRequest, PendingRequests, type RequestResult } from './client-request.js';
import { ExportRules } from './client-rules.js';
import { RequestSlots } from './client-slots.js';
import { CLIENT_TRANSITIONS, type BlockStatusExtent, type ClientState, type NbdClientOptions, type NbdTarget, type RequestOptions } from './client-types.js';
import type { BlockSizeLimits, BlockStatusDescriptor } from './codec-types.js';
import * as C from './constants.js';
import { encodeRequest } from './transmission-encoder.js';

export { parseNbdUri, formatNbdUri, type NbdAddress, type NbdUri } from './uri.js';
export type { BlockStatusExtent, ClientState, NbdClientOptions, NbdTarget, RequestOptions } from './client-types.js';

export class NbdClient {
  readonly #socket: net.Socket;
  readonly #log: Logger;
  readonly #decoder: ClientDecoder;
  readonly #pending = new PendingRequests();
  readonly #slots: RequestSlots;
  readonly #inbox: HandshakeInbox;
  readonly #drainWaiters: Array<() => void> = [];
  readonly #closeTimeoutMs: number;
  readonly #drainTimeoutMs: number;
  #info!: NegotiatedExport;
  #nextCookie = 1n;
  #state: ClientState = 'negotiating';
  /** Why the connection failed (set on entering 'failed'). */
  #failure: NbdError | undefined;
  #rules!: ExportRules;
  readonly closed: Promise<void>;

  private constructor(socket: net.Socket, opts: NbdClientOptions, log: Logger) {
    this.#socket = socket;
    this.#log = log;
    this.#slots = new RequestSlots(opts.maxInFlight ?? C.CLIENT_MAX_IN_FLIGHT);
    this.#closeTimeoutMs = opts.closeTimeoutMs ?? C.CLIENT_CLOSE_TIMEOUT_MS;
    this.#drainTimeoutMs = opts.drainTimeoutMs ?? C.CLIENT_DRAIN_TIMEOUT_MS;
    this.#decoder = new ClientDecoder({
      simpleReplyLength: (cookie) => this.#pending.simpleReplyLength(cookie),
      knownCookie: (cookie) => this.#pending.has(cookie),
      maxChunkLength: DEFAULT_MAX_CHUNK_LENGTH,
    });
    this.#inbox = new HandshakeInbox(this.#decoder);
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
    const { socket, name, uri } = openSocket(target, exportName);
    const log = (opts.logger ?? silentLogger()).child({ component: 'nbd-client', uri });
    const timeoutMs = opts.connectTimeoutMs ?? C.CLIENT_CONNECT_TIMEOUT_MS;
    const client = new NbdClient(socket, opts, log);
    const timer = setTimeout(() => client.#fail(new NbdError('NBD_ERR_HANDSHAKE', `no handshake within ${timeoutMs} ms`)), timeoutMs);
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
        socket.once('close', () => reject(client.#failure ?? new NbdError('NBD_ERR_CLOSED', 'closed while connecting')));
      });
      const info = await negotiate(
        { next: () => client.#inbox.next(client.#failure), send: (b) => socket.write(b), decoder: client.#decoder },
        name,
        { structuredReplies: opts.structuredReplies ?? true, baseAllocation: opts.baseAllocation ?? true },
        log,
      );
      client.#enterTransmission(info, opts);
    } catch (err) {
      socket.destroy();
      throw connectFailure(err, uri);
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
    return this.#rules.has(C.NBD_FLAG_READ_ONLY);
  }
  get canMultiConn(): boolean {
    return this.#rules.has(C.NBD_FLAG_CAN_MULTI_CONN);
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
    if (!CLIENT_TRANSITIONS[this.#state].includes(to)) throw new StateError('PC_ERR_STATE', `NBD client ${this.#state} -> ${to}`);
    this.#state = to;
  }

  // ---------- commands ----------

  /** Read [offset, offset+length); split into requests the server accepts. */
  async read(offset: number, length: number): Promise<Buffer> {
    this.#rules.checkRange(offset, length);
    if (length === 0) return Buffer.alloc(0);
    const m = this.#rules.minBlock;
    if (offset % m !== 0 || length % m !== 0) {
      // The server asked for aligned requests: read the covering aligned range and cut (size % m == 0).
      const cover = alignedCover(offset, length, m, this.size);
      const whole = await this.read(cover.offset, cover.length);
      return whole.subarray(offset - cover.offset, offset - cover.offset + length);
    }
    if (length <= this.#rules.maxRequest) return (await this.#request(C.NBD_CMD_READ, 0, offset, length)) as Buffer;
    const parts = [...pieces(offset, length, this.#rules.maxRequest)].map((p) => this.#request(C.NBD_CMD_READ, 0, p.offset, p.length));
    return Buffer.concat((await Promise.all(parts)) as Buffer[], length);
  }

  async write(offset: number, data: Buffer, opts: RequestOptions = {}): Promise<void> {
    this.#rules.checkWritable(offset, data.length, 0);
    const flags = this.#rules.fuaFlag(opts);
    const parts = [...pieces(offset, data.length, this.#rules.maxRequest)].map((p) =>
      this.#request(C.NBD_CMD_WRITE, flags, p.offset, p.length, data.subarray(p.offset - offset, p.offset - offset + p.length)),
    );
    await Promise.all(parts);
  }

  async flush(): Promise<void> {
    this.#rules.requireFlag(C.NBD_FLAG_SEND_FLUSH, 'FLUSH');
    await this.#request(C.NBD_CMD_FLUSH, 0, 0, 0);
  }

  async trim(offset: number, length: number, opts: RequestOptions = {}): Promise<void> {
    this.#rules.checkWritable(offset, length, C.NBD_FLAG_SEND_TRIM);
    await this.#payloadless(C.NBD_CMD_TRIM, this.#rules.fuaFlag(opts), offset, length);
  }

  async writeZeroes(offset: number, length: number, opts: RequestOptions & { noHole?: boolean } = {}): Promise<void> {
    this.#rules.checkWritable(offset, length, C.NBD_FLAG_SEND_WRITE_ZEROES);
    const flags = this.#rules.fuaFlag(opts) | (opts.noHole ? C.NBD_CMD_FLAG_NO_HOLE : 0);
    await this.#payloadless(C.NBD_CMD_WRITE_ZEROES, flags, offset, length);
  }

  async cache(offset: number, length: number): Promise<void> {
    this.#rules.checkRange(offset, length);
    this.#rules.requireFlag(C.NBD_FLAG_SEND_CACHE, 'CACHE');
    await this.#payloadless(C.NBD_CMD_CACHE, 0, offset, length, this.#rules.maxRequest);
  }

  /**
   * base:allocation for exactly [offset, offset+length): re-asks after short answers, trims
   * overrun. Without base:allocation everything is reported as data (flags 0).
   */
  async blockStatus(offset: number, length: number): Promise<BlockStatusExtent[]> {
    this.#rules.checkRange(offset, length);
    if (length === 0) return [];
    if (!this.baseAllocation) return [{ offset, length, flags: 0 }];
    return collectBlockStatus(offset, length, { block: this.#rules.minBlock, size: this.size }, async (at, len) =>
      (await this.#request(C.NBD_CMD_BLOCK_STATUS, 0, at, len)) as BlockStatusDescriptor[],
    );
  }

  /** Wait for every request to finish, send NBD_CMD_DISC, and close the socket. Idempotent. */
  async close(): Promise<void> {
    if (this.#state === 'ready') {
      this.#transition('closing');
      const late = new NbdError('NBD_ERR_CLOSED', `requests still in flight after ${this.#drainTimeoutMs} ms at close`);
      const drained = await withTimeout(this.#slots.idle(), this.#drainTimeoutMs, () => late).then(
        () => true,
        () => false,
      );
      if (!drained) {
        this.#log.warn({ active: this.#slots.active }, 'NBD requests did not finish before close; dropping the connection');
        this.#fail(late);
      }
      if (this.state === 'closing') {
        this.#log.debug('sending NBD_CMD_DISC');
        this.#socket.end(encodeRequest({ flags: 0, command: C.NBD_CMD_DISC, cookie: this.#nextCookie++, offset: 0, length: 0 }));
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

  /** TRIM/WRITE_ZEROES/CACHE: lengths are u32, so split very long ranges. */
  async #payloadless(command: number, flags: number, offset: number, length: number, step = MAX_U32_ALIGNED): Promise<void> {
    await Promise.all([...pieces(offset, length, step)].map((p) => this.#request(command, flags, p.offset, p.length)));
  }

  #enterTransmission(info: NegotiatedExport, opts: NbdClientOptions): void {
    this.#rules = new ExportRules(info, opts.maxRequestBytes);
    this.#info = info;
    this.#decoder.maxChunkLength = this.#rules.maxChunkLength;
    this.#transition('ready');
    const { size, structuredReplies, blockSizes, via } = info;
    const negotiated = { size, structuredReplies, blockSizes, via, baseAllocation: info.baseAllocationId !== undefined };
    this.#log.debug({ ...negotiated, tflags: C.nameOfTransmissionFlags(info.transmissionFlags) }, 'NBD export negotiated');
    // Bytes that arrived with the last handshake message belong to transmission.
    this.#dispatch();
  }

  #onData(chunk: Buffer): void {
    this.#decoder.push(chunk);
    if (this.#state !== 'negotiating') return this.#dispatch();
    try {
      this.#inbox.onData();
    } catch (err) {
      this.#fail(err as Error);
    }
  }

  #dispatch(): void {
    try {
      for (let msg = this.#decoder.next(); msg; msg = this.#decoder.next()) this.#pending.onReply(msg);
    } catch (err) {
      this.#log.warn({ err }, 'NBD server broke the protocol; closing the connection');
      this.#fail(err as Error);
    }
  }

  async #request(command: number, flags: number, offset: number, length: number, data?: Buffer): Promise<RequestResult> {
    if (this.#failure) throw this.#failure;
    if (this.#state !== 'ready') throw new NbdError('NBD_ERR_CLOSED', `client is ${this.#state}`);
    return this.#slots.run(async () => {
      if (this.#failure) throw this.#failure;
      while (this.#socket.writableNeedDrain && !this.#failure) await new Promise<void>((r) => this.#drainWaiters.push(r));
      if (this.#failure) throw this.#failure;
      const cookie = this.#nextCookie++;
      const done = new Promise<RequestResult>((resolve, reject) => {
        this.#pending.add(new PendingRequest(cookie, command, offset, length, this.#info.baseAllocationId, resolve, reject));
      });
      this.#socket.cork();
      this.#socket.write(encodeRequest({ flags, command, cookie, offset, length }));
      if (data) this.#socket.write(data);
      this.#socket.uncork();
      return await done;
    });
  }

  /** Connection is dead: reject everything in flight and everything waiting. */
  #fail(err: Error): void {
    if (this.#state === 'failed' || this.#state === 'closed') return;
    // The socket closing after our DISC, with nothing outstanding, is the clean end.
    if (this.#state === 'closing' && this.#slots.active === 0) {
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
    this.#inbox.fail(failure);
    this.#pending.failAll(failure);
    this.#slots.wakeAll();
    this.#drainWaiters.splice(0).forEach((w) => w());
  }
}
