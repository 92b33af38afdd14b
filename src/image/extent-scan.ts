// Finds the zero runs of a file image by reading it (Node has no SEEK_HOLE; a written zero run travels no better
// than a hole). It runs after cut-over just ahead of D's stream and hands runs over as it goes, so D skips them;
// the data it reads on the way can be handed to the block server, so S reads each byte of the image once.
import type { Extent } from '../common/block-device.js';
import { isAllZero } from '../common/zero.js';
import { SCAN_CHUNK, ZERO_RUN_REPORT_BYTES, ZERO_SCAN_GRAIN } from './constants.js';

export interface ScanHooks {
  /** The buffer to read the next step into (SCAN_CHUNK bytes). */
  buffer(): Buffer;
  /** The step at `offset` is read; `hasData` when some grain of it is not zero. The buffer is the hook's now. */
  read(offset: number, data: Buffer, hasData: boolean): void;
  /** What the block server already found the step at `offset` to be, if it read it first: no need to read it. */
  known(offset: number): 'zero' | 'data' | undefined;
  /** Resolves when the scan may read on (it keeps just ahead of the stream, not the whole image ahead). */
  pace(): Promise<void>;
}

/**
 * Scan [0, size) and call onZeroRuns with the zero runs found so far, in order, every ZERO_RUN_REPORT_BYTES bytes and at
 * the end. Yields the event loop after each step: S serves demand reads meanwhile. Without hooks it reads into one
 * reused buffer as fast as it can.
 */
export async function scanZeroRuns(
  read: (buf: Buffer, offset: number, length: number) => void,
  size: number,
  onZeroRuns: (runs: Extent[]) => void,
  hooks?: ScanHooks,
): Promise<void> {
  const scratch = hooks ? null : Buffer.allocUnsafe(SCAN_CHUNK);
  let pending: Extent[] = [];
  let run: Extent | null = null;
  let sinceReport = 0;
  for (let off = 0; off < size; off += SCAN_CHUNK) {
    if (hooks) await hooks.pace();
    else await new Promise<void>((r) => setImmediate(r));
    const len = Math.min(SCAN_CHUNK, size - off);
    const known = hooks?.known(off);
    const buf = known ? null : (scratch ?? hooks!.buffer());
    if (buf) read(buf, off, len);
    let hasData = false;
    for (let at = 0; at < len; at += ZERO_SCAN_GRAIN) {
      const n = Math.min(ZERO_SCAN_GRAIN, len - at);
      if (buf ? isAllZero(buf.subarray(at, at + n)) : known === 'zero') {
        if (run && run.offset + run.length === off + at) run.length += n;
        else {
          run = { offset: off + at, length: n, zero: true };
          pending.push(run);
        }
      } else {
        hasData = true;
        run = null;
      }
    }
    if (buf) hooks?.read(off, buf.subarray(0, len), hasData);
    sinceReport += len;
    if (sinceReport >= ZERO_RUN_REPORT_BYTES && pending.length > 0) {
      // The last run may still grow: keep it back unless it ended.
      const keep = run ? pending.pop()! : null;
      if (pending.length > 0) onZeroRuns(pending);
      pending = keep ? [keep] : [];
      sinceReport = 0;
    }
  }
  if (pending.length > 0) onZeroRuns(pending);
}
