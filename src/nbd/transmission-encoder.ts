// Encoders of the NBD transmission phase: request headers (client → server), simple replies and structured
// reply chunks (server → client). Payloads go out as their own buffers after these headers. Pure.
import type { BlockStatusDescriptor, RequestHeader } from './codec-types.js';
import * as C from './constants.js';
import { messageBytes, u64 } from './wire-write.js';

// ---------- transmission, client -> server ----------

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
