// Encoders of the NBD handshake, both directions: greeting, option requests and option replies. Pure.
import type { BlockSizeLimits } from './codec-types.js';
import * as C from './constants.js';
import { messageBytes, u64, utf8 } from './wire-write.js';

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
