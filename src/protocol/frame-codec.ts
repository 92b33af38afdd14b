// Frame encoder and streaming decoder for the migration wire. Pure: Buffers in, frames out.
import { crc32 } from '../common/crc32.js';
import { ProtocolError } from '../common/errors.js';
import {
  FRAME_HEADER_SIZE,
  FRAME_MAGIC,
  HEADER_CRC_AT,
  HEADER_FLAGS_AT,
  HEADER_ID_AT,
  HEADER_LENGTH_AT,
  HEADER_MAGIC_AT,
  HEADER_RESERVED_AT,
  HEADER_TYPE_AT,
  MAX_CONTROL_PAYLOAD,
  MAX_FRAME_PAYLOAD,
  isControlMsg,
  isKnownMsg,
  nameOfMsg,
} from './constants.js';
import { ByteParts } from './byte-parts.js';

export interface Frame {
  type: number;
  flags: number;
  id: number;
  /** As the chunks it arrived in: a large payload is never concatenated (toBuffer() for the small ones). */
  payload: ByteParts;
}

const EMPTY = Buffer.alloc(0);

/** Encode one frame as a header and its payload, ready for a vectored write. */
export function encodeFrame(type: number, id: number, payload: Buffer = EMPTY, flags = 0): [Buffer, Buffer] {
  return [encodeHeader(type, id, [payload], flags), payload];
}

/** Header for a payload given in parts (sent as header, ...parts without concatenating them). */
export function encodeHeader(type: number, id: number, parts: readonly Buffer[], flags = 0): Buffer {
  let length = 0;
  let crc = 0;
  for (const part of parts) {
    length += part.length;
    crc = crc32(part, crc);
  }
  // The same cap the decoder applies: a frame the peer must refuse is never sent.
  const cap = isControlMsg(type) ? MAX_CONTROL_PAYLOAD : MAX_FRAME_PAYLOAD;
  if (length > cap) throw new ProtocolError('PC_ERR_FRAME_TOO_LARGE', `${nameOfMsg(type)} of ${length} bytes, cap ${cap}`);
  const header = Buffer.allocUnsafe(FRAME_HEADER_SIZE);
  header.writeUInt32BE(FRAME_MAGIC, HEADER_MAGIC_AT);
  header.writeUInt8(type, HEADER_TYPE_AT);
  header.writeUInt8(flags, HEADER_FLAGS_AT);
  header.writeUInt16BE(0, HEADER_RESERVED_AT);
  header.writeUInt32BE(id >>> 0, HEADER_ID_AT);
  header.writeUInt32BE(length, HEADER_LENGTH_AT);
  header.writeUInt32BE(crc >>> 0, HEADER_CRC_AT);
  return header;
}

/**
 * Streaming decoder: push chunks split anywhere, get whole frames back. Lengths are checked against
 * their caps as soon as the header is complete, before any payload is buffered.
 */
export class FrameDecoder {
  #chunks: Buffer[] = [];
  #buffered = 0;
  #header: { type: number; flags: number; id: number; length: number; crc: number } | null = null;
  #dead = false;
  /** A cap below the per-type ones (before authentication), or Infinity. */
  #limit = Infinity;
  #limitReason = '';

  /** Bytes held waiting for the rest of a frame. */
  get buffered(): number {
    return this.#buffered;
  }

  /**
   * Lower every frame's payload cap to `bytes` (`reason` goes into the refusal), or raise it back to the
   * per-type caps with Infinity. Applies from the next header on.
   */
  setPayloadLimit(bytes: number, reason = ''): void {
    this.#limit = bytes;
    this.#limitReason = reason;
  }

  push(chunk: Buffer): Frame[] {
    if (this.#dead) throw new ProtocolError('PC_ERR_MALFORMED', 'decoder used after a protocol error');
    const frames: Frame[] = [];
    if (chunk.length > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
    try {
      for (;;) {
        if (this.#header === null) {
          if (this.#buffered < FRAME_HEADER_SIZE) break;
          this.#header = parseHeader(this.#take(FRAME_HEADER_SIZE).toBuffer(), this.#limit, this.#limitReason);
        }
        const h = this.#header;
        if (this.#buffered < h.length) break;
        const payload = h.length === 0 ? ByteParts.EMPTY : this.#take(h.length);
        this.#header = null;
        if (payload.crc32() !== h.crc) {
          throw new ProtocolError('PC_ERR_CHECKSUM', `${nameOfMsg(h.type)} id ${h.id}`);
        }
        frames.push({ type: h.type, flags: h.flags, id: h.id, payload });
      }
    } catch (e) {
      this.#dead = true;
      this.#chunks = [];
      this.#buffered = 0;
      throw e;
    }
    return frames;
  }

  /** Take exactly n bytes off the front as views of the chunks they sit in: no copy. */
  #take(n: number): ByteParts {
    const first = this.#chunks[0]!;
    let out: ByteParts;
    if (first.length >= n) {
      out = ByteParts.of(first.subarray(0, n));
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
    } else {
      const parts: Buffer[] = [];
      let filled = 0;
      let used = 0; // whole chunks consumed, dropped in one splice: a shift per chunk is quadratic in tiny chunks
      while (filled < n) {
        const c = this.#chunks[used]!;
        const want = n - filled;
        if (c.length <= want) {
          parts.push(c);
          filled += c.length;
          used++;
        } else {
          parts.push(c.subarray(0, want));
          this.#chunks[used] = c.subarray(want);
          filled += want;
        }
      }
      this.#chunks.splice(0, used);
      out = ByteParts.from(parts);
    }
    this.#buffered -= n;
    return out;
  }
}

function parseHeader(b: Buffer, limit: number, limitReason: string): { type: number; flags: number; id: number; length: number; crc: number } {
  const magic = b.readUInt32BE(HEADER_MAGIC_AT);
  if (magic !== FRAME_MAGIC) throw new ProtocolError('PC_ERR_BAD_MAGIC', `0x${magic.toString(16).padStart(8, '0')}`);
  const type = b.readUInt8(HEADER_TYPE_AT);
  if (!isKnownMsg(type)) throw new ProtocolError('PC_ERR_UNKNOWN_TYPE', String(type));
  if (b.readUInt16BE(HEADER_RESERVED_AT) !== 0) throw new ProtocolError('PC_ERR_MALFORMED', 'reserved header bits set');
  const length = b.readUInt32BE(HEADER_LENGTH_AT);
  const typeCap = isControlMsg(type) ? MAX_CONTROL_PAYLOAD : MAX_FRAME_PAYLOAD;
  const cap = Math.min(typeCap, limit);
  if (length > cap) {
    const why = cap < typeCap && limitReason ? ` ${limitReason}` : '';
    throw new ProtocolError('PC_ERR_FRAME_TOO_LARGE', `${nameOfMsg(type)} declares ${length} bytes, cap ${cap}${why}`);
  }
  return { type, flags: b.readUInt8(HEADER_FLAGS_AT), id: b.readUInt32BE(HEADER_ID_AT), length, crc: b.readUInt32BE(HEADER_CRC_AT) };
}

/**
 * The fields of one FRAME_HEADER_SIZE-byte header, checked as the decoder checks them (per-type caps only):
 * for code that follows frames crossing a stream without decoding them (the tests' fault layers).
 */
export function readFrameHeader(b: Buffer): { type: number; flags: number; id: number; length: number; crc: number } {
  return parseHeader(b, Infinity, '');
}
