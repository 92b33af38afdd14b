// NBD message encoders for both directions, the parsers of option data and option-reply data,
// and the message types the two streaming decoders yield. Pure: no sockets, no timers, no logger.
import { NbdError, ProtocolError } from '../common/errors.js';
import * as C from './constants.js';
import { readU64 } from './byte-queue.js';

export { ServerDecoder } from './server-decoder.js';
export { ClientDecoder } from './client-decoder.js';
export { readU64 };

// ---------- messages the server decoder yields (client -> server) ----------

export type ClientMessage =
  | { type: 'clientFlags'; flags: number }
  | { type: 'option'; option: number; data: Buffer }
  | NbdRequest;

export interface NbdRequest {
  type: 'request';
  flags: number;
  command: number;
  cookie: bigint;
  /** u64 on the wire; values past 2^53 lose precision but stay past any disk's end. */
  offset: number;
  length: number;
  /** WRITE payload (absent for other commands, and for a WRITE whose payload was too big and dropped). */
  data?: Buffer;
  /** A WRITE longer than the decoder's max payload: its payload was skipped to stay in sync. */
  payloadDropped?: boolean;
}

// ---------- messages the client decoder yields (server -> client) ----------

export type ServerMessage =
  | { type: 'greeting'; flags: number }
  | { type: 'optionReply'; option: number; replyType: number; data: Buffer }
  | { type: 'exportNameReply'; size: number; transmissionFlags: number }
  | { type: 'simpleReply'; error: number; cookie: bigint; data?: Buffer }
  | { type: 'chunk'; flags: number; cookie: bigint; done: boolean; body: ChunkBody };

export interface BlockStatusDescriptor {
  length: number;
  flags: number;
}

export type ChunkBody =
  | { kind: 'none' }
  | { kind: 'data'; offset: number; data: Buffer }
  | { kind: 'hole'; offset: number; length: number }
  | { kind: 'blockStatus'; contextId: number; extents: BlockStatusDescriptor[] }
  | { kind: 'error'; chunkType: number; error: number; message: string; offset?: number };

// ---------- little writers ----------

function u64(buf: Buffer, value: number | bigint, at: number): void {
  buf.writeBigUInt64BE(typeof value === 'bigint' ? value : BigInt(value), at);
}

function utf8(text: string, what: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length > C.NBD_MAX_STRING) {
    throw new NbdError('NBD_ERR_TOO_LARGE', `${what} is ${bytes.length} bytes (max ${C.NBD_MAX_STRING})`);
  }
  return bytes;
}

/** Error text is best effort: cut to the spec's string limit rather than refuse to report. */
function messageBytes(text: string, max = C.NBD_MAX_STRING): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  return bytes.length <= max ? bytes : bytes.subarray(0, max);
}

// ---------- handshake, server -> client ----------

export function encodeGreeting(flags: number): Buffer {
  const buf = Buffer.alloc(C.GREETING_SIZE);
  u64(buf, C.NBD_MAGIC, 0);
  u64(buf, C.NBD_IHAVEOPT, 8);
  buf.writeUInt16BE(flags, 16);
  return buf;
}

export function encodeOptionReply(option: number, replyType: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const buf = Buffer.alloc(C.OPTION_REPLY_HEADER_SIZE + data.length);
  u64(buf, C.NBD_REP_MAGIC, 0);
  buf.writeUInt32BE(option, 8);
  buf.writeUInt32BE(replyType >>> 0, 12);
  buf.writeUInt32BE(data.length, 16);
  data.copy(buf, C.OPTION_REPLY_HEADER_SIZE);
  return buf;
}

export function encodeAck(option: number): Buffer {
  return encodeOptionReply(option, C.NBD_REP_ACK);
}

export function encodeOptionError(option: number, errorType: number, message = ''): Buffer {
  return encodeOptionReply(option, errorType, messageBytes(message));
}

export function encodeRepServer(option: number, name: string, description = ''): Buffer {
  const nameBytes = utf8(name, 'export name');
  const descBytes = messageBytes(description);
  const data = Buffer.alloc(4 + nameBytes.length + descBytes.length);
  data.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(data, 4);
  descBytes.copy(data, 4 + nameBytes.length);
  return encodeOptionReply(option, C.NBD_REP_SERVER, data);
}

export function encodeInfoExport(option: number, size: number, transmissionFlags: number): Buffer {
  const data = Buffer.alloc(C.INFO_EXPORT_LENGTH);
  data.writeUInt16BE(C.NBD_INFO_EXPORT, 0);
  u64(data, size, 2);
  data.writeUInt16BE(transmissionFlags, 10);
  return encodeOptionReply(option, C.NBD_REP_INFO, data);
}

