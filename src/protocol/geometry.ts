// The image geometry both sides must agree on in BEGIN: one rule for the block size, checked by S's command line
// (an operator mistake) and by D on the wire (a malformed BEGIN).
import { MAX_BLOCK_SIZE, MIN_BLOCK_SIZE } from './constants.js';

/** A block size the migration takes: a power of two from MIN_BLOCK_SIZE to MAX_BLOCK_SIZE. */
export function isValidBlockSize(blockSize: number): boolean {
  return Number.isInteger(blockSize) && blockSize >= MIN_BLOCK_SIZE && blockSize <= MAX_BLOCK_SIZE && (blockSize & (blockSize - 1)) === 0;
}
