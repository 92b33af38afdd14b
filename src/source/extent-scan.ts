// Finds the zero runs of a file image by reading it (Node has no SEEK_HOLE; a written zero run travels no better
// than a hole). It runs after cut-over ahead of D's stream and hands runs over as it goes, so D skips them.
import type { Extent } from '../common/block-device.js';
import { isAllZero } from '../common/zero.js';

/** Granularity of the zero map: runs are whole multiples of this (the tail may be shorter). */
export const ZERO_SCAN_GRAIN = 64 * 1024;
const SCAN_CHUNK = 1024 * 1024;
/** Hand runs over at least this often (bytes scanned). */
const REPORT_EVERY = 64 * 1024 * 1024;

/**
 * Scan [0, size) and call onZeroRuns with the zero runs found so far, in order, every REPORT_EVERY bytes and at
 * the end. Yields the event loop after each chunk: S serves demand reads meanwhile. One reused buffer.
 */
export async function scanZeroRuns(
  read: (buf: Buffer, offset: number, length: number) => void,
  size: number,
  onZeroRuns: (runs: Extent[]) => void,
): Promise<void> {
  const buf = Buffer.allocUnsafe(SCAN_CHUNK);
  let pending: Extent[] = [];
  let run: Extent | null = null;
  let sinceReport = 0;
  for (let off = 0; off < size; off += SCAN_CHUNK) {
    const len = Math.min(SCAN_CHUNK, size - off);
    read(buf, off, len);
    for (let at = 0; at < len; at += ZERO_SCAN_GRAIN) {
      const n = Math.min(ZERO_SCAN_GRAIN, len - at);
      if (isAllZero(buf.subarray(at, at + n))) {
        if (run && run.offset + run.length === off + at) run.length += n;
        else {
          run = { offset: off + at, length: n, zero: true };
          pending.push(run);
        }
      } else {
        run = null;
      }
    }
    sinceReport += len;
    if (sinceReport >= REPORT_EVERY && pending.length > 0) {
      // The last run may still grow: keep it back unless it ended.
      const keep = run ? pending.pop()! : null;
      if (pending.length > 0) onZeroRuns(pending);
      pending = keep ? [keep] : [];
      sinceReport = 0;
    }
    await new Promise<void>((r) => setImmediate(r));
  }
  if (pending.length > 0) onZeroRuns(pending);
}