function encodeInfoText(option: number, id: number, text: string, what: string): Buffer {
  const bytes = utf8(text, what);
  const data = Buffer.alloc(2 + bytes.length);
  data.writeUInt16BE(id, 0);
  bytes.copy(data, 2);
  return encodeOptionReply(option, C.NBD_REP_INFO, data);
}

export function encodeInfoName(option: number, name: string): Buffer {
  return encodeInfoText(option, C.NBD_INFO_NAME, name, 'export name');
}

export function encodeInfoDescription(option: number, description: string): Buffer {
  return encodeInfoText(option, C.NBD_INFO_DESCRIPTION, description, 'description');
}

export interface BlockSizeLimits {
  minimum: number;
  preferred: number;
  maximum: number;
}

export function encodeInfoBlockSize(option: number, limits: BlockSizeLimits): Buffer {
  const data = Buffer.alloc(C.INFO_BLOCK_SIZE_LENGTH);
  data.writeUInt16BE(C.NBD_INFO_BLOCK_SIZE, 0);
  data.writeUInt32BE(limits.minimum, 2);
  data.writeUInt32BE(limits.preferred, 6);
  data.writeUInt32BE(limits.maximum >>> 0, 10);
  return encodeOptionReply(option, C.NBD_REP_INFO, data);
}

export function encodeRepMetaContext(option: number, contextId: number, name: string): Buffer {
  const nameBytes = utf8(name, 'context name');
  const data = Buffer.alloc(4 + nameBytes.length);
  data.writeUInt32BE(contextId, 0);
  nameBytes.copy(data, 4);
  return encodeOptionReply(option, C.NBD_REP_META_CONTEXT, data);
}

/** The reply to NBD_OPT_EXPORT_NAME: size · tflags · 124 zeroes unless both sides said NO_ZEROES. */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const buf = Buffer.alloc(C.EXPORT_NAME_REPLY_SIZE + (noZeroes ? 0 : C.EXPORT_NAME_PADDING));
  u64(buf, size, 0);
  buf.writeUInt16BE(transmissionFlags, 8);
  return buf;
}

// ---------- handshake, client -> server ----------

export function encodeClientFlags(flags: number): Buffer {
  const buf = Buffer.alloc(4);
  buf.writeUInt32BE(flags >>> 0, 0);
  return buf;
}

export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const buf = Buffer.alloc(C.OPTION_HEADER_SIZE + data.length);
  u64(buf, C.NBD_IHAVEOPT, 0);
  buf.writeUInt32BE(option, 8);
  buf.writeUInt32BE(data.length, 12);
  data.copy(buf, C.OPTION_HEADER_SIZE);
  return buf;
}

export function encodeExportNameOption(name: string): Buffer {
  return encodeOption(C.NBD_OPT_EXPORT_NAME, utf8(name, 'export name'));
}

/** INFO or GO: u32 namelen · name · u16 count · count × u16 info id. */
export function encodeInfoRequest(option: number, name: string, infoIds: readonly number[]): Buffer {
  const nameBytes = utf8(name, 'export name');
  const data = Buffer.alloc(4 + nameBytes.length + 2 + 2 * infoIds.length);
  data.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(data, 4);
  data.writeUInt16BE(infoIds.length, 4 + nameBytes.length);
  infoIds.forEach((id, i) => data.writeUInt16BE(id, 6 + nameBytes.length + 2 * i));
  return encodeOption(option, data);
}

/** LIST_ or SET_META_CONTEXT: u32 namelen · export · u32 count · count × (u32 len · query). */
export function encodeMetaContextRequest(option: number, exportName: string, queries: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  const nameBytes = utf8(exportName, 'export name');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(nameBytes.length, 0);
  parts.push(head, nameBytes);
  const count = Buffer.alloc(4);
  count.writeUInt32BE(queries.length, 0);
  parts.push(count);
  for (const query of queries) {
    const q = utf8(query, 'context query');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(q.length, 0);
    parts.push(len, q);
  }
  return encodeOption(option, Buffer.concat(parts));
}

// ---------- transmission, client -> server ----------

export interface RequestHeader {
  flags: number;
  command: number;
  cookie: bigint;
  offset: number;
  length: number;
}

/** The 28-byte request header; a WRITE's payload goes out after it as its own buffer. */
export function encodeRequest(req: RequestHeader): Buffer {
  const buf = Buffer.alloc(C.REQUEST_HEADER_SIZE);
  buf.writeUInt32BE(C.NBD_REQUEST_MAGIC, 0);
  buf.writeUInt16BE(req.flags, 4);
  buf.writeUInt16BE(req.command, 6);
  buf.writeBigUInt64BE(req.cookie, 8);
  u64(buf, req.offset, 16);
  buf.writeUInt32BE(req.length >>> 0, 24);
  return buf;
}

// ---------- transmission, server -> client ----------

