// A stackable fault layer around a source image (STYLE.md 12): EIO at chosen read calls, slow reads.
import type { Extent, SourceImage } from '../../src/common/block-device.js';
import { BackendError } from '../../src/common/errors.js';

export interface ImageFaultPlan {
  /** Read calls (0-based, counted across the image's life) that fail with EIO. */
  failReads?: ReadonlySet<number>;
  /** Extra latency per read. */
  readDelayMs?: number;
}

export class FaultImage implements SourceImage {
  readonly #inner: SourceImage & { makeReadOnly?: () => void };
  readonly #plan: ImageFaultPlan;
  #calls = 0;
  failures = 0;

  constructor(inner: SourceImage & { makeReadOnly?: () => void }, plan: ImageFaultPlan) {
    this.#inner = inner;
    this.#plan = plan;
  }

  get size(): number {
    return this.#inner.size;
  }

  makeReadOnly(): void {
    this.#inner.makeReadOnly?.();
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const call = this.#calls++;
    if (this.#plan.readDelayMs) await new Promise((r) => setTimeout(r, this.#plan.readDelayMs));
    if (this.#plan.failReads?.has(call)) {
      this.failures++;
      throw new BackendError('PC_ERR_BACKEND', `injected EIO on read call ${call}`);
    }
    return this.#inner.read(offset, length);
  }

  extents(): Promise<Extent[]> {
    return this.#inner.extents();
  }

  close(): Promise<void> {
    return this.#inner.close();
  }
}
