// Small wire helpers for tests: run bytes (in any chunking) through FrameDecoder + decodeMessage, and cut
// a buffer at given points.
import { FrameDecoder, type Frame } from '../../src/protocol/frame-codec.js';
import { decodeMessage, encodeMessage, type Message } from '../../src/protocol/messages.js';
import { ByteParts } from '../../src/protocol/byte-parts.js';

/** The bytes encodeMessage produces for `msg`, concatenated. */
export function encodeBytes(msg: Message): Buffer {
  return Buffer.concat(encodeMessage(msg));
}

/** Push every chunk through one decoder; return all frames (throws whatever the decoder throws). */
export function framesOf(chunks: Iterable<Buffer>, decoder = new FrameDecoder()): Frame[] {
  const out: Frame[] = [];
  for (const c of chunks) out.push(...decoder.push(c));
  return out;
}

/** Frames → validated messages. */
export function messagesOf(chunks: Iterable<Buffer>, decoder = new FrameDecoder()): Message[] {
  return framesOf(chunks, decoder).map(decodeMessage);
}

/** Cut `buf` at the given offsets (any order, duplicates and out-of-range values allowed). */
export function cutAt(buf: Buffer, points: readonly number[]): Buffer[] {
  const cuts = [...new Set(points.map((p) => Math.max(0, Math.min(buf.length, p))))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of cuts) {
    out.push(buf.subarray(prev, c));
    prev = c;
  }
  out.push(buf.subarray(prev));
  return out;
}

/** One byte per chunk. */
export function byteByByte(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; i++) out.push(buf.subarray(i, i + 1));
  return out;
}

/** A frame with its payload as hex: deep equality on big Buffers is slow in vitest, strings are not. */
export function showFrame(f: Omit<Frame, 'payload'> & { payload: Buffer | ByteParts }): { type: number; flags: number; id: number; payload: string } {
  const p = f.payload instanceof ByteParts ? f.payload.toBuffer() : f.payload;
  return { type: f.type, flags: f.flags, id: f.id, payload: p.toString('hex') };
}

/** A message with every Buffer field as hex, for fast deep equality. */
export function showMessage(m: Message): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  // A decoded BLOCK_DATA's data is parts (ByteParts): shown as the same hex as the Buffer it was encoded from.
  for (const [k, v] of Object.entries(m)) {
    const buf = v instanceof ByteParts ? v.toBuffer() : v;
    out[k] = Buffer.isBuffer(buf) ? `hex:${buf.toString('hex')}` : v;
  }
  return out;
}
