// Streaming decoder of what a server sends a client: greeting, option replies (or the EXPORT_NAME
// reply), then simple replies and structured reply chunks. Pure. Anything malformed throws
// NbdError: a client cannot resynchronise with a server that breaks framing.
import { NbdError } from '../common/errors.js';
import { ByteQueue, readU64 } from './byte-queue.js';
import type { BlockStatusDescriptor, ChunkBody, ServerMessage } from './codec-types.js';
import * as C from './constants.js';

export interface ClientDecoderOptions {
  /**
   * Payload bytes that follow a successful simple reply for this cookie: the READ's length,
   * 0 for other commands, undefined when no such request is outstanding (a protocol error).
   */
  simpleReplyLength: (cookie: bigint) => number | undefined;
  /** Largest option reply data accepted. */
  maxOptionReplyLength?: number;
  /** Largest structured chunk payload accepted (libnbd: 64 MiB + 8). */
  maxChunkLength?: number;
  /** When given, a chunk header naming a cookie this rejects fails before its payload is buffered. */
  knownCookie?: (cookie: bigint) => boolean;
}

export type ClientDecoderPhase = 'greeting' | 'options' | 'exportName' | 'exportNameDone' | 'transmission';

type Pending =
  | { kind: 'optionReply'; option: number; replyType: number; length: number }
  | { kind: 'simple'; error: number; cookie: bigint; length: number }
  | { kind: 'chunk'; flags: number; chunkType: number; cookie: bigint; length: number };

export const DEFAULT_MAX_OPTION_REPLY_LENGTH = C.CLIENT_MAX_OPTION_REPLY;
export const DEFAULT_MAX_CHUNK_LENGTH = C.NBD_DOS_PAYLOAD + C.OFFSET_DATA_AT.data;

function malformed(detail: string): NbdError {
  return new NbdError('NBD_ERR_MALFORMED', detail);
}

export class ClientDecoder {
  readonly #queue = new ByteQueue();
  readonly #simpleReplyLength: (cookie: bigint) => number | undefined;
  readonly #maxOptionReplyLength: number;
  #maxChunkLength: number;
  readonly #knownCookie: ((cookie: bigint) => boolean) | undefined;
  #phase: ClientDecoderPhase = 'greeting';
  #noZeroes = false;
  #structured = false;
  #pending: Pending | undefined;

  constructor(opts: ClientDecoderOptions) {
    this.#simpleReplyLength = opts.simpleReplyLength;
    this.#maxOptionReplyLength = opts.maxOptionReplyLength ?? DEFAULT_MAX_OPTION_REPLY_LENGTH;
    this.#maxChunkLength = opts.maxChunkLength ?? DEFAULT_MAX_CHUNK_LENGTH;
    this.#knownCookie = opts.knownCookie;
  }

  /** Tighten the chunk cap once the client knows its largest request. */
  set maxChunkLength(bytes: number) {
    this.#maxChunkLength = bytes;
  }

  get phase(): ClientDecoderPhase {
    return this.#phase;
  }

  /** After sending NBD_OPT_EXPORT_NAME: the next bytes are size · tflags [· 124 zeroes]. */
  expectExportNameReply(noZeroes: boolean): void {
    this.#requirePhase('options');
    this.#noZeroes = noZeroes;
    this.#phase = 'exportName';
  }

