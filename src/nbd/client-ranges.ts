// How the NBD client cuts a caller's range into requests the server accepts: pieces of at most a step, ranges
// widened to the server's block boundaries, and base:allocation answers stitched into exact extents. Pure.
import { NbdError } from '../common/errors.js';
import type { BlockStatusDescriptor } from './codec-types.js';
import type { BlockStatusExtent } from './client-types.js';
import * as C from './constants.js';

/** Largest length a payload-less request carries, kept aligned for any block size ≤ 64 KiB. */
export const MAX_U32_ALIGNED = 2 ** 32 - C.NBD_MAX_MIN_BLOCK;

/** [offset, +length) as consecutive pieces of at most `step` bytes. */
export function* pieces(offset: number, length: number, step: number): Generator<{ offset: number; length: number }> {
  for (let at = 0; at < length; at += step) yield { offset: offset + at, length: Math.min(step, length - at) };
}

/** The smallest range on `block` boundaries covering [offset, +length), never past `size` (size % block == 0). */
export function alignedCover(offset: number, length: number, block: number, size: number): { offset: number; length: number } {
  const start = offset - (offset % block);
  const end = Math.min(Math.ceil((offset + length) / block) * block, size);
  return { offset: start, length: end - start };
}

/**
 * base:allocation for exactly [offset, +length): asks on block boundaries, re-asks after short answers, trims
 * overrun and merges neighbours with the same flags. `ask` sends one BLOCK_STATUS request.
 */
export async function collectBlockStatus(
  offset: number,
  length: number,
  geometry: { block: number; size: number },
  ask: (offset: number, length: number) => Promise<BlockStatusDescriptor[]>,
): Promise<BlockStatusExtent[]> {
  const end = offset + length;
  const out: BlockStatusExtent[] = [];
  let pos = offset;
  const m = geometry.block;
  while (pos < end) {
    // Ask on block boundaries (size % m == 0), then drop what lies before pos.
    const askFrom = pos - (pos % m);
    const askEnd = Math.min(Math.ceil(end / m) * m, geometry.size, askFrom + MAX_U32_ALIGNED);
    const descriptors = await ask(askFrom, askEnd - askFrom);
    const before = pos;
    let cursor = askFrom;
    for (const d of descriptors) {
      if (pos >= end) break;
      const dEnd = cursor + d.length;
      cursor = dEnd;
      if (dEnd <= pos) continue;
      const len = Math.min(dEnd, end) - pos;
      const last = out[out.length - 1];
      if (last && last.flags === d.flags && last.offset + last.length === pos) last.length += len;
      else out.push({ offset: pos, length: len, flags: d.flags });
      pos += len;
    }
    if (pos === before) throw new NbdError('NBD_ERR_MALFORMED', 'BLOCK_STATUS reply made no progress');
  }
  return out;
}
