// Test-only BlockDevice held in memory, with allocation tracked per granule (holes read as
// zero and show in blockStatus), counters, and injectable faults and delays.
import type { BlockDevice, Extent } from '../../../src/common/block-device.js';

export interface MemoryDeviceOptions {
  readOnly?: boolean;
  multiConnSafe?: boolean;
  /** Allocation granule. Default 4096. */
  granule?: number;
}

export type FaultHook = (op: string, offset: number, length: number) => Error | undefined;

export class MemoryBlockDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly: boolean;
  readonly multiConnSafe: boolean;
  readonly data: Buffer;
  readonly #granule: number;
  readonly #allocated: Uint8Array;
  readonly counts: Record<string, number> = {};
  /** Return an Error to fail that call. */
  fault: FaultHook | undefined;
  /** Milliseconds every call waits first. */
  delayMs = 0;

  constructor(size: number, opts: MemoryDeviceOptions = {}) {
    this.size = size;
    this.readOnly = opts.readOnly ?? false;
    this.multiConnSafe = opts.multiConnSafe ?? true;
    this.#granule = opts.granule ?? 4096;
    this.data = Buffer.alloc(size);
    this.#allocated = new Uint8Array(Math.ceil(size / this.#granule));
  }

  /** Fill with the self-describing pattern: each 8-byte word holds its offset (+ gen in the top byte). */
  fillPattern(offset = 0, length = this.size - offset, gen = 0): this {
    this.data.set(patternBytes(offset, length, gen), offset);
    this.#mark(offset, length, 1);
    return this;
  }

  async #enter(op: string, offset: number, length: number): Promise<void> {
    this.counts[op] = (this.counts[op] ?? 0) + 1;
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    const err = this.fault?.(op, offset, length);
    if (err) throw err;
    if (offset < 0 || offset + length > this.size) throw new RangeError(`${op} [${offset}, +${length}) outside ${this.size}`);
  }

  #mark(offset: number, length: number, value: 0 | 1): void {
    if (length === 0) return;
    const g = this.#granule;
    if (value === 1) {
      for (let i = Math.floor(offset / g); i * g < offset + length; i++) this.#allocated[i] = 1;
    } else {
      // Only whole granules (or the short last one) become holes; the caller zeroed the bytes.
      const end = offset + length;
      for (let i = Math.ceil(offset / g); i * g < end; i++) {
        if (Math.min((i + 1) * g, this.size) > end) break;
        this.#allocated[i] = 0;
      }
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    await this.#enter('read', offset, length);
    return Buffer.from(this.data.subarray(offset, offset + length));
  }

  async write(offset: number, data: Buffer, opts?: { fua?: boolean }): Promise<void> {
    await this.#enter(opts?.fua ? 'writeFua' : 'write', offset, data.length);
    data.copy(this.data, offset);
    this.#mark(offset, data.length, 1);
  }

  async flush(): Promise<void> {
    await this.#enter('flush', 0, 0);
  }

  async writeZeroes(offset: number, length: number, opts?: { fua?: boolean; noHole?: boolean }): Promise<void> {
    await this.#enter(opts?.noHole ? 'writeZeroesNoHole' : 'writeZeroes', offset, length);
    this.data.fill(0, offset, offset + length);
    if (opts?.noHole) this.#mark(offset, length, 1);
    else this.#mark(offset, length, 0);
  }

  async trim(offset: number, length: number): Promise<void> {
    await this.#enter('trim', offset, length);
    this.data.fill(0, offset, offset + length);
    this.#mark(offset, length, 0);
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    await this.#enter('blockStatus', offset, length);
    const g = this.#granule;
    const end = offset + length;
    const out: Extent[] = [];
    let pos = offset;
    while (pos < end) {
      const i = Math.floor(pos / g);
      const zero = this.#allocated[i] === 0;
      const next = Math.min((i + 1) * g, end);
      const last = out[out.length - 1];
      if (last && last.zero === zero) last.length += next - pos;
      else out.push({ offset: pos, length: next - pos, zero });
      pos = next;
    }
    return out;
  }

  async cache(offset: number, length: number): Promise<void> {
    await this.#enter('cache', offset, length);
  }
}

/** The pattern bytes for [offset, offset+length): word at byte b holds (b rounded down to 8) | gen<<56. */
export function patternBytes(offset: number, length: number, gen = 0): Buffer {
  const start = offset - (offset % 8);
  const words = Math.ceil((offset + length - start) / 8);
  const buf = Buffer.alloc(words * 8);
  for (let w = 0; w < words; w++) buf.writeBigUInt64BE(BigInt(start + w * 8) | (BigInt(gen) << 56n), w * 8);
  return buf.subarray(offset - start, offset - start + length);
}