  /** After GO's ACK (or the EXPORT_NAME reply): the next bytes are replies; structured chunks only if SR was negotiated. */
  enterTransmission(structuredReplies: boolean): void {
    if (this.#phase === 'exportNameDone') this.#phase = 'options';
    this.#requirePhase('options');
    this.#structured = structuredReplies;
    this.#phase = 'transmission';
  }

  #requirePhase(phase: ClientDecoderPhase): void {
    if (this.#phase !== phase || this.#pending) throw malformed(`decoder in ${this.#phase}, expected ${phase}`);
  }

  push(chunk: Buffer): void {
    this.#queue.push(chunk);
  }

  /** Push, then yield every whole message; lazily, so a phase change between yields applies to the rest. */
  *feed(chunk: Buffer): Generator<ServerMessage> {
    this.push(chunk);
    for (let msg = this.next(); msg; msg = this.next()) yield msg;
  }

  next(): ServerMessage | undefined {
    if (this.#pending) return this.#completePending();
    switch (this.#phase) {
      case 'greeting':
        return this.#greeting();
      case 'options':
        return this.#optionReplyHeader();
      case 'exportName':
        return this.#exportNameReply();
      case 'exportNameDone':
        return undefined;
      case 'transmission':
        return this.#replyHeader();
    }
  }

  #greeting(): ServerMessage | undefined {
    if (this.#queue.length < C.GREETING_SIZE) return undefined;
    const buf = this.#queue.take(C.GREETING_SIZE);
    if (buf.readBigUInt64BE(C.GREETING_AT.magic) !== C.NBD_MAGIC) throw new NbdError('NBD_ERR_BAD_MAGIC', 'greeting is not NBDMAGIC');
    const second = buf.readBigUInt64BE(C.GREETING_AT.ihaveopt);
    if (second === C.NBD_OLDSTYLE_MAGIC) throw new NbdError('NBD_ERR_HANDSHAKE', 'oldstyle server not supported');
    if (second !== C.NBD_IHAVEOPT) throw new NbdError('NBD_ERR_BAD_MAGIC', 'greeting lacks IHAVEOPT');
    this.#phase = 'options';
    return { type: 'greeting', flags: buf.readUInt16BE(C.GREETING_AT.flags) };
  }

  #optionReplyHeader(): ServerMessage | undefined {
    if (this.#queue.length < C.OPTION_REPLY_HEADER_SIZE) return undefined;
    const head = this.#queue.take(C.OPTION_REPLY_HEADER_SIZE);
    if (head.readBigUInt64BE(C.OPTION_REPLY_AT.magic) !== C.NBD_REP_MAGIC) throw new NbdError('NBD_ERR_BAD_MAGIC', 'option reply magic');
    const length = head.readUInt32BE(C.OPTION_REPLY_AT.length);
    if (length > this.#maxOptionReplyLength) throw new NbdError('NBD_ERR_TOO_LARGE', `option reply of ${length} bytes`);
    this.#pending = { kind: 'optionReply', option: head.readUInt32BE(C.OPTION_REPLY_AT.option), replyType: head.readUInt32BE(C.OPTION_REPLY_AT.type), length };
    return this.#completePending();
  }

  #exportNameReply(): ServerMessage | undefined {
    const size = C.EXPORT_NAME_REPLY_SIZE + (this.#noZeroes ? 0 : C.EXPORT_NAME_PADDING);
    if (this.#queue.length < size) return undefined;
    const buf = this.#queue.take(size);
    // Replies follow at once, but whether they may be structured is the client's to say in
    // enterTransmission(); until then later bytes wait in the queue.
    this.#phase = 'exportNameDone';
    return { type: 'exportNameReply', size: readU64(buf, C.EXPORT_NAME_REPLY_AT.size), transmissionFlags: buf.readUInt16BE(C.EXPORT_NAME_REPLY_AT.flags) };
  }

  #replyHeader(): ServerMessage | undefined {
    if (this.#queue.length < C.TRANSMISSION_MAGIC_BYTES) return undefined;
    const magic = this.#queue.peek(C.TRANSMISSION_MAGIC_BYTES).readUInt32BE(0);
    if (magic === C.NBD_SIMPLE_REPLY_MAGIC) {
      if (this.#queue.length < C.SIMPLE_REPLY_HEADER_SIZE) return undefined;
      const head = this.#queue.take(C.SIMPLE_REPLY_HEADER_SIZE);
      const error = head.readUInt32BE(C.SIMPLE_REPLY_AT.error);
      const cookie = head.readBigUInt64BE(C.SIMPLE_REPLY_AT.cookie);
      const readLength = this.#simpleReplyLength(cookie);
      if (readLength === undefined) throw new NbdError('NBD_ERR_UNKNOWN_COOKIE', `simple reply cookie ${cookie}`);
      this.#pending = { kind: 'simple', error, cookie, length: error === 0 ? readLength : 0 };
      return this.#completePending();
    }
    if (magic === C.NBD_STRUCTURED_REPLY_MAGIC && this.#structured) {
      if (this.#queue.length < C.STRUCTURED_REPLY_HEADER_SIZE) return undefined;
      const head = this.#queue.take(C.STRUCTURED_REPLY_HEADER_SIZE);
      const length = head.readUInt32BE(C.CHUNK_AT.length);
      const cookie = head.readBigUInt64BE(C.CHUNK_AT.cookie);
      if (length > this.#maxChunkLength) throw new NbdError('NBD_ERR_TOO_LARGE', `reply chunk of ${length} bytes`);
      if (this.#knownCookie && !this.#knownCookie(cookie)) throw new NbdError('NBD_ERR_UNKNOWN_COOKIE', `reply chunk for cookie ${cookie}`);
      this.#pending = { kind: 'chunk', flags: head.readUInt16BE(C.CHUNK_AT.flags), chunkType: head.readUInt16BE(C.CHUNK_AT.type), cookie, length };
      return this.#completePending();
    }
    throw new NbdError('NBD_ERR_BAD_MAGIC', `reply magic 0x${magic.toString(16)}`);
  }

  #completePending(): ServerMessage | undefined {
    const p = this.#pending!;
    if (this.#queue.length < p.length) return undefined;
    this.#pending = undefined;
    const data = this.#queue.take(p.length);
    switch (p.kind) {
      case 'optionReply':
        return { type: 'optionReply', option: p.option, replyType: p.replyType, data };
      case 'simple':
        return p.length > 0
          ? { type: 'simpleReply', error: p.error, cookie: p.cookie, data }
          : { type: 'simpleReply', error: p.error, cookie: p.cookie };
      case 'chunk': {
        const done = (p.flags & C.NBD_REPLY_FLAG_DONE) !== 0;
        return { type: 'chunk', flags: p.flags, cookie: p.cookie, done, body: decodeChunkBody(p.chunkType, done, data) };
      }
    }
  }
}

/** Validate and decode one structured chunk's payload; malformed => NbdError (hard close). */
export function decodeChunkBody(chunkType: number, done: boolean, data: Buffer): ChunkBody {
  const name = C.nameOfChunkType(chunkType);
  switch (chunkType) {
    case C.NBD_REPLY_TYPE_NONE:
      if (data.length !== 0) throw malformed(`${name} with ${data.length} payload bytes`);
      if (!done) throw malformed(`${name} without DONE`);
      return { kind: 'none' };
    case C.NBD_REPLY_TYPE_OFFSET_DATA:
      if (data.length <= C.OFFSET_DATA_AT.data) throw malformed(`${name} of ${data.length} bytes`);
      return { kind: 'data', offset: readU64(data, C.OFFSET_DATA_AT.offset), data: data.subarray(C.OFFSET_DATA_AT.data) };
    case C.NBD_REPLY_TYPE_OFFSET_HOLE: {
      if (data.length !== C.OFFSET_HOLE_BYTES) throw malformed(`${name} of ${data.length} bytes`);
      const length = data.readUInt32BE(C.OFFSET_HOLE_AT.length);
      if (length === 0) throw malformed(`${name} of size 0`);
      return { kind: 'hole', offset: readU64(data, C.OFFSET_HOLE_AT.offset), length };
    }
    case C.NBD_REPLY_TYPE_BLOCK_STATUS: {
      const extentBytes = data.length - C.BLOCK_STATUS_AT.extents;
      // At least one extent, and whole ones.
      if (extentBytes < C.EXTENT_BYTES || extentBytes % C.EXTENT_BYTES !== 0) throw malformed(`${name} of ${data.length} bytes`);
      const extents: BlockStatusDescriptor[] = [];
      for (let at = C.BLOCK_STATUS_AT.extents; at < data.length; at += C.EXTENT_BYTES) {
        const length = data.readUInt32BE(at + C.EXTENT_AT.length);
        if (length === 0) throw malformed(`${name} with a zero-length extent`);
        extents.push({ length, flags: data.readUInt32BE(at + C.EXTENT_AT.flags) });
      }
      return { kind: 'blockStatus', contextId: data.readUInt32BE(C.BLOCK_STATUS_AT.contextId), extents };
    }
    case C.NBD_REPLY_TYPE_ERROR:
    case C.NBD_REPLY_TYPE_ERROR_OFFSET: {
      const tail = chunkType === C.NBD_REPLY_TYPE_ERROR ? 0 : C.U64_BYTES;
      const at = C.ERROR_CHUNK_AT;
      if (data.length < at.message + tail) throw malformed(`${name} of ${data.length} bytes`);
      const error = data.readUInt32BE(at.error);
      const msgLen = data.readUInt16BE(at.messageLength);
      if (at.message + msgLen + tail !== data.length) throw malformed(`${name} message length ${msgLen} vs chunk ${data.length}`);
      if (error === 0) throw malformed(`${name} with error 0`);
      const message = data.toString('utf8', at.message, at.message + msgLen);
      if (tail === 0) return { kind: 'error', chunkType, error, message };
      return { kind: 'error', chunkType, error, message, offset: readU64(data, at.message + msgLen) };
    }
    default:
      if ((chunkType & C.NBD_REPLY_TYPE_ERROR_BIT) !== 0) {
        // Unknown error types fail their request only; every error type starts with u32 error.
        const raw = data.length >= C.U32_BYTES ? data.readUInt32BE(C.ERROR_CHUNK_AT.error) : 0;
        return { kind: 'error', chunkType, error: raw === 0 ? C.NBD_EINVAL : raw, message: '' };
      }
      throw malformed(`unknown chunk type ${name}`);
  }
}
