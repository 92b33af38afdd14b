// S's read-ahead cache: the zero scan reads just ahead of D's stream and keeps the data it found here, bounded
// in bytes, until the bulk request for it arrives, so S reads each data byte once. (A read-ahead after each demand
// miss used to fill it too: a fresh 1 MiB buffer per miss drove S into major GCs of up to 12 ms, BENCHMARKS.md.)
import { LRUCache } from 'lru-cache';

export class ReadAheadCache {
  readonly #grain: number;
  readonly #cache: LRUCache<number, Buffer>;

  constructor(opts: { maxBytes: number; grain: number }) {
    this.#grain = opts.grain;
    this.#cache = new LRUCache<number, Buffer>({ maxSize: Math.max(opts.maxBytes, opts.grain), sizeCalculation: (b) => b.length });
  }

  /** The cached bytes for [offset, offset+length) if every grain is present; consumed (a range is read once). */
  take(offset: number, length: number): Buffer | undefined {
    if (offset % this.#grain !== 0) return undefined;
    const parts: Buffer[] = [];
    for (let at = offset; at < offset + length; at += this.#grain) {
      const part = this.#cache.peek(at);
      if (!part) return undefined;
      parts.push(part);
    }
    for (let at = offset; at < offset + length; at += this.#grain) this.#cache.delete(at);
    const all = parts.length === 1 ? parts[0]! : (adjacentView(parts) ?? Buffer.concat(parts));
    return all.length === length ? all : all.subarray(0, length);
  }

  /** Store bytes read at a grain-aligned offset, split by grain. */
  put(offset: number, data: Buffer): void {
    for (let at = 0; at < data.length; at += this.#grain) {
      this.#cache.set(offset + at, data.subarray(at, Math.min(data.length, at + this.#grain)));
    }
  }

  clear(): void {
    this.#cache.clear();
  }

  get bytes(): number {
    return this.#cache.calculatedSize;
  }
}

/** The parts as one view when they are consecutive pieces of the same memory (no copy), else null. */
function adjacentView(parts: readonly Buffer[]): Buffer | null {
  const first = parts[0]!;
  let end = first.byteOffset + first.length;
  for (let i = 1; i < parts.length; i++) {
    const p = parts[i]!;
    if (p.buffer !== first.buffer || p.byteOffset !== end) return null;
    end += p.length;
  }
  return Buffer.from(first.buffer, first.byteOffset, end - first.byteOffset);
}
