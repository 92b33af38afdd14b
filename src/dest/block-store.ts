// D's block store: the sparse image plus the present-bitmap, with copy-on-read underneath the BlockDevice
// interface that the simulated guest and the NBD export both use. Writes follow the dm-clone rules: a full-block
// write makes a block present at once, a partial write to a missing block first brings it in, and a late fetch
// never overwrites guest data. Before Finish it is a pass-through: reads go to S and nothing is kept.
// This file composes the parts: the per-block state table, the committer, the digest keeper, fetch orchestration,
// the writer of S's bytes, pass-through reads and the local-fault gate.
import type { BlockDevice, Extent, ReadTrace } from '../common/block-device.js';
import { deferred } from '../common/deferred.js';
import type { PostcopyError } from '../common/errors.js';
import type { LatencyRecorder } from '../common/latency-recorder.js';
import { CLASS_BULK } from '../protocol/constants.js';
import type { ZeroRun } from '../protocol/messages.js';
import { BlockFetches } from './block-fetches.js';
import type { DemandStages } from './demand-stages.js';
import { BlockGeometry } from './block-geometry.js';
import { BlockTable } from './block-table.js';
import { Committer } from './committer.js';
import { DigestKeeper, type BlockDigests } from './digest-keeper.js';
import type { Fetcher } from './fetcher.js';
import { createImage, ImageHandle, reopenImage, type ImageCreateOptions, type ImageFile } from './image-file.js';
import { LocalFaultGate } from './local-fault.js';
import { readAround, readThrough } from './pass-through.js';
import type { PresentBitmap } from './present-bitmap.js';
import { SourceWriter } from './source-writer.js';
import { writeGuest, type GuestWriteParts } from './guest-writes.js';
import { ZERO_CHUNK_BYTES } from './store-constants.js';
import { newStoreStats, type BlockStoreStats, type StoreFaultReport, type StoreMode, type StoreOptions } from './store-types.js';

export { FINAL_CHECK_MODES, type BlockDigests, type FinalCheckMode } from './digest-keeper.js';
export type { ImageCreateOptions, ImageFile } from './image-file.js';
export type { BlockStoreStats, StoreFaultReport, StoreMode, StoreOptions } from './store-types.js';

export class BlockStore implements BlockDevice {
  readonly size: number;
  readonly blockSize: number;
  readonly blockCount: number;
  readonly multiConnSafe = true;
  readonly readOnly = false;
  readonly stats: BlockStoreStats = newStoreStats();
  /** Time from a guest's read or write finding a block missing to the block being present. */
  readonly demandLatency: LatencyRecorder;
  /** Where each demand miss's time went, stage by stage. */
  readonly demandStages: DemandStages;
  /** Which file the image is and whether this session created it (a rollback removes only what it created). */
  readonly file: ImageFile;
  /** Told of each demand miss (the streamer continues just past it). */
  onDemandMiss: (block: number) => void = () => {};
  /** Told when the image's disk starts failing (full, EIO), again at a bounded rate, and when it recovers. */
  onLocalFault: (report: StoreFaultReport) => void = () => {};
  /** Told when fetched blocks can be stored again after a local fault (the streamer refills). */
  onWritable: () => void = () => {};

  #mode: StoreMode = 'pass-through';
  readonly #image: ImageHandle;
  readonly #bitmap: PresentBitmap;
  readonly #fetcher: Fetcher;
  readonly #geometry: BlockGeometry;
  /** Every block's state: present or not, whose bytes, in flight, its digest. */
  readonly #table: BlockTable;
  /** On while the image's disk refuses writes: nothing fetched is stored, nothing new is fetched to store. */
  readonly #fault: LocalFaultGate;
  readonly #committer: Committer;
  readonly #digests: DigestKeeper;
  readonly #writer: SourceWriter;
  readonly #fetches: BlockFetches;
  readonly #guestWriteParts: GuestWriteParts;
  readonly #copyOnReadStarted = deferred<void>();
  #complete = deferred<void>();

