// What S sends, into the image: fetched bytes written in runs around the blocks already present (a late copy is
// dropped, never written over the guest's data), zero blocks made present without a write where the image is a
// hole already, and the probe that tells whether a failing disk takes writes again.
import type { LocalFaultGate } from './local-fault.js';
import type { BlockGeometry } from './block-geometry.js';
import type { BlockTable } from './block-table.js';
import type { DigestKeeper } from './digest-keeper.js';
import type { ImageHandle } from './image-file.js';
import type { BlockStoreStats } from './store-types.js';
import { CLASS_URGENT } from '../protocol/constants.js';
import type { BlockClass, ZeroRun } from '../protocol/messages.js';
import { PROBE_BYTES } from './store-constants.js';

export interface SourceWriterOptions {
  geometry: BlockGeometry;
  table: BlockTable;
  image: ImageHandle;
  digests: DigestKeeper;
  fault: LocalFaultGate;
  stats: BlockStoreStats;
  /** The image was created this run: a block never touched is a hole and reads as zeroes. */
  fresh: boolean;
  /** After Finish only: before it, what S sends is read through and not kept. */
  keeping: () => boolean;
  /** Block b's data is in the image (the committer makes it durable; its waiters go on). */
  present: (b: number) => void;
  /** A write or sync of the image failed (the local fault goes on, or a bug is thrown on). */
  diskFailed: (e: unknown) => void;
}

export class SourceWriter {
  readonly #o: SourceWriterOptions;

  constructor(opts: SourceWriterOptions) {
    this.#o = opts;
  }

  /**
   * Data from S: write the blocks still missing (in runs), skip those the guest or an earlier copy filled.
   * While the disk fails the data is dropped: its blocks stay missing and are fetched again once it recovers.
   */
  storeFetched(offset: number, data: Buffer, cls: BlockClass): void {
    const { geometry, table, fault, stats } = this.#o;
    if (!this.#o.keeping() || fault.active) return;
    const first = offset / geometry.blockSize;
    const count = Math.ceil(data.length / geometry.blockSize);
    let runStart = -1;
    const flush = (end: number) => {
      if (runStart < 0 || fault.active) return;
      const from = (runStart - first) * geometry.blockSize;
      const to = Math.min(data.length, (end - first) * geometry.blockSize);
      // Marked present only once the write returned (DESIGN.md §4): a failed run leaves every block of it missing.
      if (!this.#write(data.subarray(from, to), runStart * geometry.blockSize)) return;
      for (let b = runStart; b < end; b++) {
        table.sourceArrived(b, this.#o.digests.ofData(b, data.subarray((b - first) * geometry.blockSize)));
        this.#o.present(b);
      }
      runStart = -1;
    };
    for (let b = first; b < first + count; b++) {
      if (table.isPresent(b)) {
        flush(b);
        stats.lateFetchesDropped++;
      } else if (runStart < 0) {
        runStart = b;
      }
    }
    flush(first + count);
    if (cls === CLASS_URGENT) stats.bytesFetchedDemand += data.length;
    else stats.bytesFetchedBulk += data.length;
  }

  /** Make missing block b present as zeroes; false when not kept (before Finish) or the disk refused the write. */
  storeZero(b: number): boolean {
    const { geometry, table } = this.#o;
    if (!this.#o.keeping()) return false;
    // A block never touched in an image we created is a hole already; after a restart it may hold a torn
    // fetch, and a block taken back by the final check holds whatever was wrong with it.
    if (!this.#o.fresh || table.isTouched(b)) {
      if (this.#o.fault.active || !this.#write(Buffer.alloc(geometry.blockLength(b)), b * geometry.blockSize)) return false;
    }
    table.zeroArrived(b, this.#o.digests.ofZero(b));
    this.#o.present(b);
    return true;
  }

  /** S's zero runs (checked whole first: one bad run refuses the frame): wholly covered blocks neither present
   * nor being fetched become present as zeroes. */
  storeZeroRuns(runs: readonly ZeroRun[]): void {
    const { geometry, table, stats } = this.#o;
    geometry.checkZeroRuns(runs);
    for (const run of runs) {
      const runEnd = run.offset + run.length;
      for (let b = Math.ceil(run.offset / geometry.blockSize); b < geometry.blockCount; b++) {
        const length = geometry.blockLength(b);
        if (b * geometry.blockSize + length > runEnd) break;
        if (table.isPresent(b) || table.isInflight(b)) continue;
        if (this.storeZero(b)) stats.zeroBytesSkipped += length;
      }
    }
  }

  /**
   * The fault gate's retry: can the disk take writes again? Zeroes into missing blocks (preferably holes, which
   * need new space), then a sync. Harmless: a missing block's content is not used.
   */
  async probe(): Promise<void> {
    const { geometry, table, fresh, image } = this.#o;
    let b = table.nextMissing(0);
    for (let c = b; fresh && c >= 0; c = table.nextMissing(c + 1)) {
      if (!table.isTouched(c)) {
        b = c;
        break;
      }
    }
    if (b >= 0) {
      // About what a refill of the stream writes: a disk with room for one block only is still full to us.
      const max = Math.max(1, Math.floor(PROBE_BYTES / geometry.blockSize));
      let n = 1;
      while (n < max && b + n < geometry.blockCount && !table.isPresent(b + n) && !(fresh && table.isTouched(b + n))) n++;
      image.write(Buffer.alloc(geometry.runLength(b, n)), b * geometry.blockSize);
    }
    await image.sync();
  }

  /** Write S's bytes into the image; a failing disk turns the local fault on and returns false. */
  #write(data: Buffer, position: number): boolean {
    const { geometry, table } = this.#o;
    try {
      this.#o.image.write(data, position);
    } catch (e) {
      // Part of it may have landed: those blocks are no longer holes that read as zeroes.
      for (let b = geometry.blockOf(position); b * geometry.blockSize < position + data.length; b++) table.landedPartly(b);
      this.#o.diskFailed(e);
      return false;
    }
    this.#o.fault.succeeded();
    return true;
  }
}
