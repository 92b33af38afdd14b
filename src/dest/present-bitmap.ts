// D's record of which blocks it holds: in memory for every block whose data is in the image, and on disk
// only for blocks whose data was made durable first (data → fsync → bit → bitmap fsync, DESIGN.md §4).
// A crash can lose bits (the block is fetched again), never set one wrongly.
import { closeSync, constants, fdatasyncSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { StateError, UsageError } from '../common/errors.js';
import { imageWriteIo, type ImageWriteIo } from '../common/file-io.js';
import { createPrivateFile } from '../common/state-file.js';
import {
  BITMAP_BLOCK_COUNT_AT,
  BITMAP_BLOCK_SIZE_AT,
  BITMAP_HEADER_BYTES as HEADER_BYTES,
  BITMAP_MAGIC as MAGIC,
  BITMAP_VERSION as VERSION,
  BITMAP_VERSION_AT,
} from './store-constants.js';
import { bitBytes, clearBit, clearTail, countSet, hasBit, nextClear, setBit } from '../common/bits.js';


export class PresentBitmap {
  readonly blockCount: number;
  readonly blockSize: number;
  /** Bit per block: its data is in the image (readable); may not be durable yet. */
  readonly #present: Uint8Array;
  /** Bit per block as last written to the bitmap file. */
  #durable: Uint8Array;
  #presentCount = 0;
  #durableCount = 0;
  #fd: number;
  /** The writes and syncs of commit() and clear() (tests inject a disk that fails or loses unsynced writes). */
  readonly #io: ImageWriteIo;

  private constructor(fd: number, blockSize: number, blockCount: number, io: ImageWriteIo, bits?: Uint8Array) {
    this.#fd = fd;
    this.#io = io;
    this.blockSize = blockSize;
    this.blockCount = blockCount;
    const bytes = bitBytes(blockCount);
    this.#present = new Uint8Array(bytes);
    this.#durable = new Uint8Array(bytes);
    if (bits) {
      this.#durable.set(bits);
      this.#present.set(bits);
      this.#presentCount = countSet(this.#present);
      this.#durableCount = this.#presentCount;
    }
  }

  /** A new, empty bitmap file (made durable before returning); a stale file or planted symlink there is replaced, not followed. */
  static create(path: string, blockSize: number, blockCount: number, io: ImageWriteIo = imageWriteIo): PresentBitmap {
    const fd = createPrivateFile(path);
    const bm = new PresentBitmap(fd, blockSize, blockCount, io);
    const header = Buffer.alloc(HEADER_BYTES);
    header.write(MAGIC, 0, 'latin1');
    header.writeUInt32BE(VERSION, BITMAP_VERSION_AT);
    header.writeUInt32BE(blockSize, BITMAP_BLOCK_SIZE_AT);
    header.writeBigUInt64BE(BigInt(blockCount), BITMAP_BLOCK_COUNT_AT);
    // Written and synced here, not through `io`: the file is durable before anything can rely on it.
    writeSync(fd, header, 0, HEADER_BYTES, 0);
    writeSync(fd, bm.#durable, 0, bm.#durable.length, HEADER_BYTES);
    fdatasyncSync(fd);
    return bm;
  }

  /** Reload after a restart; every bit in the file stands for durable data. */
  static load(path: string, blockSize: number, blockCount: number, io: ImageWriteIo = imageWriteIo): PresentBitmap {
    const fd = openSync(path, constants.O_RDWR | constants.O_NOFOLLOW);
    const bytes = bitBytes(blockCount);
    if (fstatSync(fd).size < HEADER_BYTES + bytes) {
      closeSync(fd);
      throw new UsageError('PC_ERR_STATE_DIR', `bitmap ${path} is truncated`);
    }
    const header = Buffer.alloc(HEADER_BYTES);
    readSync(fd, header, 0, HEADER_BYTES, 0);
    if (header.toString('latin1', 0, MAGIC.length) !== MAGIC || header.readUInt32BE(BITMAP_VERSION_AT) !== VERSION) {
      closeSync(fd);
      throw new UsageError('PC_ERR_STATE_DIR', `bitmap ${path} has a bad header`);
    }
    if (header.readUInt32BE(BITMAP_BLOCK_SIZE_AT) !== blockSize || Number(header.readBigUInt64BE(BITMAP_BLOCK_COUNT_AT)) !== blockCount) {
      closeSync(fd);
      throw new UsageError('PC_ERR_STATE_DIR', `bitmap ${path} is for another geometry`);
    }
    const bits = Buffer.alloc(bytes);
    readSync(fd, bits, 0, bytes, HEADER_BYTES);
    // Bits past the last block must be clear.
    clearTail(bits, blockCount);
    return new PresentBitmap(fd, blockSize, blockCount, io, bits);
  }

  has(block: number): boolean {
    return hasBit(this.#present, block);
  }

  isDurable(block: number): boolean {
    return hasBit(this.#durable, block);
  }

  /** Mark a block's data as written to the image (page cache); durability comes with commit(). */
  markPresent(block: number): void {
    if (setBit(this.#present, block)) this.#presentCount++;
  }

  get presentCount(): number {
    return this.#presentCount;
  }
  get durableCount(): number {
    return this.#durableCount;
  }
  get complete(): boolean {
    return this.#presentCount === this.blockCount;
  }

  /**
   * Persist bits for `blocks`, whose data the caller has already made durable (image fdatasync).
   * One write of the whole bit array (small: 2 KiB per GiB at 64 KiB blocks) and one fdatasync, off the
   * event loop. The caller runs one commit at a time.
   */
  async commit(blocks: readonly number[]): Promise<void> {
    if (blocks.length === 0) return;
    // The bits count as durable only once the file holds them: after a failed write a block is not durable, so
    // forget() can take it back and a later commit never writes a bit this one could not.
    const next = this.#durable.slice();
    let added = 0;
    for (const b of blocks) {
      if (!this.has(b)) throw new StateError('PC_ERR_STATE', `block ${b} committed but not present`);
      if (setBit(next, b)) added++;
    }
    await this.#persist(next);
    this.#durable = next;
    this.#durableCount += added;
  }

  /**
   * Take blocks back to missing (the final check found them wrong). Bits go to disk first: a crash after
   * this never leaves a bit for data we no longer trust.
   */
  async clear(blocks: readonly number[]): Promise<void> {
    if (blocks.length === 0) return;
    for (const b of blocks) {
      if (clearBit(this.#durable, b)) this.#durableCount--;
      if (clearBit(this.#present, b)) this.#presentCount--;
    }
    await this.#persist();
  }

  /** Take back blocks whose data never became durable (the image's sync failed): in memory only, as their bits never reached the file. */
  forget(blocks: readonly number[]): void {
    for (const b of blocks) {
      if (!this.isDurable(b) && clearBit(this.#present, b)) this.#presentCount--;
    }
  }

  /** First block at or after `from` that is not present, or -1. Skips whole bytes of present blocks. */
  nextMissing(from: number): number {
    return nextClear(this.#present, from, this.blockCount);
  }

  close(): void {
    if (this.#fd >= 0) closeSync(this.#fd);
    this.#fd = -1;
  }

  /** The whole bit array to the file, then fdatasync. */
  async #persist(bits: Uint8Array = this.#durable): Promise<void> {
    this.#io.write(this.#fd, Buffer.from(bits.buffer, bits.byteOffset, bits.length), HEADER_BYTES);
    await this.#io.sync(this.#fd);
  }
}