/** Simple reply header; a successful READ's data follows as its own buffer. */
export function encodeSimpleReply(cookie: bigint, error: number): Buffer {
  const buf = Buffer.alloc(C.SIMPLE_REPLY_HEADER_SIZE);
  buf.writeUInt32BE(C.NBD_SIMPLE_REPLY_MAGIC, 0);
  buf.writeUInt32BE(error >>> 0, 4);
  buf.writeBigUInt64BE(cookie, 8);
  return buf;
}

export function encodeChunkHeader(flags: number, chunkType: number, cookie: bigint, length: number): Buffer {
  const buf = Buffer.alloc(C.STRUCTURED_REPLY_HEADER_SIZE);
  writeChunkHeader(buf, flags, chunkType, cookie, length);
  return buf;
}

function writeChunkHeader(buf: Buffer, flags: number, chunkType: number, cookie: bigint, length: number): void {
  buf.writeUInt32BE(C.NBD_STRUCTURED_REPLY_MAGIC, 0);
  buf.writeUInt16BE(flags, 4);
  buf.writeUInt16BE(chunkType, 6);
  buf.writeBigUInt64BE(cookie, 8);
  buf.writeUInt32BE(length >>> 0, 16);
}

export function encodeNoneChunk(cookie: bigint): Buffer {
  return encodeChunkHeader(C.NBD_REPLY_FLAG_DONE, C.NBD_REPLY_TYPE_NONE, cookie, 0);
}

/** OFFSET_DATA chunk header plus the u64 offset (28 bytes); the data follows as its own buffer. */
export function encodeOffsetDataHeader(cookie: bigint, flags: number, offset: number, dataLength: number): Buffer {
  const buf = Buffer.alloc(C.STRUCTURED_REPLY_HEADER_SIZE + 8);
  writeChunkHeader(buf, flags, C.NBD_REPLY_TYPE_OFFSET_DATA, cookie, 8 + dataLength);
  u64(buf, offset, C.STRUCTURED_REPLY_HEADER_SIZE);
  return buf;
}

export function encodeOffsetHole(cookie: bigint, flags: number, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(C.STRUCTURED_REPLY_HEADER_SIZE + 12);
  writeChunkHeader(buf, flags, C.NBD_REPLY_TYPE_OFFSET_HOLE, cookie, 12);
  u64(buf, offset, C.STRUCTURED_REPLY_HEADER_SIZE);
  buf.writeUInt32BE(length >>> 0, C.STRUCTURED_REPLY_HEADER_SIZE + 8);
  return buf;
}

export function encodeBlockStatusChunk(
  cookie: bigint,
  flags: number,
  contextId: number,
  extents: readonly BlockStatusDescriptor[],
): Buffer {
  const length = 4 + 8 * extents.length;
  const buf = Buffer.alloc(C.STRUCTURED_REPLY_HEADER_SIZE + length);
  writeChunkHeader(buf, flags, C.NBD_REPLY_TYPE_BLOCK_STATUS, cookie, length);
  let at = C.STRUCTURED_REPLY_HEADER_SIZE;
  buf.writeUInt32BE(contextId >>> 0, at);
  at += 4;
  for (const e of extents) {
    buf.writeUInt32BE(e.length >>> 0, at);
    buf.writeUInt32BE(e.flags >>> 0, at + 4);
    at += 8;
  }
  return buf;
}

/** ERROR (or ERROR_OFFSET when offset is given) chunk; the message is cut to fit the u16 length. */
export function encodeErrorChunk(cookie: bigint, flags: number, error: number, message = '', offset?: number): Buffer {
  const msg = messageBytes(message);
  const extra = offset === undefined ? 0 : 8;
  const length = 6 + msg.length + extra;
  const buf = Buffer.alloc(C.STRUCTURED_REPLY_HEADER_SIZE + length);
  const type = offset === undefined ? C.NBD_REPLY_TYPE_ERROR : C.NBD_REPLY_TYPE_ERROR_OFFSET;
  writeChunkHeader(buf, flags, type, cookie, length);
  let at = C.STRUCTURED_REPLY_HEADER_SIZE;
  buf.writeUInt32BE(error >>> 0, at);
  buf.writeUInt16BE(msg.length, at + 4);
  msg.copy(buf, at + 6);
  if (offset !== undefined) u64(buf, offset, at + 6 + msg.length);
  return buf;
}

// ---------- option data, parsed by the server (well-framed but invalid => { ok: false }) ----------

export type Parsed<T> = ({ ok: true } & T) | { ok: false; reason: string; tooBig?: boolean };

function readString(data: Buffer, at: number, len: number, what: string): Parsed<{ value: string }> {
  if (len > C.NBD_MAX_STRING) return { ok: false, reason: `${what} longer than ${C.NBD_MAX_STRING}`, tooBig: true };
  if (at + len > data.length) return { ok: false, reason: `${what} runs past the option data` };
  return { ok: true, value: data.toString('utf8', at, at + len) };
}

