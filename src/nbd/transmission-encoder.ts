// Encoders of the NBD transmission phase: request headers (client → server), simple replies and structured
// reply chunks (server → client). Payloads go out as their own buffers after these headers. Pure.
import type { BlockStatusDescriptor, RequestHeader } from './codec-types.js';
import * as C from './constants.js';
import { messageBytes, u64 } from './wire-write.js';

// ---------- transmission, client -> server ----------

/** The 28-byte request header; a WRITE's payload goes out after it as its own buffer. */
export function encodeRequest(req: RequestHeader): Buffer {
  const buf = Buffer.alloc(C.REQUEST_HEADER_SIZE);
  buf.writeUInt32BE(C.NBD_REQUEST_MAGIC, C.REQUEST_AT.magic);
  buf.writeUInt16BE(req.flags, C.REQUEST_AT.flags);
  buf.writeUInt16BE(req.command, C.REQUEST_AT.command);
  buf.writeBigUInt64BE(req.cookie, C.REQUEST_AT.cookie);
  u64(buf, req.offset, C.REQUEST_AT.offset);
  buf.writeUInt32BE(req.length >>> 0, C.REQUEST_AT.length);
  return buf;
}

// ---------- transmission, server -> client ----------

/** Simple reply header; a successful READ's data follows as its own buffer. */
export function encodeSimpleReply(cookie: bigint, error: number): Buffer {
  const buf = Buffer.alloc(C.SIMPLE_REPLY_HEADER_SIZE);
  buf.writeUInt32BE(C.NBD_SIMPLE_REPLY_MAGIC, C.SIMPLE_REPLY_AT.magic);
  buf.writeUInt32BE(error >>> 0, C.SIMPLE_REPLY_AT.error);
  buf.writeBigUInt64BE(cookie, C.SIMPLE_REPLY_AT.cookie);
  return buf;
}

export function encodeChunkHeader(flags: number, chunkType: number, cookie: bigint, length: number): Buffer {
  const buf = Buffer.alloc(C.STRUCTURED_REPLY_HEADER_SIZE);
  writeChunkHeader(buf, flags, chunkType, cookie, length);
  return buf;
}

function writeChunkHeader(buf: Buffer, flags: number, chunkType: number, cookie: bigint, length: number): void {
  buf.writeUInt32BE(C.NBD_STRUCTURED_REPLY_MAGIC, C.CHUNK_AT.magic);
  buf.writeUInt16BE(flags, C.CHUNK_AT.flags);
  buf.writeUInt16BE(chunkType, C.CHUNK_AT.type);
  buf.writeBigUInt64BE(cookie, C.CHUNK_AT.cookie);
  buf.writeUInt32BE(length >>> 0, C.CHUNK_AT.length);
}

export function encodeNoneChunk(cookie: bigint): Buffer {
  return encodeChunkHeader(C.NBD_REPLY_FLAG_DONE, C.NBD_REPLY_TYPE_NONE, cookie, 0);
}

/** OFFSET_DATA chunk header plus the u64 offset (28 bytes); the data follows as its own buffer. */
export function encodeOffsetDataHeader(cookie: bigint, flags: number, offset: number, dataLength: number): Buffer {
  const buf = Buffer.alloc(C.STRUCTURED_REPLY_HEADER_SIZE + C.OFFSET_DATA_AT.data);
  writeChunkHeader(buf, flags, C.NBD_REPLY_TYPE_OFFSET_DATA, cookie, C.OFFSET_DATA_AT.data + dataLength);
  u64(buf, offset, C.STRUCTURED_REPLY_HEADER_SIZE + C.OFFSET_DATA_AT.offset);
  return buf;
}

export function encodeOffsetHole(cookie: bigint, flags: number, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(C.STRUCTURED_REPLY_HEADER_SIZE + C.OFFSET_HOLE_BYTES);
  writeChunkHeader(buf, flags, C.NBD_REPLY_TYPE_OFFSET_HOLE, cookie, C.OFFSET_HOLE_BYTES);
  u64(buf, offset, C.STRUCTURED_REPLY_HEADER_SIZE + C.OFFSET_HOLE_AT.offset);
  buf.writeUInt32BE(length >>> 0, C.STRUCTURED_REPLY_HEADER_SIZE + C.OFFSET_HOLE_AT.length);
  return buf;
}

export function encodeBlockStatusChunk(
  cookie: bigint,
  flags: number,
  contextId: number,
  extents: readonly BlockStatusDescriptor[],
): Buffer {
  const length = C.BLOCK_STATUS_AT.extents + C.EXTENT_BYTES * extents.length;
  const buf = Buffer.alloc(C.STRUCTURED_REPLY_HEADER_SIZE + length);
  writeChunkHeader(buf, flags, C.NBD_REPLY_TYPE_BLOCK_STATUS, cookie, length);
  const body = C.STRUCTURED_REPLY_HEADER_SIZE;
  buf.writeUInt32BE(contextId >>> 0, body + C.BLOCK_STATUS_AT.contextId);
  let at = body + C.BLOCK_STATUS_AT.extents;
  for (const e of extents) {
    buf.writeUInt32BE(e.length >>> 0, at + C.EXTENT_AT.length);
    buf.writeUInt32BE(e.flags >>> 0, at + C.EXTENT_AT.flags);
    at += C.EXTENT_BYTES;
  }
  return buf;
}

/** ERROR (or ERROR_OFFSET when offset is given) chunk; the message is cut to fit the u16 length. */
export function encodeErrorChunk(cookie: bigint, flags: number, error: number, message = '', offset?: number): Buffer {
  const msg = messageBytes(message);
  const extra = offset === undefined ? 0 : C.U64_BYTES;
  const length = C.ERROR_CHUNK_AT.message + msg.length + extra;
  const buf = Buffer.alloc(C.STRUCTURED_REPLY_HEADER_SIZE + length);
  const type = offset === undefined ? C.NBD_REPLY_TYPE_ERROR : C.NBD_REPLY_TYPE_ERROR_OFFSET;
  writeChunkHeader(buf, flags, type, cookie, length);
  const at = C.STRUCTURED_REPLY_HEADER_SIZE;
  buf.writeUInt32BE(error >>> 0, at + C.ERROR_CHUNK_AT.error);
  buf.writeUInt16BE(msg.length, at + C.ERROR_CHUNK_AT.messageLength);
  msg.copy(buf, at + C.ERROR_CHUNK_AT.message);
  if (offset !== undefined) u64(buf, offset, at + C.ERROR_CHUNK_AT.message + msg.length);
  return buf;
}
