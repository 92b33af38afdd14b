// Test-only BlockDevice over a Buffer, with optional latency (on the event loop's timers, so fake timers
// drive it), an on/off fault switch, and counters of what is in flight.
import type { BlockDevice, Extent } from '../../../src/common/block-device.js';
import { BackendError } from '../../../src/common/errors.js';

export class MemoryBlockDevice implements BlockDevice {
  readonly data: Buffer;
  readonly multiConnSafe = true;
  readonly readOnly = false;
  /** Delay of every read and write, ms (0 = resolve on the next microtask). */
  latencyMs = 0;
  /** While set, reads/writes reject with a BackendError (as a device behind a dead link would). */
  failReads = false;
  failWrites = false;
  inFlight = 0;
  maxInFlight = 0;
  reads = 0;
  writes = 0;

  constructor(sizeOrData: number | Buffer) {
    this.data = typeof sizeOrData === 'number' ? Buffer.alloc(sizeOrData) : sizeOrData;
  }

  get size(): number {
    return this.data.length;
  }

  async #op<T>(fail: boolean, fn: () => T): Promise<T> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      if (this.latencyMs > 0) await new Promise((r) => setTimeout(r, this.latencyMs));
      else await Promise.resolve();
      if (fail) throw new BackendError('PC_ERR_BACKEND', 'injected fault');
      return fn();
    } finally {
      this.inFlight--;
    }
  }

  #check(offset: number, length: number): void {
    if (offset < 0 || length < 0 || offset + length > this.size) throw new RangeError(`I/O outside the disk: ${offset}+${length}`);
  }

  read(offset: number, length: number): Promise<Buffer> {
    this.#check(offset, length);
    return this.#op(this.failReads, () => {
      this.reads++;
      return Buffer.from(this.data.subarray(offset, offset + length));
    });
  }

  write(offset: number, data: Buffer): Promise<void> {
    this.#check(offset, data.length);
    const copy = Buffer.from(data);
    return this.#op(this.failWrites, () => {
      this.writes++;
      copy.copy(this.data, offset);
    });
  }

  async flush(): Promise<void> {}

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.#check(offset, length);
    this.data.fill(0, offset, offset + length);
  }

  async trim(offset: number, length: number): Promise<void> {
    await this.writeZeroes(offset, length);
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    return [{ offset, length, zero: false }];
  }

  async cache(): Promise<void> {}
}
