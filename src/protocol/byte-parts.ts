// A run of bytes held as the socket chunks it arrived in, never concatenated: a 256 KiB payload spread over
// 64 KiB chunks is checksummed, sliced and written (vectored) without an assembly copy. Immutable; zero-copy slices.
import { crc32 } from '../common/crc32.js';

export class ByteParts {
  static readonly EMPTY = new ByteParts([], 0);

  /** Non-empty views, in order; their lengths add up to `length`. */
  readonly parts: readonly Buffer[];
  readonly length: number;

  private constructor(parts: readonly Buffer[], length: number) {
    this.parts = parts;
    this.length = length;
  }

  /** One buffer as parts (no copy). */
  static of(buf: Buffer): ByteParts {
    return buf.length === 0 ? ByteParts.EMPTY : new ByteParts([buf], buf.length);
  }

  /** Views in order (empty ones dropped; no copy). */
  static from(bufs: readonly Buffer[]): ByteParts {
    const parts = bufs.filter((b) => b.length > 0);
    let length = 0;
    for (const p of parts) length += p.length;
    return length === 0 ? ByteParts.EMPTY : new ByteParts(parts, length);
  }

  /** Bytes [start, end) as parts: views of the same memory, like Buffer.subarray (clamped the same way). */
  subarray(start = 0, end = this.length): ByteParts {
    start = Math.max(0, Math.min(start, this.length));
    end = Math.max(start, Math.min(end, this.length));
    if (start === 0 && end === this.length) return this;
    if (start === end) return ByteParts.EMPTY;
    const out: Buffer[] = [];
    let at = 0;
    for (const p of this.parts) {
      const pEnd = at + p.length;
      if (pEnd > start && at < end) out.push(p.subarray(Math.max(0, start - at), Math.min(p.length, end - at)));
      if (pEnd >= end) break;
      at = pEnd;
    }
    return new ByteParts(out, end - start);
  }

  /** CRC-32 over all parts, continuing from `initial`. */
  crc32(initial = 0): number {
    let crc = initial >>> 0;
    for (const p of this.parts) crc = crc32(p, crc);
    return crc;
  }

  /** One Buffer: the part itself when there is one (no copy), else a copy (for small payloads only). */
  toBuffer(): Buffer {
    if (this.parts.length === 1) return this.parts[0]!;
    return this.parts.length === 0 ? Buffer.alloc(0) : Buffer.concat(this.parts as Buffer[], this.length);
  }

  /** Copy every byte into `target` at `targetStart`. */
  copy(target: Buffer, targetStart = 0): void {
    let at = targetStart;
    for (const p of this.parts) at += p.copy(target, at);
  }

  equals(other: Buffer | ByteParts): boolean {
    const o = other instanceof ByteParts ? other : ByteParts.of(other);
    if (o.length !== this.length) return false;
    // Walk both part lists together: no concatenation.
    let i = 0;
    let j = 0;
    let ai = 0;
    let bj = 0;
    while (i < this.parts.length && j < o.parts.length) {
      const a = this.parts[i]!;
      const b = o.parts[j]!;
      const n = Math.min(a.length - ai, b.length - bj);
      if (a.compare(b, bj, bj + n, ai, ai + n) !== 0) return false;
      ai += n;
      bj += n;
      if (ai === a.length) {
        i++;
        ai = 0;
      }
      if (bj === b.length) {
        j++;
        bj = 0;
      }
    }
    return true;
  }
}

/** Bytes as one buffer or as the chunks they arrived in (a BLOCK_DATA's data: S encodes a Buffer, D decodes parts). */
export type Bytes = Buffer | ByteParts;

/** Either shape as parts (no copy). */
export function asParts(data: Bytes): ByteParts {
  return data instanceof ByteParts ? data : ByteParts.of(data);
}
