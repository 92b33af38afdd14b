// Encoders of the NBD handshake, both directions: greeting, option requests and option replies. Pure.
import type { BlockSizeLimits } from './codec-types.js';
import * as C from './constants.js';
import { messageBytes, u32Field, u64, utf8 } from './wire-write.js';

// ---------- handshake, server -> client ----------

export function encodeGreeting(flags: number): Buffer {
  const buf = Buffer.alloc(C.GREETING_SIZE);
  u64(buf, C.NBD_MAGIC, C.GREETING_AT.magic);
  u64(buf, C.NBD_IHAVEOPT, C.GREETING_AT.ihaveopt);
  buf.writeUInt16BE(flags, C.GREETING_AT.flags);
  return buf;
}

export function encodeOptionReply(option: number, replyType: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const buf = Buffer.alloc(C.OPTION_REPLY_HEADER_SIZE + data.length);
  u64(buf, C.NBD_REP_MAGIC, C.OPTION_REPLY_AT.magic);
  buf.writeUInt32BE(option, C.OPTION_REPLY_AT.option);
  buf.writeUInt32BE(replyType >>> 0, C.OPTION_REPLY_AT.type);
  buf.writeUInt32BE(data.length, C.OPTION_REPLY_AT.length);
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
  const data = Buffer.alloc(C.REP_SERVER_AT.name + nameBytes.length + descBytes.length);
  data.writeUInt32BE(nameBytes.length, C.REP_SERVER_AT.nameLength);
  nameBytes.copy(data, C.REP_SERVER_AT.name);
  descBytes.copy(data, C.REP_SERVER_AT.name + nameBytes.length);
  return encodeOptionReply(option, C.NBD_REP_SERVER, data);
}

export function encodeInfoExport(option: number, size: number, transmissionFlags: number): Buffer {
  const data = Buffer.alloc(C.INFO_EXPORT_LENGTH);
  data.writeUInt16BE(C.NBD_INFO_EXPORT, C.INFO_EXPORT_AT.id);
  u64(data, size, C.INFO_EXPORT_AT.size);
  data.writeUInt16BE(transmissionFlags, C.INFO_EXPORT_AT.flags);
  return encodeOptionReply(option, C.NBD_REP_INFO, data);
}

function encodeInfoText(option: number, id: number, text: string, what: string): Buffer {
  const bytes = utf8(text, what);
  const data = Buffer.alloc(C.INFO_REPLY_AT.body + bytes.length);
  data.writeUInt16BE(id, C.INFO_REPLY_AT.id);
  bytes.copy(data, C.INFO_REPLY_AT.body);
  return encodeOptionReply(option, C.NBD_REP_INFO, data);
}

export function encodeInfoName(option: number, name: string): Buffer {
  return encodeInfoText(option, C.NBD_INFO_NAME, name, 'export name');
}

export function encodeInfoDescription(option: number, description: string): Buffer {
  return encodeInfoText(option, C.NBD_INFO_DESCRIPTION, description, 'description');
}

export function encodeInfoBlockSize(option: number, limits: BlockSizeLimits): Buffer {
  const data = Buffer.alloc(C.INFO_BLOCK_SIZE_LENGTH);
  data.writeUInt16BE(C.NBD_INFO_BLOCK_SIZE, C.INFO_BLOCK_SIZE_AT.id);
  data.writeUInt32BE(limits.minimum, C.INFO_BLOCK_SIZE_AT.minimum);
  data.writeUInt32BE(limits.preferred, C.INFO_BLOCK_SIZE_AT.preferred);
  data.writeUInt32BE(limits.maximum >>> 0, C.INFO_BLOCK_SIZE_AT.maximum);
  return encodeOptionReply(option, C.NBD_REP_INFO, data);
}

export function encodeRepMetaContext(option: number, contextId: number, name: string): Buffer {
  const nameBytes = utf8(name, 'context name');
  const data = Buffer.alloc(C.REP_META_CONTEXT_AT.name + nameBytes.length);
  data.writeUInt32BE(contextId, C.REP_META_CONTEXT_AT.id);
  nameBytes.copy(data, C.REP_META_CONTEXT_AT.name);
  return encodeOptionReply(option, C.NBD_REP_META_CONTEXT, data);
}

/** The reply to NBD_OPT_EXPORT_NAME: size · tflags · 124 zeroes unless both sides said NO_ZEROES. */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const buf = Buffer.alloc(C.EXPORT_NAME_REPLY_SIZE + (noZeroes ? 0 : C.EXPORT_NAME_PADDING));
  u64(buf, size, C.EXPORT_NAME_REPLY_AT.size);
  buf.writeUInt16BE(transmissionFlags, C.EXPORT_NAME_REPLY_AT.flags);
  return buf;
}

// ---------- handshake, client -> server ----------

export function encodeClientFlags(flags: number): Buffer {
  return u32Field(flags);
}

export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const buf = Buffer.alloc(C.OPTION_HEADER_SIZE + data.length);
  u64(buf, C.NBD_IHAVEOPT, C.OPTION_AT.ihaveopt);
  buf.writeUInt32BE(option, C.OPTION_AT.option);
  buf.writeUInt32BE(data.length, C.OPTION_AT.length);
  data.copy(buf, C.OPTION_HEADER_SIZE);
  return buf;
}

export function encodeExportNameOption(name: string): Buffer {
  return encodeOption(C.NBD_OPT_EXPORT_NAME, utf8(name, 'export name'));
}

/** INFO or GO: u32 namelen · name · u16 count · count × u16 info id. */
export function encodeInfoRequest(option: number, name: string, infoIds: readonly number[]): Buffer {
  const nameBytes = utf8(name, 'export name');
  const ids = C.INFO_REQUEST_MIN_BYTES + nameBytes.length;
  const data = Buffer.alloc(ids + C.U16_BYTES * infoIds.length);
  data.writeUInt32BE(nameBytes.length, C.INFO_REQUEST_AT.nameLength);
  nameBytes.copy(data, C.INFO_REQUEST_AT.name);
  data.writeUInt16BE(infoIds.length, C.INFO_REQUEST_AT.name + nameBytes.length);
  infoIds.forEach((id, i) => data.writeUInt16BE(id, ids + C.U16_BYTES * i));
  return encodeOption(option, data);
}

/** LIST_ or SET_META_CONTEXT: u32 namelen · export · u32 count · count × (u32 len · query). */
export function encodeMetaContextRequest(option: number, exportName: string, queries: readonly string[]): Buffer {
  const nameBytes = utf8(exportName, 'export name');
  const parts: Buffer[] = [u32Field(nameBytes.length), nameBytes, u32Field(queries.length)];
  for (const query of queries) {
    const q = utf8(query, 'context query');
    parts.push(u32Field(q.length), q);
  }
  return encodeOption(option, Buffer.concat(parts));
}
