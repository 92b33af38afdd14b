// D's block store: the sparse image plus the present-bitmap, with copy-on-read underneath the BlockDevice
// interface that the simulated guest and the NBD export both use. Writes follow the dm-clone rules: a full-block
// write makes a block present at once, a partial write to a missing block first brings it in, and a late fetch
// never overwrites guest data. Before Finish it is a pass-through: reads go to S and nothing is kept.
import { closeSync, constants, fstatSync, fsyncSync, ftruncateSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { describeIdentity, fdIdentity, sameFile, type FileIdentity } from '../common/image-identity.js';
import { fsyncDir, openPrivate } from '../common/state-file.js';
import { imageWriteIo, readFully, readIntoFully, type ImageWriteIo } from '../common/file-io.js';
import { crc32 } from '../common/crc32.js';
import type { BlockDevice, Extent } from '../common/block-device.js';
import { deferred, type Deferred } from '../common/deferred.js';
import { BackendError, ProtocolError, UsageError, type PostcopyError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { CLASS_BULK, CLASS_URGENT } from '../protocol/constants.js';
import type { BlockClass, ZeroRun } from '../protocol/messages.js';
import type { Fetcher, FetchSink } from './fetcher.js';
import { LatencyRecorder } from '../common/latency-recorder.js';
import type { PresentBitmap } from './present-bitmap.js';
import { LocalFaultGate, type LocalFaultReport, type LocalFaultTiming } from './local-fault.js';

/** Batch bitmap commits: one image fdatasync + one bitmap write per interval, not per block. */
const COMMIT_INTERVAL_MS = 25;
const ZERO_CHUNK = 4 * 1024 * 1024;
/** While the disk fails, the retry writes this many bytes of zeroes into missing blocks to see if it takes writes. */
const PROBE_BYTES = 1024 * 1024;
/** The final check reads the image in runs of this many bytes, yielding between them. */
const DIGEST_READ_BYTES = 4 * 1024 * 1024;

export type StoreMode = 'pass-through' | 'copy-on-read';

/**
 * How the final check learns what D holds of S's bytes. `digest`: the crc32 of each block as it was written
 * (no extra I/O; a block that arrived before a restart is read back). `readback`: every such block is read back
 * from the image once all are durable, so damage done after the write (a stray writer, a bug) is found too.
 */
export type FinalCheckMode = 'digest' | 'readback';
export const FINAL_CHECK_MODES: readonly FinalCheckMode[] = ['digest', 'readback'];

export interface BlockStoreStats {
  bytesFetchedDemand: number;
  bytesFetchedBulk: number;
  zeroBytesSkipped: number;
  guestBytesWritten: number;
  guestBytesRead: number;
  demandMisses: number;
  lateFetchesDropped: number;
  commits: number;
}

/** The final check's digests: block numbers in order, and the crc32 of each. */
export interface BlockDigests {
  blocks: Uint32Array;
  crcs: Uint32Array;
}

export interface StoreOptions {
  size: number;
  bitmap: PresentBitmap;
  fetcher: Fetcher;
  log: Logger;
  finalCheck?: FinalCheckMode;
  /** The image's writes and syncs (tests inject a failing disk). */
  io?: ImageWriteIo;
  /** Retry and report pacing while the image's disk fails (tests shorten it). */
  faultTiming?: LocalFaultTiming;
}

/** A local fault as told to the operator: what happened and how much is still to come from S. */
export interface StoreFaultReport extends LocalFaultReport {
  bytesToCome: number;
}

/** The image file as this session found or made it. */
export interface ImageFile {
  created: boolean;
  identity: FileIdentity;
  /** Its size before this session (0 for a file it created). */
  priorSize: number;
}

export interface ImageCreateOptions {
  /** A file already at the path may be used: 'never' (default), 'empty' (only with no bytes), 'overwrite' (--force). */
  existing?: 'never' | 'empty' | 'overwrite';
  /** S's own image when it is on this host: never opened for writing. */
  notSameAs?: FileIdentity | null;
}

export class BlockStore implements BlockDevice {
  readonly size: number;
  readonly blockSize: number;
  readonly blockCount: number;
  readonly multiConnSafe = true;
  readonly readOnly = false;
  readonly stats: BlockStoreStats = {
    bytesFetchedDemand: 0,
    bytesFetchedBulk: 0,
    zeroBytesSkipped: 0,
    guestBytesWritten: 0,
    guestBytesRead: 0,
    demandMisses: 0,
    lateFetchesDropped: 0,
    commits: 0,
  };
  /** Time from a guest's read or write finding a block missing to the block being present. */
  readonly demandLatency = new LatencyRecorder();
  /** Which file the image is and whether this session created it (a rollback removes only what it created). */
  readonly file: ImageFile;
  /** Told of each demand miss (the streamer continues just past it). */
  onDemandMiss: (block: number) => void = () => {};
  /** Told when the image's disk starts failing (full, EIO), again at a bounded rate, and when it recovers. */
  onLocalFault: (report: StoreFaultReport) => void = () => {};
  /** Told when fetched blocks can be stored again after a local fault (the streamer refills). */
  onWritable: () => void = () => {};

  #fd: number;
  #mode: StoreMode;
  readonly #bitmap: PresentBitmap;
  readonly #fetcher: Fetcher;
  readonly #log: Logger;
  readonly #io: ImageWriteIo;
  /** On while the image's disk refuses writes: nothing fetched is stored, nothing new is fetched to store. */
  readonly #fault: LocalFaultGate;
  /** True while the image is the one we created this run: a block not present was never written and reads as zero. */
  readonly #fresh: boolean;
  readonly #waiters = new Map<number, Deferred<void>>();
  readonly #urgentInflight = new Set<number>();
  readonly #bulkInflight = new Set<number>();
  /** Blocks known to read as zeroes (from S's extent map, or zero-filled here), cleared on any write. */
  readonly #zeroKnown: Uint8Array;
  /** Blocks whose content is S's, untouched by the guest since: the ones the final check compares with S. */
  readonly #pristine: Uint8Array;
  /** Blocks this run has written bytes into: in a fresh image every other block is still a hole. */
  readonly #written: Uint8Array;
  /** Pristine blocks whose crc32 was taken as they were written (digest mode). */
  readonly #digestKnown: Uint8Array;
  readonly #digests: Uint32Array;
  readonly #finalCheck: FinalCheckMode;
  /** crc32 of a whole block of zeroes. */
  readonly #zeroBlockCrc: number;
  #pendingDurable: number[] = [];
  #commitChain: Promise<void> = Promise.resolve();
  #commitTimer: NodeJS.Timeout | null = null;
  readonly #copyOnReadStarted = deferred<void>();
  #complete = deferred<void>();

  private constructor(fd: number, opts: StoreOptions & { fresh: boolean; file: ImageFile }) {
    this.#fd = fd;
    this.file = opts.file;
    this.size = opts.size;
    this.#bitmap = opts.bitmap;
    this.blockSize = opts.bitmap.blockSize;
    this.blockCount = opts.bitmap.blockCount;
    this.#fetcher = opts.fetcher;
    this.#log = opts.log;
    this.#io = opts.io ?? imageWriteIo;
    this.#fault = new LocalFaultGate(
      () => this.#probeDisk(),
      (r) => this.onLocalFault({ ...r, bytesToCome: this.bytesOnlyOnSource }),
      opts.faultTiming,
    );
    this.#fault.onClear = () => this.onWritable();
    this.#fresh = opts.fresh;
    this.#mode = 'pass-through';
    this.#zeroKnown = new Uint8Array(Math.ceil(this.blockCount / 8));
    this.#pristine = new Uint8Array(Math.ceil(this.blockCount / 8));
    this.#written = new Uint8Array(Math.ceil(this.blockCount / 8));
    this.#digestKnown = new Uint8Array(Math.ceil(this.blockCount / 8));
    this.#digests = new Uint32Array(this.blockCount);
    this.#finalCheck = opts.finalCheck ?? 'digest';
    this.#zeroBlockCrc = crc32(Buffer.alloc(this.blockSize));
  }

  /**
   * Create the image: a new sparse file of `size` bytes (0600), or, when `existing` allows, the file already at
   * `path`, opened without truncation and set to `size` (the operator's file: its mode is left alone, and a
   * rollback gives it back its size). Never the file `notSameAs` (S's own image), checked on the open descriptor.
   */
  static create(path: string, opts: StoreOptions & ImageCreateOptions): BlockStore {
    let fd: number;
    let created = true;
    try {
      fd = openPrivate(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      created = false;
      fd = openSync(path, 'r+');
    }
    const identity = fdIdentity(fd);
    const priorSize = fstatSync(fd).size;
    const refuse = (err: PostcopyError) => {
      closeSync(fd);
      throw err;
    };
    // A file this call created cannot be S's (which existed before); only a file found here is compared.
    if (!created && sameFile(identity, opts.notSameAs)) {
      refuse(new UsageError('PC_ERR_SAME_IMAGE', `${path} is the source's own image (${describeIdentity(identity)} on this host); give the destination another --image`));
    }
    const existing = opts.existing ?? 'never';
    if (!created && !(existing === 'overwrite' || (existing === 'empty' && priorSize === 0))) {
      refuse(new UsageError('PC_ERR_IMAGE_EXISTS', `${path} appeared while the destination was waiting (${priorSize} bytes); it was left alone`));
    }
    // An existing file is overwritten only on --force: it takes the source's size (a rollback restores a smaller one).
    if (created || priorSize !== opts.size) {
      // The size and (for a new file) its name must survive a power cut: a restart after cut-over finds the image
      // by both, and refuses a missing or short one rather than resume.
      ftruncateSync(fd, opts.size);
      fsyncSync(fd);
      if (created) fsyncDir(dirname(path));
    }
    return new BlockStore(fd, { ...opts, fresh: created, file: { created, identity, priorSize } });
  }

  /** Reopen an image after a restart; blocks not in the bitmap may hold anything and are fetched again. */
  static reopen(path: string, opts: StoreOptions & { file: ImageFile }): BlockStore {
    const fd = openSync(path, 'r+');
    const identity = fdIdentity(fd);
    const size = fstatSync(fd).size;
    if (!sameFile(identity, opts.file.identity) || size !== opts.size) {
      closeSync(fd);
      throw new UsageError('PC_ERR_STATE_DIR', `${path} changed under the destination (${describeIdentity(identity)}, ${size} bytes)`);
    }
    return new BlockStore(fd, { ...opts, fresh: false });
  }

  get mode(): StoreMode {
    return this.#mode;
  }
  get presentBlocks(): number {
    return this.#bitmap.presentCount;
  }
  get durableBlocks(): number {
    return this.#bitmap.durableCount;
  }
  /** Bytes that exist only on S right now. */
  get bytesOnlyOnSource(): number {
    return (this.blockCount - this.#bitmap.presentCount) * this.blockSize;
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
    return this.#bitmap.has(block);
  }
  isInflight(block: number): boolean {
    return this.#urgentInflight.has(block) || this.#bulkInflight.has(block);
  }
  nextMissing(from: number): number {
    return this.#bitmap.nextMissing(from);
  }
  /** The image's disk is failing (full, EIO): fetch nothing to store until it recovers. */
  get writesPaused(): boolean {
    return this.#fault.active;
  }

  // ---- BlockDevice ----

  async read(offset: number, length: number): Promise<Buffer> {
    this.#checkRange(offset, length);
    this.stats.guestBytesRead += length;
    if (length === 0) return Buffer.alloc(0);
    if (this.#mode === 'pass-through') return this.#readThrough(offset, length);
    if (this.#fault.active) return this.#readAround(offset, length);
    try {
      await this.#ensureRange(offset, length);
    } catch (e) {
      // The disk failed while this read waited: serve it from S without keeping the bytes.
      if (this.#fault.active) return this.#readAround(offset, length);
      throw e;
    }
    return this.#readLocal(offset, length);
  }

  async write(offset: number, data: Buffer, opts?: { fua?: boolean }): Promise<void> {
    this.#checkRange(offset, data.length);
    if (data.length === 0) return;
    await this.#copyOnReadStarted.promise;
    const first = Math.floor(offset / this.blockSize);
    const last = Math.floor((offset + data.length - 1) / this.blockSize);
    // Partially covered missing blocks (only the first and last can be) must be brought in first.
    for (;;) {
      const partial = [first, last].filter((b) => !this.#bitmap.has(b) && !this.#covers(b, offset, data.length));
      if (partial.length === 0) break;
      await Promise.all(partial.map((b) => this.#ensure(b)));
    }
    try {
      this.#io.write(this.#fd, data, offset);
    } catch (e) {
      // The guest gets the disk's own error (ENOSPC, EIO). Missing blocks stay missing; present ones may now hold
      // part of the write, so they are no longer S's bytes for the final check.
      for (let b = first; b <= last; b++) {
        setBit(this.#written, b);
        clearBit(this.#pristine, b);
        clearBit(this.#digestKnown, b);
        this.#clearZeroKnown(b);
      }
      this.#diskFailed(e);
      throw e;
    }
    this.stats.guestBytesWritten += data.length;
    for (let b = first; b <= last; b++) {
      setBit(this.#written, b);
      this.#clearZeroKnown(b);
      clearBit(this.#pristine, b);
      clearBit(this.#digestKnown, b);
      if (!this.#bitmap.has(b)) this.#markPresent(b);
    }
    if (opts?.fua) await this.flush();
  }

  async flush(): Promise<void> {
    await this.#commit();
  }

  async writeZeroes(offset: number, length: number, opts?: { fua?: boolean }): Promise<void> {
    this.#checkRange(offset, length);
    for (let at = offset; at < offset + length; at += ZERO_CHUNK) {
      await this.write(at, Buffer.alloc(Math.min(ZERO_CHUNK, offset + length - at)));
    }
    const first = Math.ceil(offset / this.blockSize);
    const end = Math.floor((offset + length) / this.blockSize);
    for (let b = first; b < end; b++) this.#setZeroKnown(b);
    if (opts?.fua) await this.flush();
  }

  /** TRIM: our image reads zeroes afterwards (the spec allows anything; zeroes are the least surprising). */
  async trim(offset: number, length: number, opts?: { fua?: boolean }): Promise<void> {
    await this.writeZeroes(offset, length, opts);
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    this.#checkRange(offset, length);
    const out: Extent[] = [];
    const end = Math.min(this.size, offset + length);
    for (let at = offset; at < end; ) {
      const b = Math.floor(at / this.blockSize);
      const next = Math.min(end, (b + 1) * this.blockSize);
      const zero = this.#isZeroKnown(b);
      const lastExt = out[out.length - 1];
      if (lastExt && lastExt.zero === zero) lastExt.length += next - at;
      else out.push({ offset: at, length: next - at, zero });
      at = next;
    }
    return out;
  }

  async cache(offset: number, length: number): Promise<void> {
    this.#checkRange(offset, length);
    if (this.#mode === 'pass-through' || length === 0) return;
    const first = Math.floor(offset / this.blockSize);
    const last = Math.floor((offset + length - 1) / this.blockSize);
    for (let b = first; b <= last; b++) if (!this.#bitmap.has(b)) void this.#ensure(b).catch(() => {});
  }

  // ---- fed by the streamer and the extent map ----

  /** Ask S for `count` blocks from `first` in the background. */
  fetchBulk(first: number, count: number): void {
    this.#fetchBlocks(first, count, CLASS_BULK);
  }

  /** S's zero runs: blocks wholly inside them become present without travelling. */
  applyZeroRuns(runs: readonly ZeroRun[]): void {
    // Refused whole: a frame with one bad run applies none of its runs.
    for (const run of runs) {
      if (run.offset + run.length > this.size) throw new ProtocolError('PC_ERR_OUT_OF_RANGE', `zero run ${run.offset}+${run.length}`);
    }
    for (const run of runs) {
      const runEnd = run.offset + run.length;
      for (let b = Math.ceil(run.offset / this.blockSize); b < this.blockCount; b++) {
        if (b * this.blockSize + this.#blockLength(b) > runEnd) break;
        if (this.#bitmap.has(b) || this.isInflight(b)) continue;
        if (this.#storeZeroBlock(b)) this.stats.zeroBytesSkipped += this.#blockLength(b);
      }
    }
  }

  /**
   * The final check: the crc32 of every block whose content is S's and untouched since. In digest mode, the
   * digest taken as it was written; otherwise (readback mode, or a block that arrived before a restart) the
   * block is read back from the image, in runs, yielding between them.
   */
  async pristineDigests(): Promise<BlockDigests> {
    let count = 0;
    for (let b = 0; b < this.blockCount; b++) if (getBit(this.#pristine, b)) count++;
    // Typed arrays, not a pair per block: 16 GiB of 64 KiB blocks would be 262 144 small arrays on the heap.
    const out: BlockDigests = { blocks: new Uint32Array(count), crcs: new Uint32Array(count) };
    let n = 0;
    const runBlocks = Math.max(1, Math.floor(DIGEST_READ_BYTES / this.blockSize));
    const known = (b: number) => this.#finalCheck === 'digest' && getBit(this.#digestKnown, b);
    for (let first = 0; first < this.blockCount; first += runBlocks) {
      const count = Math.min(runBlocks, this.blockCount - first);
      let needRead = false;
      for (let b = first; b < first + count && !needRead; b++) needRead = getBit(this.#pristine, b) && !known(b);
      const offset = first * this.blockSize;
      const buf = needRead ? this.#readCheckRun(offset, Math.min(this.size, offset + count * this.blockSize) - offset) : null;
      for (let b = first; b < first + count; b++) {
        if (!getBit(this.#pristine, b)) continue;
        const at = (b - first) * this.blockSize;
        out.blocks[n] = b;
        out.crcs[n++] = known(b) ? this.#digests[b]! : crc32(buf!.subarray(at, at + this.#blockLength(b)));
      }
      if (needRead) await new Promise<void>((r) => setImmediate(r));
    }
    return out;
  }

  /** Read a run for the final check into one reused buffer: the check may read the whole image, and fresh
   * buffers for it would only feed the garbage collector (and the agent's peak RSS). */
  #readCheckRun(offset: number, length: number): Buffer {
    if (this.#checkBuf.length < length) this.#checkBuf = Buffer.allocUnsafe(Math.max(length, DIGEST_READ_BYTES));
    return readIntoFully(this.#fd, this.#checkBuf, offset, length).subarray(0, length);
  }
  #checkBuf: Buffer = Buffer.alloc(0);

  /**
   * S found these blocks differ from its image: unless the guest has written them since, they are missing
   * again (in memory and on disk) and will be fetched anew.
   */
  async invalidate(blocks: readonly number[]): Promise<number> {
    const again = blocks.filter((b) => b >= 0 && b < this.blockCount && getBit(this.#pristine, b) && this.#bitmap.has(b));
    for (const b of again) {
      clearBit(this.#pristine, b);
      clearBit(this.#digestKnown, b);
      this.#clearZeroKnown(b);
      // Whatever is on disk there is untrusted now, hole or not: a zero reply must write real zeroes.
      setBit(this.#written, b);
    }
    await this.#bitmap.clear(again);
    if (again.length > 0) this.#complete = deferred<void>();
    return again.length;
  }

  async close(): Promise<void> {
    this.#fault.close();
    if (this.#commitTimer) clearTimeout(this.#commitTimer);
    this.#commitTimer = null;
    await this.#commit();
    this.#bitmap.close();
    if (this.#fd >= 0) closeSync(this.#fd);
    this.#fd = -1;
  }

  /** Fail all waiting readers (D gives up on S). */
  failWaiters(err: PostcopyError): void {
    for (const [, d] of this.#waiters) d.reject(err);
    this.#waiters.clear();
  }

  // ---- internals ----

  #ensureRange(offset: number, length: number): Promise<void> | void {
    const first = Math.floor(offset / this.blockSize);
    const last = Math.floor((offset + length - 1) / this.blockSize);
    let waits: Promise<void>[] | null = null;
    for (let b = first; b <= last; b++) {
      if (!this.#bitmap.has(b)) (waits ??= []).push(this.#ensure(b));
    }
    if (waits) return Promise.all(waits).then(() => undefined);
  }

  /** Resolves once block b is present; one fetch per block, shared by every waiter. */
  #ensure(b: number): Promise<void> {
    if (this.#bitmap.has(b)) return Promise.resolve();
    // Nowhere to keep it: reads go around the store, a partial write fails like the disk under it.
    if (this.#fault.active) return Promise.reject(this.#fault.error);
    let d = this.#waiters.get(b);
    if (!d) {
      d = deferred<void>();
      this.#waiters.set(b, d);
      const started = performance.now();
      void d.promise.then(() => this.demandLatency.record(performance.now() - started), () => {});
    }
    // A bulk fetch of b may sit behind megabytes of stream: ask again, urgently; the later copy is dropped.
    if (!this.#urgentInflight.has(b)) {
      this.stats.demandMisses++;
      this.#fetchBlocks(b, 1, CLASS_URGENT);
      this.onDemandMiss(b);
    }
    return d.promise;
  }

  #fetchBlocks(first: number, count: number, cls: BlockClass): void {
    const marks = cls === CLASS_URGENT ? this.#urgentInflight : this.#bulkInflight;
    for (let b = first; b < first + count; b++) marks.add(b);
    const offset = first * this.blockSize;
    const length = Math.min(this.size, (first + count) * this.blockSize) - offset;
    const sink: FetchSink = {
      onData: (off, data) => {
        this.#checkWholeBlocks(off, data.length);
        this.#storeFetched(off, data, cls);
      },
      onZero: (off, len) => {
        this.#checkWholeBlocks(off, len);
        for (let at = off; at < off + len; at += this.blockSize) {
          const b = Math.floor(at / this.blockSize);
          if (this.#bitmap.has(b)) {
            this.stats.lateFetchesDropped++;
            continue;
          }
          if (this.#storeZeroBlock(b)) this.stats.zeroBytesSkipped += this.#blockLength(b);
        }
      },
      onDone: () => {
        for (let b = first; b < first + count; b++) marks.delete(b);
      },
      onError: (err) => {
        for (let b = first; b < first + count; b++) {
          marks.delete(b);
          if (!this.#bitmap.has(b) && !this.isInflight(b)) {
            this.#waiters.get(b)?.reject(err);
            this.#waiters.delete(b);
          }
        }
        this.#log.error({ err, first, count }, 'block fetch failed');
      },
    };
    this.#fetcher.request(offset, length, cls, sink);
  }

  /**
   * Data from S: write the blocks still missing (in runs), skip those the guest or an earlier copy filled.
   * While the disk fails the data is dropped: its blocks stay missing and are fetched again once it recovers.
   */
  #storeFetched(offset: number, data: Buffer, cls: BlockClass): void {
    if (this.#mode === 'pass-through' || this.#fault.active) return;
    const first = offset / this.blockSize;
    const count = Math.ceil(data.length / this.blockSize);
    let runStart = -1;
    const flush = (end: number) => {
      if (runStart < 0 || this.#fault.active) return;
      const from = (runStart - first) * this.blockSize;
      const to = Math.min(data.length, (end - first) * this.blockSize);
      // Marked present only once the write returned (DESIGN.md §4): a failed run leaves every block of it missing.
      if (!this.#writeImage(data.subarray(from, to), runStart * this.blockSize)) return;
      for (let b = runStart; b < end; b++) {
        setBit(this.#written, b);
        setBit(this.#pristine, b);
        if (this.#finalCheck === 'digest') {
          const at = (b - first) * this.blockSize;
          this.#setDigest(b, crc32(data.subarray(at, at + this.#blockLength(b))));
        }
        this.#markPresent(b);
      }
      runStart = -1;
    };
    for (let b = first; b < first + count; b++) {
      if (this.#bitmap.has(b)) {
        flush(b);
        this.stats.lateFetchesDropped++;
      } else if (runStart < 0) {
        runStart = b;
      }
    }
    flush(first + count);
    if (cls === CLASS_URGENT) this.stats.bytesFetchedDemand += data.length;
    else this.stats.bytesFetchedBulk += data.length;
  }

  /** Make b present as zeroes; false when the disk refused the write (b stays missing). */
  #storeZeroBlock(b: number): boolean {
    if (this.#mode === 'pass-through') return false;
    // A block never written in an image we created is a hole already; after a restart it may hold a torn
    // fetch, and a block taken back by the final check holds whatever was wrong with it.
    if (!this.#fresh || getBit(this.#written, b)) {
      if (this.#fault.active || !this.#writeImage(Buffer.alloc(this.#blockLength(b)), b * this.blockSize)) return false;
    }
    setBit(this.#pristine, b);
    const length = this.#blockLength(b);
    this.#setDigest(b, length === this.blockSize ? this.#zeroBlockCrc : crc32(Buffer.alloc(length)));
    this.#markPresent(b);
    this.#setZeroKnown(b);
    return true;
  }

  /** Write fetched bytes into the image; a failing disk turns the local fault on and returns false. */
  #writeImage(data: Buffer, position: number): boolean {
    try {
      this.#io.write(this.#fd, data, position);
    } catch (e) {
      // Part of it may have landed: those blocks are no longer holes that read as zeroes.
      for (let b = Math.floor(position / this.blockSize); b * this.blockSize < position + data.length; b++) setBit(this.#written, b);
      this.#diskFailed(e);
      return false;
    }
    this.#fault.succeeded();
    return true;
  }

  /**
   * A write or sync of the image failed. A system error (ENOSPC, EIO, ...) is a local fault: fetching pauses
   * and waiting readers go around the store; anything else is a bug and is thrown on.
   */
  #diskFailed(e: unknown): void {
    if (!this.#fault.fail(e)) throw e;
    this.failWaiters(this.#fault.error);
  }

  /**
   * The gate's retry: can the disk take writes again? Zeroes into missing blocks (preferably holes, which need
   * new space), then a sync. Harmless: a missing block's content is not used. Then the commit that failed.
   */
  async #probeDisk(): Promise<void> {
    let b = this.#bitmap.nextMissing(0);
    for (let c = b; this.#fresh && c >= 0; c = this.#bitmap.nextMissing(c + 1)) {
      if (!getBit(this.#written, c)) {
        b = c;
        break;
      }
    }
    if (b >= 0) {
      // About what a refill of the stream writes: a disk with room for one block only is still full to us.
      const max = Math.max(1, Math.floor(PROBE_BYTES / this.blockSize));
      let n = 1;
      while (n < max && b + n < this.blockCount && !this.#bitmap.has(b + n) && !(this.#fresh && getBit(this.#written, b + n))) n++;
      const offset = b * this.blockSize;
      this.#io.write(this.#fd, Buffer.alloc(Math.min(this.size, offset + n * this.blockSize) - offset), offset);
    }
    await this.#io.sync(this.#fd);
    if (this.#pendingDurable.length > 0) await this.#commit();
  }

  #markPresent(b: number): void {
    this.#bitmap.markPresent(b);
    this.#pendingDurable.push(b);
    const d = this.#waiters.get(b);
    if (d) {
      this.#waiters.delete(b);
      d.resolve();
    }
    if (this.#commitTimer === null) {
      this.#commitTimer = setTimeout(() => {
        this.#commitTimer = null;
        this.#commitInBackground();
      }, COMMIT_INTERVAL_MS);
    }
  }

  /** A commit nobody waits for: a failing disk has been reported by the fault gate already. */
  #commitInBackground(): void {
    void this.#commit().catch((e) => {
      if (!this.#fault.active) this.#log.error({ err: e }, 'bitmap commit failed');
    });
  }

  /** Make every write so far durable: image fdatasync, then the bits of newly present blocks, then bitmap fdatasync. */
  #commit(): Promise<void> {
    const run = async () => {
      const batch = this.#pendingDurable;
      this.#pendingDurable = [];
      try {
        await this.#io.sync(this.#fd);
      } catch (e) {
        this.#syncFailed(batch);
        this.#diskFailed(e);
        throw e;
      }
      try {
        await this.#bitmap.commit(batch);
      } catch (e) {
        this.#pendingDurable = batch.concat(this.#pendingDurable);
        this.#diskFailed(e);
        throw e;
      }
      this.stats.commits++;
      this.#checkComplete();
    };
    this.#commitChain = this.#commitChain.then(run, run);
    return this.#commitChain;
  }

  /**
   * The image's sync failed: the kernel may have dropped what it could not write back, so a block whose bytes
   * we wrote and that S can give again is missing again (fetched anew). A guest-written block cannot be fetched:
   * it stays present and waits for the next commit (the guest's FLUSH got the error, as from its own disk);
   * so does a block that is a hole of our fresh image, whose content never depended on a write.
   */
  #syncFailed(batch: number[]): void {
    const keep: number[] = [];
    const again: number[] = [];
    for (const b of batch) (getBit(this.#pristine, b) && getBit(this.#written, b) ? again : keep).push(b);
    for (const b of again) {
      clearBit(this.#pristine, b);
      clearBit(this.#digestKnown, b);
      this.#clearZeroKnown(b);
    }
    this.#bitmap.forget(again);
    this.#pendingDurable = keep.concat(this.#pendingDurable);
  }

  #checkComplete(): void {
    if (this.#mode !== 'copy-on-read' || this.#complete.settled) return;
    if (this.#bitmap.complete && this.#bitmap.durableCount === this.blockCount) this.#complete.resolve();
    else if (this.#bitmap.complete && this.#pendingDurable.length > 0) this.#commitInBackground();
  }

  /** Pass-through (before Finish): read from S, keep nothing; S's guest is still changing the disk. */
  #readThrough(offset: number, length: number): Promise<Buffer> {
    const out = Buffer.alloc(length);
    return new Promise((resolve, reject) => {
      this.#fetcher.request(offset, length, CLASS_URGENT, {
        onData: (off, data) => data.copy(out, off - offset),
        onZero: (off, len) => out.fill(0, off - offset, off - offset + len),
        onDone: () => resolve(out),
        onError: reject,
      });
    });
  }

  /** While the disk fails: present blocks from the image, missing ones read through from S and not kept. */
  async #readAround(offset: number, length: number): Promise<Buffer> {
    const out = this.#readLocal(offset, length);
    const end = offset + length;
    const last = Math.floor((end - 1) / this.blockSize);
    const parts: Promise<void>[] = [];
    for (let b = Math.floor(offset / this.blockSize); b <= last; b++) {
      if (this.#bitmap.has(b)) continue;
      let e = b;
      while (e < last && !this.#bitmap.has(e + 1)) e++;
      const from = Math.max(offset, b * this.blockSize);
      const to = Math.min(end, (e + 1) * this.blockSize);
      parts.push(this.#readThrough(from, to - from).then((buf) => void buf.copy(out, from - offset)));
      b = e;
    }
    await Promise.all(parts);
    return out;
  }

  #readLocal(offset: number, length: number): Buffer {
    return readFully(this.#fd, offset, length);
  }

  /** S's reply parts must cover whole blocks (the image's short last block counts as whole). */
  #setDigest(b: number, crc: number): void {
    this.#digests[b] = crc;
    setBit(this.#digestKnown, b);
  }

  #checkWholeBlocks(offset: number, length: number): void {
    const end = offset + length;
    if (offset % this.blockSize !== 0 || (end % this.blockSize !== 0 && end !== this.size)) {
      throw new ProtocolError('PC_ERR_MALFORMED', `reply part ${offset}+${length} is not whole blocks of ${this.blockSize}`);
    }
  }

  #covers(b: number, offset: number, length: number): boolean {
    const start = b * this.blockSize;
    return offset <= start && offset + length >= start + this.#blockLength(b);
  }

  #blockLength(b: number): number {
    return Math.min(this.blockSize, this.size - b * this.blockSize);
  }

  #checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new BackendError('PC_ERR_OUT_OF_RANGE', `${offset}+${length} outside 0..${this.size}`);
    }
  }

  #isZeroKnown(b: number): boolean {
    return getBit(this.#zeroKnown, b);
  }
  #setZeroKnown(b: number): void {
    setBit(this.#zeroKnown, b);
  }
  #clearZeroKnown(b: number): void {
    clearBit(this.#zeroKnown, b);
  }
}

function getBit(bits: Uint8Array, b: number): boolean {
  return (bits[b >> 3]! & (1 << (b & 7))) !== 0;
}
function setBit(bits: Uint8Array, b: number): void {
  bits[b >> 3]! |= 1 << (b & 7);
}
function clearBit(bits: Uint8Array, b: number): void {
  bits[b >> 3]! &= ~(1 << (b & 7));
}
