// D's side of the final check: the crc32 of every block whose content is S's and untouched since (the table's
// pristine blocks). In digest mode the crc is taken as the block is written, so no extra I/O; in readback mode
// (and for a block whose crc was not taken) the block is read back from the image, in runs, yielding between them.
import { crc32 } from '../common/crc32.js';
import { asParts, type Bytes } from '../protocol/byte-parts.js';
import type { BlockGeometry } from './block-geometry.js';
import type { BlockTable } from './block-table.js';
import type { ImageHandle } from './image-file.js';
import { DIGEST_READ_BYTES } from './store-constants.js';

/**
 * How the final check learns what D holds of S's bytes. `digest`: the crc32 of each block as it was written
 * (no extra I/O; a block that arrived before a restart is read back). `readback`: every such block is read back
 * from the image once all are durable, so damage done after the write (a stray writer, a bug) is found too.
 */
export type FinalCheckMode = 'digest' | 'readback';
export const FINAL_CHECK_MODES: readonly FinalCheckMode[] = ['digest', 'readback'];

/** The final check's digests: block numbers in order, and the crc32 of each. */
export interface BlockDigests {
  blocks: Uint32Array;
  crcs: Uint32Array;
}

export class DigestKeeper {
  readonly #geometry: BlockGeometry;
  readonly #table: BlockTable;
  readonly #image: ImageHandle;
  readonly #mode: FinalCheckMode;
  /** crc32 of a whole block of zeroes. */
  readonly #zeroBlockCrc: number;
  /** One reused buffer for the runs the check reads: fresh ones would only feed the garbage collector (and RSS). */
  #checkBuf: Buffer = Buffer.alloc(0);

  constructor(geometry: BlockGeometry, table: BlockTable, image: ImageHandle, mode: FinalCheckMode = 'digest') {
    this.#geometry = geometry;
    this.#table = table;
    this.#image = image;
    this.#mode = mode;
    this.#zeroBlockCrc = crc32(Buffer.alloc(geometry.blockSize));
  }

  /** The crc of S's bytes of block b (from the front of `data`, which may be in parts) as they are written: in digest mode only (readback reads them later). */
  ofData(b: number, data: Bytes): number | undefined {
    return this.#mode === 'digest' ? asParts(data).subarray(0, this.#geometry.blockLength(b)).crc32() : undefined;
  }

  /** The crc of block b as zeroes, in digest mode (readback reads zero blocks back too: damage there shows). */
  ofZero(b: number): number | undefined {
    if (this.#mode !== 'digest') return undefined;
    const length = this.#geometry.blockLength(b);
    return length === this.#geometry.blockSize ? this.#zeroBlockCrc : crc32(Buffer.alloc(length));
  }

  /** The crc32 of every pristine block, ascending: the digest kept as it was written, else read back in runs. */
  async pristineDigests(): Promise<BlockDigests> {
    const table = this.#table;
    const { blockCount, blockSize } = this.#geometry;
    // Typed arrays, not a pair per block: 16 GiB of 64 KiB blocks would be 262 144 small arrays on the heap.
    const total = table.pristineCount();
    const out: BlockDigests = { blocks: new Uint32Array(total), crcs: new Uint32Array(total) };
    let n = 0;
    const runBlocks = Math.max(1, Math.floor(DIGEST_READ_BYTES / blockSize));
    for (let first = 0; first < blockCount; first += runBlocks) {
      const count = Math.min(runBlocks, blockCount - first);
      let needRead = false;
      for (let b = first; b < first + count && !needRead; b++) needRead = table.isPristine(b) && table.digestOf(b) === undefined;
      const buf = needRead ? this.#readRun(first * blockSize, this.#geometry.runLength(first, count)) : null;
      for (let b = first; b < first + count; b++) {
        if (!table.isPristine(b)) continue;
        const at = (b - first) * blockSize;
        out.blocks[n] = b;
        out.crcs[n++] = table.digestOf(b) ?? crc32(buf!.subarray(at, at + this.#geometry.blockLength(b)));
      }
      if (needRead) await new Promise<void>((r) => setImmediate(r));
    }
    return out;
  }

  #readRun(offset: number, length: number): Buffer {
    if (this.#checkBuf.length < length) this.#checkBuf = Buffer.allocUnsafe(Math.max(length, DIGEST_READ_BYTES));
    return this.#image.readInto(this.#checkBuf, offset, length).subarray(0, length);
  }
}
