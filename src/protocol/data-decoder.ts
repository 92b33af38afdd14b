// Decode and validate the payload of a binary data message (EXTENTS, RAM_PAGES, BLOCK_*, GUEST_STREAM).
// Anything malformed raises ProtocolError: the connection must close.
import { ProtocolError } from '../common/errors.js';
import {
  BLOCK_REQ_PAYLOAD,
  CLASS_BULK,
  CLASS_URGENT,
  FLAG_DONE,
  FLAG_URGENT,
  MAX_BLOCK_REQ_BYTES,
  MAX_DIGESTS_PER_FRAME,
  MAX_EXTENTS_PER_FRAME,
  RAM_PAGE_SIZE,
  RAM_ZERO_PAGE_BIT,
  type MsgName,
} from './constants.js';
import type { Frame } from './frame-codec.js';
import { malformed } from './message-fields.js';
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
  RAM_INDEX_BYTES,
} from './message-layout.js';
import type { BlockClass, DataMessage, ZeroRun } from './message-types.js';

/** Refuses malformed UTF-8 instead of replacing it (a replaced text would not be what the peer sent). */
const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true });

export function decodeData(name: MsgName, frame: Frame): DataMessage {
  // BLOCK_DATA's data stays in the chunks it arrived in (written vectored); the other payloads are small.
  if (name === 'BLOCK_DATA') return decodeBlockData(frame);
  const { type, id, flags } = frame;
  const p = frame.payload.toBuffer();
  switch (name) {
    case 'EXTENTS': {
      if (p.length % EXTENT_RECORD_BYTES !== 0 || p.length / EXTENT_RECORD_BYTES > MAX_EXTENTS_PER_FRAME) malformed(name, 'length');
      const runs: ZeroRun[] = [];
      for (let o = 0; o < p.length; o += EXTENT_RECORD_BYTES) {
        runs.push({ offset: safeU64(p, o, name), length: safeU64(p, o + EXTENT_LENGTH_AT, name) });
      }
      return { type: 'EXTENTS', runs };
    }
    case 'RAM_PAGES': {
      if (p.length < RAM_INDEX_BYTES) malformed(name, 'short');
      const n = p.readUInt32BE(0);
      if (RAM_INDEX_BYTES * (1 + n) > p.length) malformed(name, 'index list past the end');
      const indices: number[] = new Array(n);
      let dataPages = 0;
      for (let i = 0; i < n; i++) {
        const ix = p.readUInt32BE(RAM_INDEX_BYTES * (1 + i));
        indices[i] = ix;
        if ((ix & RAM_ZERO_PAGE_BIT) === 0) dataPages++;
      }
      const data = p.subarray(RAM_INDEX_BYTES * (1 + n));
      if (data.length !== dataPages * RAM_PAGE_SIZE) malformed(name, 'page data length');
      return { type: 'RAM_PAGES', indices, data };
    }
    case 'BLOCK_REQ': {
      if (p.length !== BLOCK_REQ_PAYLOAD) malformed(name, 'length');
      const length = p.readUInt32BE(BLOCK_LENGTH_AT);
      const cls = p.readUInt8(BLOCK_CLASS_AT);
      if (cls !== CLASS_URGENT && cls !== CLASS_BULK) malformed(name, `class ${cls}`);
      if (length === 0 || length > MAX_BLOCK_REQ_BYTES) malformed(name, `length ${length}`);
      return { type: 'BLOCK_REQ', id, offset: safeU64(p, 0, name), length, cls: cls as BlockClass };
    }
    case 'BLOCK_ZERO': {
      if (p.length !== BLOCK_ZERO_PAYLOAD) malformed(name, 'length');
      const length = p.readUInt32BE(BLOCK_LENGTH_AT);
      if (length === 0) malformed(name, 'zero length');
      return {
        type: 'BLOCK_ZERO',
        id,
        offset: safeU64(p, 0, name),
        length,
        done: (flags & FLAG_DONE) !== 0,
        urgent: (flags & FLAG_URGENT) !== 0,
      };
    }
    case 'BLOCK_DIGESTS': {
      if (p.length % DIGEST_RECORD_BYTES !== 0 || p.length / DIGEST_RECORD_BYTES > MAX_DIGESTS_PER_FRAME) malformed(name, 'length');
      const entries: Array<[number, number]> = [];
      for (let o = 0; o < p.length; o += DIGEST_RECORD_BYTES) entries.push([p.readUInt32BE(o), p.readUInt32BE(o + DIGEST_CRC_AT)]);
      return { type: 'BLOCK_DIGESTS', entries };
    }
    case 'GUEST_STREAM':
      if (p.length === 0) malformed(name, 'empty');
      return { type: 'GUEST_STREAM', data: p };
    case 'BLOCK_ERR': {
      if (p.length < BLOCK_ERR_ERRNO_BYTES) malformed(name, 'short');
      // What our encoder sends: at most BLOCK_ERR_MAX_MESSAGE bytes of well-formed UTF-8; anything else is not S's.
      const text = p.subarray(BLOCK_ERR_ERRNO_BYTES);
      if (text.length > BLOCK_ERR_MAX_MESSAGE) malformed(name, `message of ${text.length} bytes`);
      let message: string;
      try {
        message = STRICT_UTF8.decode(text);
      } catch {
        malformed(name, 'message is not UTF-8');
      }
      return { type: 'BLOCK_ERR', id, errno: p.readUInt32BE(0), message };
    }
    default:
      throw new ProtocolError('PC_ERR_UNKNOWN_TYPE', String(type));
  }
}

function decodeBlockData(frame: Frame): DataMessage {
  const p = frame.payload;
  // At least one data byte after the offset: an empty BLOCK_DATA would answer nothing.
  if (p.length <= BLOCK_DATA_PREFIX) malformed('BLOCK_DATA', 'short');
  return {
    type: 'BLOCK_DATA',
    id: frame.id,
    offset: safeU64(p.subarray(0, BLOCK_DATA_PREFIX).toBuffer(), 0, 'BLOCK_DATA'),
    data: p.subarray(BLOCK_DATA_PREFIX),
    done: (frame.flags & FLAG_DONE) !== 0,
    urgent: (frame.flags & FLAG_URGENT) !== 0,
  };
}

function safeU64(p: Buffer, at: number, msg: string): number {
  const v = p.readBigUInt64BE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) malformed(msg, 'offset beyond 2^53');
  return Number(v);
}