  private constructor(image: ImageHandle, opts: StoreOptions & { fresh: boolean; file: ImageFile }) {
    const { bitmap, log } = opts;
    this.#image = image;
    this.file = opts.file;
    this.size = opts.size;
    this.#bitmap = bitmap;
    this.#fetcher = opts.fetcher;
    this.blockSize = bitmap.blockSize;
    this.blockCount = bitmap.blockCount;
    const geometry = (this.#geometry = new BlockGeometry(opts.size, bitmap.blockSize, bitmap.blockCount));
    const table = (this.#table = new BlockTable(bitmap.blockCount, (b) => bitmap.has(b)));
    const fault = (this.#fault = new LocalFaultGate(
      () => this.#probeDisk(),
      (r) => this.onLocalFault({ ...r, bytesToCome: this.bytesOnlyOnSource }),
      opts.faultTiming,
    ));
    fault.onClear = () => this.onWritable();
    const diskFailed = (e: unknown) => this.#diskFailed(e);
    this.#committer = new Committer({
      bitmap,
      syncImage: () => image.sync(),
      // A bit whose bitmap write failed is durable in memory already: the bitmap keeps it, so the table does too.
      lost: (b) => !bitmap.isDurable(b) && table.syncLost(b),
      diskFailed,
      committed: () => {
        this.stats.commits++;
        this.#checkComplete();
      },
      faultActive: () => fault.active,
      log,
    });
    const digests = (this.#digests = new DigestKeeper(geometry, table, image, opts.finalCheck));
    const writer = (this.#writer = new SourceWriter({
      geometry, table, image, digests, fault, stats: this.stats, fresh: opts.fresh, diskFailed, log,
      keeping: () => this.#mode === 'copy-on-read',
      present: (b) => this.#present(b),
    }));
    this.#fetches = new BlockFetches({
      geometry, table, writer, fetcher: opts.fetcher, stats: this.stats, log,
      refusal: () => (fault.active ? fault.error : null),
      demandMiss: (b) => this.onDemandMiss(b),
    });
    this.demandLatency = this.#fetches.demandLatency;
    this.demandStages = this.#fetches.stages;
    this.#guestWriteParts = { geometry, table, image, fetches: this.#fetches, stats: this.stats, diskFailed, present: (b) => this.#present(b) };
  }

  /**
   * Create the image: a new sparse file of `size` bytes (0600), or, when `existing` allows, the file already at
   * `path` (see createImage). Never the file `notSameAs` (S's own image).
   */
  static create(path: string, opts: StoreOptions & ImageCreateOptions): BlockStore {
    const { fd, file } = createImage(path, opts.size, opts);
    return new BlockStore(new ImageHandle(fd, opts.io), { ...opts, fresh: file.created, file });
  }

  /** Reopen an image after a restart; blocks not in the bitmap may hold anything and are fetched again. */
  static reopen(path: string, opts: StoreOptions & { file: ImageFile }): BlockStore {
    const fd = reopenImage(path, opts.size, opts.file);
    return new BlockStore(new ImageHandle(fd, opts.io), { ...opts, fresh: false });
  }

  get mode(): StoreMode {
    return this.#mode;
  }
  get presentBlocks(): number {
    return this.#table.presentCount;
  }
  get durableBlocks(): number {
    return this.#bitmap.durableCount;
  }
  /** Bytes that exist only on S right now. */
  get bytesOnlyOnSource(): number {
    return (this.blockCount - this.#table.presentCount) * this.blockSize;
  }
  /** Resolves once every block is present and durable. */
  get whenComplete(): Promise<void> {
    return this.#complete.promise;
  }

  /** Finish: from now on reads keep what they fetch and writes land. */
  startCopyOnRead(): void {
    this.#mode = 'copy-on-read';
    this.#copyOnReadStarted.resolve();
    this.#checkComplete();
  }

  isPresent(block: number): boolean {
    return this.#table.isPresent(block);
  }
  isInflight(block: number): boolean {
    return this.#table.isInflight(block);
  }
  nextMissing(from: number): number {
    return this.#table.nextMissing(from);
  }
  /** The image's disk is failing (full, EIO): fetch nothing to store until it recovers. */
  get writesPaused(): boolean {
    return this.#fault.active;
  }

  // ---- BlockDevice ----

  /** A read; `trace` (from the NBD export) times a demand miss up to the reply leaving, else to this returning. */
  async read(offset: number, length: number, trace?: ReadTrace): Promise<Buffer> {
    this.#geometry.checkRange(offset, length);
    this.stats.guestBytesRead += length;
    if (length === 0) return Buffer.alloc(0);
    if (this.#mode === 'pass-through') return readThrough(this.#fetcher, offset, length);
    if (this.#fault.active) return this.#readAround(offset, length);
    const ours: ReadTrace | undefined = trace ? undefined : { receivedAt: performance.now() };
    try {
      await this.#fetches.ensureRange(offset, length, trace ?? ours);
    } catch (e) {
      // The disk failed while this read waited: serve it from S without keeping the bytes.
      if (this.#fault.active) return this.#readAround(offset, length);
      throw e;
    }
    const data = this.#image.read(offset, length);
    ours?.answered?.(performance.now());
    return data;
  }

  async write(offset: number, data: Buffer, opts?: { fua?: boolean }): Promise<void> {
    this.#geometry.checkRange(offset, data.length);
    if (data.length === 0) return;
    await this.#copyOnReadStarted.promise;
    await writeGuest(this.#guestWriteParts, offset, data);
    if (opts?.fua) await this.flush();
  }

  async flush(): Promise<void> {
    await this.#committer.commit();
  }

  async writeZeroes(offset: number, length: number, opts?: { fua?: boolean }): Promise<void> {
    this.#geometry.checkRange(offset, length);
    for (let at = offset; at < offset + length; at += ZERO_CHUNK_BYTES) {
      await this.write(at, Buffer.alloc(Math.min(ZERO_CHUNK_BYTES, offset + length - at)));
    }
    const end = Math.floor((offset + length) / this.blockSize);
    for (let b = Math.ceil(offset / this.blockSize); b < end; b++) this.#table.guestZeroed(b);
    if (opts?.fua) await this.flush();
  }

  /** TRIM: our image reads zeroes afterwards (the spec allows anything; zeroes are the least surprising). */
  async trim(offset: number, length: number, opts?: { fua?: boolean }): Promise<void> {
    await this.writeZeroes(offset, length, opts);
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    this.#geometry.checkRange(offset, length);
    return this.#geometry.extents(offset, length, (b) => this.#table.isZero(b));
  }

  async cache(offset: number, length: number): Promise<void> {
    this.#geometry.checkRange(offset, length);
    if (this.#mode === 'pass-through' || length === 0) return;
    const last = this.#geometry.lastBlockOf(offset, length);
    for (let b = this.#geometry.blockOf(offset); b <= last; b++) {
      if (!this.#table.isPresent(b)) void this.#fetches.ensure(b).catch(() => {});
    }
  }

  // ---- fed by the streamer and the extent map ----

  /** Ask S for `count` blocks from `first` in the background. */
  fetchBulk(first: number, count: number): void {
    this.#fetches.fetch(first, count, CLASS_BULK);
  }

  /** S's zero runs: blocks wholly inside them become present without travelling. */
  applyZeroRuns(runs: readonly ZeroRun[]): void {
    this.#writer.storeZeroRuns(runs);
  }

  /** The final check: the crc32 of every block whose content is S's and untouched since (see DigestKeeper). */
  pristineDigests(): Promise<BlockDigests> {
    return this.#digests.pristineDigests();
  }

  /**
   * S found these blocks differ from its image: unless the guest has written them since, they are missing
   * again (in memory and on disk) and will be fetched anew.
   */
  async invalidate(blocks: readonly number[]): Promise<number> {
    const table = this.#table;
    // A number outside the image is no block of the table, so never pristine.
    const again = blocks.filter((b) => table.isPristine(b));
    // A number listed twice is taken back once.
    for (const b of again) if (table.isPristine(b)) table.invalidated(b);
    await this.#bitmap.clear(again);
    if (again.length > 0) this.#complete = deferred<void>();
    return again.length;
  }

  /** Settles once every write of S's bytes in flight (bulk, off the event loop) has returned and been counted. */
  writesSettled(): Promise<void> {
    return this.#image.drain();
  }

  async close(): Promise<void> {
    this.#fault.close();
    this.#committer.stop();
    // The writes in flight land first, so the last commit makes the blocks they bring durable too.
    await this.#image.drain();
    await this.#committer.commit();
    this.#bitmap.close();
    this.#image.close();
  }

  /** Fail all waiting readers (D gives up on S). */
  failWaiters(err: PostcopyError): void {
    this.#fetches.failWaiters(err);
  }

  // ---- internals ----

  /** Block b's data is in the image: durable with the next commit; its waiters go on. */
  #present(b: number): void {
    this.#committer.track(b);
    this.#fetches.arrived(b);
  }

  /**
   * A write or sync of the image failed. A system error (ENOSPC, EIO, ...) is a local fault: fetching pauses
   * and waiting readers go around the store; anything else is a bug and is thrown on.
   */
  #diskFailed(e: unknown): void {
    if (!this.#fault.fail(e)) throw e;
    this.#fetches.failWaiters(this.#fault.error);
  }

  /** The gate's retry: can the disk take writes again? Then the commit that failed. */
  async #probeDisk(): Promise<void> {
    await this.#writer.probe();
    if (this.#committer.pendingCount > 0) await this.#committer.commit();
  }

  #checkComplete(): void {
    if (this.#mode !== 'copy-on-read' || this.#complete.settled) return;
    if (this.#bitmap.complete && this.#bitmap.durableCount === this.blockCount) this.#complete.resolve();
    else if (this.#bitmap.complete && this.#committer.pendingCount > 0) this.#committer.commitInBackground();
  }

  /** While the disk fails: present blocks from the image, missing ones read through from S and not kept. */
  #readAround(offset: number, length: number): Promise<Buffer> {
    return readAround(this.#geometry, this.#table, this.#fetcher, this.#image.read(offset, length), offset);
  }
}
