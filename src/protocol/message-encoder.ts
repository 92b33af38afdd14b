// Encode a message to a frame: [header, payload] buffers, the payload a zero-copy view where it can be.
import { FLAG_DONE, FLAG_URGENT, CLASS_URGENT, BLOCK_REQ_PAYLOAD, MSG, type MsgName } from './constants.js';
import { encodeFrame, encodeHeader } from './frame-codec.js';
import {
  BLOCK_CLASS_AT,
  BLOCK_DATA_PREFIX,
  BLOCK_ERR_ERRNO_BYTES,
  BLOCK_ERR_MAX_MESSAGE,
  BLOCK_LENGTH_AT,
  BLOCK_ZERO_PAYLOAD,
  DIGEST_CRC_AT,
  DIGEST_RECORD_BYTES,
  EXTENT_LENGTH_AT,
  EXTENT_RECORD_BYTES,
  MAX_STRING,
  RAM_INDEX_BYTES,
} from './message-layout.js';
import type { Message } from './message-types.js';
import { ByteParts, type Bytes } from './byte-parts.js';

/** Encode any message as [header, payload] (payload may be a zero-copy view of the caller's data). */
export function encodeMessage(msg: Message): Buffer[] {
  const type = MSG[msg.type as MsgName];
  switch (msg.type) {
    case 'EXTENTS': {
      const p = Buffer.allocUnsafe(msg.runs.length * EXTENT_RECORD_BYTES);
      msg.runs.forEach((r, i) => {
        p.writeBigUInt64BE(BigInt(r.offset), i * EXTENT_RECORD_BYTES);
        p.writeBigUInt64BE(BigInt(r.length), i * EXTENT_RECORD_BYTES + EXTENT_LENGTH_AT);
      });
      return encodeFrame(type, 0, p);
    }
    case 'RAM_PAGES': {
      const head = Buffer.allocUnsafe(RAM_INDEX_BYTES * (1 + msg.indices.length));
      head.writeUInt32BE(msg.indices.length, 0);
      msg.indices.forEach((ix, i) => head.writeUInt32BE(ix >>> 0, RAM_INDEX_BYTES * (1 + i)));
      return encodeFrame(type, 0, Buffer.concat([head, msg.data]));
    }
    case 'BLOCK_REQ': {
      const p = Buffer.allocUnsafe(BLOCK_REQ_PAYLOAD);
      p.writeBigUInt64BE(BigInt(msg.offset), 0);
      p.writeUInt32BE(msg.length, BLOCK_LENGTH_AT);
      p.writeUInt8(msg.cls, BLOCK_CLASS_AT);
      return encodeFrame(type, msg.id, p, msg.cls === CLASS_URGENT ? FLAG_URGENT : 0);
    }
    case 'BLOCK_DATA': {
      return encodeBlockData(msg.id, msg.offset, msg.data, msg.done, msg.urgent);
    }
    case 'BLOCK_ZERO': {
      const p = Buffer.allocUnsafe(BLOCK_ZERO_PAYLOAD);
      p.writeBigUInt64BE(BigInt(msg.offset), 0);
      p.writeUInt32BE(msg.length, BLOCK_LENGTH_AT);
      return encodeFrame(type, msg.id, p, (msg.done ? FLAG_DONE : 0) | (msg.urgent ? FLAG_URGENT : 0));
    }
    case 'GUEST_STREAM':
      return encodeFrame(type, 0, msg.data);
    case 'BLOCK_DIGESTS': {
      const p = Buffer.allocUnsafe(msg.entries.length * DIGEST_RECORD_BYTES);
      msg.entries.forEach(([block, crc], i) => {
        p.writeUInt32BE(block, i * DIGEST_RECORD_BYTES);
        p.writeUInt32BE(crc >>> 0, i * DIGEST_RECORD_BYTES + DIGEST_CRC_AT);
      });
      return encodeFrame(type, 0, p);
    }
    case 'BLOCK_ERR': {
      const m = utf8Prefix(msg.message, BLOCK_ERR_MAX_MESSAGE);
      const p = Buffer.allocUnsafe(BLOCK_ERR_ERRNO_BYTES + m.length);
      p.writeUInt32BE(msg.errno, 0);
      m.copy(p, BLOCK_ERR_ERRNO_BYTES);
      return encodeFrame(type, msg.id, p, FLAG_URGENT);
    }
    case 'ERROR':
      return encodeControl(type, { code: clip(msg.code), message: clip(msg.message) });
    case 'ABORT':
      return encodeControl(type, msg.code === undefined ? { reason: clip(msg.reason) } : { reason: clip(msg.reason), code: clip(msg.code) });
    case 'FINISH_RESULT':
      return encodeControl(type, msg.error === undefined ? { running: msg.running } : { running: msg.running, error: clip(msg.error) });
    default: {
      const { type: _t, ...body } = msg;
      return encodeControl(type, body);
    }
  }
}

function encodeControl(type: number, body: object): Buffer[] {
  return encodeFrame(type, 0, Buffer.from(JSON.stringify(body), 'utf8'), FLAG_URGENT);
}

/** Free text (error messages, reasons) is cut to the field cap the decoder enforces, so it always arrives. */
/** The longest prefix of `text` that fits `max` UTF-8 bytes without cutting a character. */
function utf8Prefix(text: string, max: number): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= max) return bytes;
  let end = max;
  // 10xxxxxx is a continuation byte: the character it belongs to started before `end`, so it goes whole.
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

function clip(text: string): string {
  return text.length > MAX_STRING ? `${text.slice(0, MAX_STRING - 1)}…` : text;
}

/**
 * BLOCK_DATA is the hot path: the payload is an 8-byte offset prefix plus the caller's data,
 * returned as separate buffers so the data is never copied before the socket's writev.
 */
export function encodeBlockData(id: number, offset: number, data: Bytes, done: boolean, urgent: boolean): Buffer[] {
  const prefix = Buffer.allocUnsafe(BLOCK_DATA_PREFIX);
  prefix.writeBigUInt64BE(BigInt(offset), 0);
  const flags = (done ? FLAG_DONE : 0) | (urgent ? FLAG_URGENT : 0);
  // Data decoded elsewhere (a relay, a test) comes as parts: sent as they are.
  const parts = data instanceof ByteParts ? data.parts : [data];
  return [encodeHeader(MSG.BLOCK_DATA, id, [prefix, ...parts], flags), prefix, ...parts];
}
