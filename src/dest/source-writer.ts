// What S sends, into the image: fetched bytes written in runs around the blocks already present (a late copy is
// dropped, never written over the guest's data), urgent ones at once and bulk ones off the event loop, zero blocks made present without a write where the image is a
// hole already, and the probe that tells whether a failing disk takes writes again.
import type { Logger } from '../common/logger.js';
import type { LocalFaultGate } from './local-fault.js';
import type { BlockGeometry } from './block-geometry.js';
import type { BlockTable } from './block-table.js';
import type { DigestKeeper } from './digest-keeper.js';
import type { ImageHandle } from './image-file.js';
import type { BlockStoreStats } from './store-types.js';
import { CLASS_URGENT } from '../protocol/constants.js';
import { asParts, type ByteParts, type BlockClass, type Bytes, type ZeroRun } from '../protocol/messages.js';
import { PROBE_BYTES, WRITE_WINDOW_BYTES } from './store-constants.js';

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
  /** Where a failure of a write off the event loop goes when it is not the disk's (no caller to throw it to). */
  log: Logger;
}

export class SourceWriter {
  readonly #o: SourceWriterOptions;

  constructor(opts: SourceWriterOptions) {
    this.#o = opts;
  }

  /**
   * Data from S (the chunks it arrived in): write the blocks still missing (in runs), skip those the guest or an
   * earlier copy filled or that a write in flight is filling. Urgent data is written at once (a guest waits, and it
   * is small); bulk data off the event loop, its blocks `writing` until the write returns. While the disk fails
   * the data is dropped: its blocks stay missing and are fetched again once it recovers.
   */
  storeFetched(offset: number, bytes: Bytes, cls: BlockClass): void {
    const { geometry, table, fault, stats, image } = this.#o;
    if (!this.#o.keeping() || fault.active || image.closed) return;
    const data = asParts(bytes);
    const first = offset / geometry.blockSize;
    const count = Math.ceil(data.length / geometry.blockSize);
    let runStart = -1;
    const flush = (end: number) => {
      if (runStart < 0 || fault.active) return;
      const from = (runStart - first) * geometry.blockSize;
      const to = Math.min(data.length, (end - first) * geometry.blockSize);
      const run = data.subarray(from, to);
      const start = runStart;
      runStart = -1;
      // Past the cap, a bulk write is made here: the loop stalls on the disk, which holds the socket back.
      if (cls === CLASS_URGENT || image.writingBytes >= WRITE_WINDOW_BYTES) this.#writeNow(run, start, end);
      else this.#writeLater(run, start, end);
    };
    for (let b = first; b < first + count; b++) {
      if (table.isPresent(b) || table.isWriting(b)) {
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

  /** Write blocks [start, end) now; marked present only once the write returned (DESIGN.md §4). */
  #writeNow(run: ByteParts, start: number, end: number): void {
    const { geometry, table } = this.#o;
    if (!this.#write(() => this.#o.image.writeParts(run, start * geometry.blockSize), start * geometry.blockSize, run.length)) return;
    for (let b = start; b < end; b++) {
      table.sourceArrived(b, this.#digestOf(run, start, b));
      this.#o.present(b);
    }
  }

  /**
   * Write blocks [start, end) off the event loop: `writing` meanwhile (a reader waits for the write, a guest
   * write waits before writing over them), present once it returned, missing again if it failed.
   */
  #writeLater(run: ByteParts, start: number, end: number): void {
    const { geometry, table, image } = this.#o;
    for (let b = start; b < end; b++) table.writeStarted(b);
    image.writePartsAsync(run, start * geometry.blockSize, (err) => {
      // Whatever fails here (not the disk's error, a store closing, a bug in the bookkeeping) is logged, as the fetcher
      // does for a sync write: thrown from this callback it would be a rejection nobody handles, and end the process.
      try {
        this.#landed(err, run, start, end);
      } catch (bug) {
        this.#o.log.error({ err: bug, offset: start * geometry.blockSize, length: run.length }, 'could not keep a fetched part here; its blocks stay missing');
      }
    });
  }

  /** An asynchronous write of blocks [start, end) returned (err: null) or failed. */
  #landed(err: unknown, run: ByteParts, start: number, end: number): void {
    const { table } = this.#o;
    if (err !== null || this.#o.image.closed) {
      // Failed, or the store closed meanwhile (nothing commits it any more; a restart fetches it again).
      for (let b = start; b < end; b++) table.writeFailed(b);
      if (err !== null) this.#o.diskFailed(err);
      return;
    }
    this.#o.fault.succeeded();
    for (let b = start; b < end; b++) {
      table.writeLanded(b, this.#digestOf(run, start, b));
      this.#o.present(b);
    }
  }

  /** The crc of block b of a run that starts at block `start` (a block may straddle the run's parts). */
  #digestOf(run: ByteParts, start: number, b: number): number | undefined {
    const bs = this.#o.geometry.blockSize;
    return this.#o.digests.ofData(b, run.subarray((b - start) * bs));
  }

  /** Make missing block b present as zeroes; false when not kept (before Finish) or the disk refused the write. */
  storeZero(b: number): boolean {
    const { geometry, table } = this.#o;
    // A write of S's bytes in flight fills it already (a late zero reply is dropped like a late copy).
    if (!this.#o.keeping() || table.isWriting(b)) return false;
    // A block never touched in an image we created is a hole already; after a restart it may hold a torn
    // fetch, and a block taken back by the final check holds whatever was wrong with it.
    if (!this.#o.fresh || table.isTouched(b)) {
      const zeroes = Buffer.alloc(geometry.blockLength(b));
      const at = b * geometry.blockSize;
      if (this.#o.fault.active || !this.#write(() => this.#o.image.write(zeroes, at), at, zeroes.length)) return false;
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
    // Never a block being written: the probe's zeroes would race S's bytes into its place.
    const free = (c: number) => !table.isPresent(c) && !table.isWriting(c);
    let b = table.nextMissing(0);
    while (b >= 0 && !free(b)) b = table.nextMissing(b + 1);
    for (let c = b; fresh && c >= 0; c = table.nextMissing(c + 1)) {
      if (free(c) && !table.isTouched(c)) {
        b = c;
        break;
      }
    }
    if (b >= 0) {
      // About what a refill of the stream writes: a disk with room for one block only is still full to us.
      const max = Math.max(1, Math.floor(PROBE_BYTES / geometry.blockSize));
      let n = 1;
      while (n < max && b + n < geometry.blockCount && free(b + n) && !(fresh && table.isTouched(b + n))) n++;
      image.write(Buffer.alloc(geometry.runLength(b, n)), b * geometry.blockSize);
    }
    await image.sync();
  }

  /** Write S's bytes into the image; a failing disk turns the local fault on and returns false. */
  #write(write: () => void, position: number, length: number): boolean {
    const { geometry, table } = this.#o;
    try {
      write();
    } catch (e) {
      // Part of it may have landed: those blocks are no longer holes that read as zeroes.
      for (let b = geometry.blockOf(position); b * geometry.blockSize < position + length; b++) table.landedPartly(b);
      this.#o.diskFailed(e);
      return false;
    }
    this.#o.fault.succeeded();
    return true;
  }
}
