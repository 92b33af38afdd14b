// The image cut into blocks: which blocks a byte range touches or covers, the short last block, and the checks
// on ranges before anything is read or written: a guest's range must lie inside the image, S's reply parts and
// zero runs must be whole blocks inside it (the wire's rules for D's side).
import type { Extent } from '../common/block-device.js';
import { BackendError, ProtocolError } from '../common/errors.js';
import type { ZeroRun } from '../protocol/messages.js';

export class BlockGeometry {
  readonly size: number;
  readonly blockSize: number;
  readonly blockCount: number;

  constructor(size: number, blockSize: number, blockCount: number) {
    this.size = size;
    this.blockSize = blockSize;
    this.blockCount = blockCount;
  }

  /** Bytes of block b: the image's last block may be short. */
  blockLength(b: number): number {
    return Math.min(this.blockSize, this.size - b * this.blockSize);
  }
  /** Block holding byte `offset`. */
  blockOf(offset: number): number {
    return Math.floor(offset / this.blockSize);
  }
  /** Last block a non-empty range touches. */
  lastBlockOf(offset: number, length: number): number {
    return Math.floor((offset + length - 1) / this.blockSize);
  }
  /** The range covers all of block b (its short end counts as all). */
  covers(b: number, offset: number, length: number): boolean {
    const start = b * this.blockSize;
    return offset <= start && offset + length >= start + this.blockLength(b);
  }
  /** Bytes from block `first` to the end of block `first + count - 1`, clipped to the image. */
  runLength(first: number, count: number): number {
    return Math.min(this.size, (first + count) * this.blockSize) - first * this.blockSize;
  }

  /** The range (clipped to the image) as extents of blocks known to read as zeroes or not, merged. */
  extents(offset: number, length: number, isZero: (b: number) => boolean): Extent[] {
    const out: Extent[] = [];
    const end = Math.min(this.size, offset + length);
    for (let at = offset; at < end; ) {
      const b = this.blockOf(at);
      const next = Math.min(end, (b + 1) * this.blockSize);
      const zero = isZero(b);
      const lastExt = out[out.length - 1];
      if (lastExt && lastExt.zero === zero) lastExt.length += next - at;
      else out.push({ offset: at, length: next - at, zero });
      at = next;
    }
    return out;
  }

  /** A guest's (or the export's) range: whole numbers, inside the image. */
  checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      // A backend error, not the peer's protocol error: the guest asked, and the export answers it with an errno.
      throw new BackendError('PC_ERR_BEYOND_IMAGE', `${offset}+${length} outside 0..${this.size}`);
    }
  }

  /** S's reply parts must cover whole blocks (the image's short last block counts as whole). */
  checkReplyPart(offset: number, length: number): void {
    const end = offset + length;
    if (offset % this.blockSize !== 0 || (end % this.blockSize !== 0 && end !== this.size)) {
      throw new ProtocolError('PC_ERR_MALFORMED', `reply part ${offset}+${length} is not whole blocks of ${this.blockSize}`);
    }
  }

  /** S's zero runs must end inside the image; one bad run refuses the frame. */
  checkZeroRuns(runs: readonly ZeroRun[]): void {
    for (const run of runs) {
      if (run.offset + run.length > this.size) throw new ProtocolError('PC_ERR_OUT_OF_RANGE', `zero run ${run.offset}+${run.length}`);
    }
  }
}
