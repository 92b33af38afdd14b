// Streaming decoder of what a client sends a server: client flags, then option requests, then
// transmission requests (with WRITE payloads). Pure. Out-of-sync input throws NbdError;
// a well-framed request the server must refuse is yielded for the server to answer with an error.
import { NbdError } from '../common/errors.js';
import { ByteQueue, readU64 } from './byte-queue.js';
import type { ClientMessage, NbdRequest } from './codec-types.js';
import * as C from './constants.js';

export interface ServerDecoderOptions {
  /** Largest option data accepted; larger closes the connection (qemu uses 32 MiB, nbdkit 64 MiB). */
  maxOptionLength?: number;
  /** Largest WRITE payload accepted; larger (up to dosPayload) is skipped and yielded as payloadDropped. */
  maxPayload?: number;
  /** A WRITE payload larger than this is a DoS: throw instead of skipping. */
  dosPayload?: number;
}

export type ServerDecoderPhase = 'clientFlags' | 'options' | 'transmission';

type Pending =
  | { kind: 'option'; option: number; length: number }
  | { kind: 'write'; request: NbdRequest };

export const DEFAULT_MAX_OPTION_LENGTH = C.SERVER_MAX_OPTION_LENGTH;

export class ServerDecoder {
  readonly #queue = new ByteQueue();
  readonly #maxOptionLength: number;
  readonly #maxPayload: number;
  readonly #dosPayload: number;
  #phase: ServerDecoderPhase = 'clientFlags';
  #pending: Pending | undefined;
  /** Bytes of a dropped WRITE payload still to discard as they arrive. */
  #skip = 0;

  constructor(opts: ServerDecoderOptions = {}) {
    this.#maxOptionLength = opts.maxOptionLength ?? DEFAULT_MAX_OPTION_LENGTH;
    this.#maxPayload = opts.maxPayload ?? C.NBD_DEFAULT_MAX_PAYLOAD;
    this.#dosPayload = Math.max(opts.dosPayload ?? C.NBD_DOS_PAYLOAD, this.#maxPayload);
  }

  get phase(): ServerDecoderPhase {
    return this.#phase;
  }

  /** Bytes received but not yet decoded. */
  get buffered(): number {
    return this.#queue.length;
  }

  /** Called by the server once EXPORT_NAME or GO has succeeded: what follows are requests. */
  enterTransmission(): void {
    if (this.#phase !== 'options' || this.#pending) {
      throw new NbdError('NBD_ERR_MALFORMED', `cannot enter transmission from ${this.#phase}`);
    }
    this.#phase = 'transmission';
  }

  push(chunk: Buffer): void {
    this.#queue.push(chunk);
  }

  /** Push, then yield every whole message; lazily, so a phase change between yields applies to the rest. */
  *feed(chunk: Buffer): Generator<ClientMessage> {
    this.push(chunk);
    for (let msg = this.next(); msg; msg = this.next()) yield msg;
  }

  /** The next whole message, or undefined when more bytes are needed. */
  next(): ClientMessage | undefined {
    if (this.#skip > 0) {
      this.#skip -= this.#queue.skip(this.#skip);
      if (this.#skip > 0) return undefined;
    }
    if (this.#pending) return this.#completePending();
    switch (this.#phase) {
      case 'clientFlags':
        return this.#clientFlags();
      case 'options':
        return this.#optionHeader();
      case 'transmission':
        return this.#requestHeader();
    }
  }

  #clientFlags(): ClientMessage | undefined {
    if (this.#queue.length < C.CLIENT_FLAGS_BYTES) return undefined;
    const flags = this.#queue.take(C.CLIENT_FLAGS_BYTES).readUInt32BE(0);
    this.#phase = 'options';
    return { type: 'clientFlags', flags };
  }

  #optionHeader(): ClientMessage | undefined {
    if (this.#queue.length < C.OPTION_HEADER_SIZE) return undefined;
    const head = this.#queue.take(C.OPTION_HEADER_SIZE);
    const magic = head.readBigUInt64BE(C.OPTION_AT.ihaveopt);
    if (magic !== C.NBD_IHAVEOPT) throw new NbdError('NBD_ERR_BAD_MAGIC', `option magic 0x${magic.toString(16)}`);
    const option = head.readUInt32BE(C.OPTION_AT.option);
    const length = head.readUInt32BE(C.OPTION_AT.length);
    if (length > this.#maxOptionLength) {
      throw new NbdError('NBD_ERR_TOO_LARGE', `option ${C.nameOfOption(option)} data of ${length} bytes`);
    }
    this.#pending = { kind: 'option', option, length };
    return this.#completePending();
  }

  #requestHeader(): ClientMessage | undefined {
    if (this.#queue.length < C.REQUEST_HEADER_SIZE) return undefined;
    const head = this.#queue.take(C.REQUEST_HEADER_SIZE);
    const magic = head.readUInt32BE(C.REQUEST_AT.magic);
    if (magic !== C.NBD_REQUEST_MAGIC) {
      throw new NbdError('NBD_ERR_BAD_MAGIC', `request magic 0x${magic.toString(16)}`);
    }
    const request: NbdRequest = {
      type: 'request',
      flags: head.readUInt16BE(C.REQUEST_AT.flags),
      command: head.readUInt16BE(C.REQUEST_AT.command),
      cookie: head.readBigUInt64BE(C.REQUEST_AT.cookie),
      offset: readU64(head, C.REQUEST_AT.offset),
      length: head.readUInt32BE(C.REQUEST_AT.length),
    };
    if (request.command !== C.NBD_CMD_WRITE || request.length === 0) return request;
    if (request.length > this.#dosPayload) {
      throw new NbdError('NBD_ERR_TOO_LARGE', `WRITE payload of ${request.length} bytes`);
    }
    if (request.length > this.#maxPayload) {
      // Too big to serve, small enough to discard: answer it, and drop its bytes as they come.
      this.#skip = request.length;
      request.payloadDropped = true;
      return request;
    }
    this.#pending = { kind: 'write', request };
    return this.#completePending();
  }

  #completePending(): ClientMessage | undefined {
    const pending = this.#pending!;
    const length = pending.kind === 'option' ? pending.length : pending.request.length;
    if (this.#queue.length < length) return undefined;
    this.#pending = undefined;
    const data = this.#queue.take(length);
    if (pending.kind === 'option') return { type: 'option', option: pending.option, data };
    pending.request.data = data;
    return pending.request;
  }
}