/** INFO/GO data: u32 namelen · name · u16 n · n × u16 info id. */
export function parseInfoRequest(data: Buffer): Parsed<{ name: string; infoIds: number[] }> {
  if (data.length < 6) return { ok: false, reason: 'INFO/GO data shorter than 6 bytes' };
  const nameLen = data.readUInt32BE(0);
  if (nameLen > data.length - 6) return { ok: false, reason: 'export name length past the option data' };
  const name = readString(data, 4, nameLen, 'export name');
  if (!name.ok) return name;
  const count = data.readUInt16BE(4 + nameLen);
  if (data.length !== 6 + nameLen + 2 * count) return { ok: false, reason: 'info request count does not match length' };
  const infoIds: number[] = [];
  for (let i = 0; i < count; i++) infoIds.push(data.readUInt16BE(6 + nameLen + 2 * i));
  return { ok: true, name: name.value, infoIds };
}

/** LIST_/SET_META_CONTEXT data: u32 namelen · export · u32 n · n × (u32 len · query). */
export function parseMetaContextRequest(data: Buffer): Parsed<{ exportName: string; queries: string[] }> {
  if (data.length < 8) return { ok: false, reason: 'meta context data shorter than 8 bytes' };
  const nameLen = data.readUInt32BE(0);
  if (nameLen > data.length - 8) return { ok: false, reason: 'export name length past the option data' };
  const exportName = readString(data, 4, nameLen, 'export name');
  if (!exportName.ok) return exportName;
  let at = 4 + nameLen;
  const count = data.readUInt32BE(at);
  at += 4;
  // Each query needs at least its 4-byte length: reject impossible counts before looping.
  if (count > (data.length - at) / 4) return { ok: false, reason: 'query count past the option data' };
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) return { ok: false, reason: 'query length past the option data' };
    const len = data.readUInt32BE(at);
    at += 4;
    const q = readString(data, at, len, 'context query');
    if (!q.ok) return q;
    queries.push(q.value);
    at += len;
  }
  if (at !== data.length) return { ok: false, reason: 'trailing bytes after the queries' };
  return { ok: true, exportName: exportName.value, queries };
}

// ---------- option reply data, parsed by the client (malformed => ProtocolError) ----------

function malformed(detail: string): ProtocolError {
  return new ProtocolError('NBD_ERR_MALFORMED', detail);
}

export type InfoReply =
  | { id: typeof C.NBD_INFO_EXPORT; size: number; transmissionFlags: number }
  | { id: typeof C.NBD_INFO_NAME; name: string }
  | { id: typeof C.NBD_INFO_DESCRIPTION; description: string }
  | ({ id: typeof C.NBD_INFO_BLOCK_SIZE } & BlockSizeLimits)
  | { id: number; unknown: true };

/** REP_INFO body; lengths are checked exactly as qemu does (12 for EXPORT, 14 for BLOCK_SIZE). */
export function parseInfoReply(data: Buffer): InfoReply {
  if (data.length < 2) throw malformed('REP_INFO shorter than 2 bytes');
  const id = data.readUInt16BE(0);
  switch (id) {
    case C.NBD_INFO_EXPORT:
      if (data.length !== C.INFO_EXPORT_LENGTH) throw malformed(`INFO_EXPORT length ${data.length}`);
      return { id, size: readU64(data, 2), transmissionFlags: data.readUInt16BE(10) };
    case C.NBD_INFO_NAME:
      return { id, name: data.toString('utf8', 2) };
    case C.NBD_INFO_DESCRIPTION:
      return { id, description: data.toString('utf8', 2) };
    case C.NBD_INFO_BLOCK_SIZE:
      if (data.length !== C.INFO_BLOCK_SIZE_LENGTH) throw malformed(`INFO_BLOCK_SIZE length ${data.length}`);
      return { id, minimum: data.readUInt32BE(2), preferred: data.readUInt32BE(6), maximum: data.readUInt32BE(10) };
    default:
      return { id, unknown: true };
  }
}

export function parseRepServer(data: Buffer): { name: string; description: string } {
  if (data.length < 4) throw malformed('REP_SERVER shorter than 4 bytes');
  const len = data.readUInt32BE(0);
  if (len > data.length - 4) throw malformed('REP_SERVER name length past the reply');
  return { name: data.toString('utf8', 4, 4 + len), description: data.toString('utf8', 4 + len) };
}

export function parseRepMetaContext(data: Buffer): { contextId: number; name: string } {
  if (data.length < 4) throw malformed('REP_META_CONTEXT shorter than 4 bytes');
  return { contextId: data.readUInt32BE(0), name: data.toString('utf8', 4) };
}
