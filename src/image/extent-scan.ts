// Finds the zero runs of a file image (a written zero run travels no better than a hole). With an extent map the
// holes are reported at once and never read; the rest (or, without a map, the whole image) is read after cut-over
// just ahead of D's stream, runs handed over as found, so D skips them; the data read on the way can be handed to
// the block server, so S reads each byte of the image once.
import type { Extent } from '../common/block-device.js';
import { isAllZero } from '../common/zero.js';
import { MAP_RUNS_PER_REPORT, SCAN_CHUNK, ZERO_RUN_REPORT_BYTES, ZERO_SCAN_GRAIN } from './constants.js';
import type { ZeroGrains } from './zero-grains.js';

export interface ScanHooks {
  /** The buffer to read the next step into (SCAN_CHUNK bytes). */
  buffer(): Buffer;
  /** The step at `offset` is read; `hasData` when some grain of it is not zero. The buffer is the hook's now. */
  read(offset: number, data: Buffer, hasData: boolean): void;
  /** What the block server already found the step at `offset` to be, if it read it first: no need to read it. */
  known(offset: number): 'zero' | 'data' | undefined;
  /** Resolves when the scan may read on (it keeps just ahead of the stream, not the whole image ahead). */
  pace(): Promise<void>;
  /** The extent map says the whole step at `offset` reads as zeroes: reported, never read by the scan. */
  mapped?(offset: number): void;
}

export interface ScanCounts {
  /** Bytes the scan read from the image. */
  readBytes: number;
  /** Bytes it did not read because the map said they are zero. */
  unreadBytes: number;
}

const nextTurn = () => new Promise<void>((r) => setImmediate(r));

/**
 * Scan [0, size) and call onZeroRuns with the zero runs found so far: first, with a map, all of its zero grains at
 * once; then, in order, those found by reading, every ZERO_RUN_REPORT_BYTES bytes and at the end. Yields the event
 * loop after each step: S serves demand reads meanwhile. Without hooks it reads into one reused buffer as fast as it
 * can. A run found by reading stops where a mapped zero run starts (that one was reported already).
 */
export async function scanZeroRuns(
  read: (buf: Buffer, offset: number, length: number) => Promise<unknown> | void,
  size: number,
  onZeroRuns: (runs: Extent[]) => void,
  hooks?: ScanHooks,
  map?: ZeroGrains,
): Promise<ScanCounts> {
  const counts: ScanCounts = { readBytes: 0, unreadBytes: 0 };
  if (map && (map.grain !== ZERO_SCAN_GRAIN || map.size !== size)) throw new RangeError(`a zero map of ${map.size} bytes in grains of ${map.grain} for a scan of ${size} in ${ZERO_SCAN_GRAIN}`);
  if (map) await reportMapped(map, onZeroRuns, hooks);
  const scratch = hooks ? null : Buffer.allocUnsafe(SCAN_CHUNK);
  let pending: Extent[] = [];
  let run: Extent | null = null;
  let sinceReport = 0;
  for (let off = 0; off < size; off += SCAN_CHUNK) {
    const len = Math.min(SCAN_CHUNK, size - off);
    if (map?.allZero(off, len)) {
      counts.unreadBytes += len;
      run = null;
      continue;
    }
    if (hooks) await hooks.pace();
    else await nextTurn();
    const known = hooks?.known(off);
    const buf = known ? null : (scratch ?? hooks!.buffer());
    if (buf) {
      await read(buf, off, len);
      counts.readBytes += len;
    }
    let hasData = false;
    for (let at = 0; at < len; at += ZERO_SCAN_GRAIN) {
      const n = Math.min(ZERO_SCAN_GRAIN, len - at);
      if (map?.isZero((off + at) / ZERO_SCAN_GRAIN)) {
        run = null;
        continue;
      }
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
  return counts;
}

/** The map's zero runs, in batches (a turn of the event loop between them); its all-zero steps told to the hooks. */
async function reportMapped(map: ZeroGrains, onZeroRuns: (runs: Extent[]) => void, hooks?: ScanHooks): Promise<void> {
  let batch: Extent[] = [];
  for (const r of map.runs()) {
    batch.push(r);
    if (batch.length >= MAP_RUNS_PER_REPORT) {
      onZeroRuns(batch);
      batch = [];
      await nextTurn();
    }
  }
  if (batch.length > 0) onZeroRuns(batch);
  if (!hooks?.mapped) return;
  for (let off = 0; off < map.size; off += SCAN_CHUNK) if (map.allZero(off, Math.min(SCAN_CHUNK, map.size - off))) hooks.mapped(off);
}
