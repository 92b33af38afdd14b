// Finds the zero runs of an image by reading it: Node has no SEEK_HOLE, and a zero run that was written
// travels no better than a hole, so both are found the same way.
import type { Extent } from '../common/block-device.js';
import { isAllZero } from '../common/zero.js';

/** Granularity of the zero map: runs are whole multiples of this (the tail may be shorter). */
export const ZERO_SCAN_GRAIN = 64 * 1024;
const SCAN_CHUNK = 1024 * 1024;
/** Map [0, size) into alternating data and zero extents, merged, in order. Yields the event loop between chunks. */
export async function scanZeroExtents(read: (offset: number, length: number) => Buffer, size: number): Promise<Extent[]> {
  const out: Extent[] = [];
  const push = (offset: number, length: number, zero: boolean) => {
    const last = out[out.length - 1];
    if (last && last.zero === zero && last.offset + last.length === offset) last.length += length;
    else out.push({ offset, length, zero });
  };
  for (let off = 0; off < size; off += SCAN_CHUNK) {
    const buf = read(off, Math.min(SCAN_CHUNK, size - off));
    for (let at = 0; at < buf.length; at += ZERO_SCAN_GRAIN) {
      const part = buf.subarray(at, Math.min(buf.length, at + ZERO_SCAN_GRAIN));
      push(off + at, part.length, isAllZero(part));
    }
    // Yield after every chunk: S is serving demand reads meanwhile, and they must not wait behind the scan.
    await new Promise<void>((r) => setImmediate(r));
  }
  return out;
}
