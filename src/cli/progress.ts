// A one-line progress bar on a terminal (stderr): blocks present, demand vs bulk rate, ETA, bytes only on S.
// The ETA comes from D's path model when it has one.
import { PROGRESS_BAR_WIDTH } from './constants.js';
import { formatBytes } from './sizes.js';

export interface ProgressSample {
  blocksPresent: number;
  blocksTotal: number;
  bytesFetchedDemand: number;
  bytesFetchedBulk: number;
  bytesOnlyOnSource: number;
  link: string;
  phase: string;
  /** D's model of the path to S (PathReport), while the link is up. */
  path?: { bottleneckBytesPerSec: number | null; minRttMs: number | null };
}

/**
 * Seconds until the bytes only on S are here: at the bottleneck's rate once D has measured it (the stream is paced
 * to it, and a rate averaged over the last interval says little on a long link), else at the rate just seen.
 */
export function etaSeconds(s: ProgressSample, recentRate: number): number | null {
  const bottleneck = s.path?.bottleneckBytesPerSec ?? null;
  if (bottleneck !== null && bottleneck > 0) return s.bytesOnlyOnSource / bottleneck + (s.path?.minRttMs ?? 0) / 1000;
  return recentRate > 0 ? s.bytesOnlyOnSource / recentRate : null;
}

export class ProgressBar {
  readonly #enabled: boolean;
  #last: { t: number; demand: number; bulk: number } | null = null;
  #lastLine = 0;

  constructor(stream: NodeJS.WriteStream = process.stderr) {
    this.#enabled = stream.isTTY === true && process.env.CI !== 'true';
    this.#stream = stream;
  }
  readonly #stream: NodeJS.WriteStream;

  update(s: ProgressSample): void {
    if (!this.#enabled) return;
    const now = performance.now();
    let demandRate = 0;
    let bulkRate = 0;
    if (this.#last) {
      const dt = (now - this.#last.t) / 1000;
      if (dt > 0) {
        demandRate = (s.bytesFetchedDemand - this.#last.demand) / dt;
        bulkRate = (s.bytesFetchedBulk - this.#last.bulk) / dt;
      }
    }
    this.#last = { t: now, demand: s.bytesFetchedDemand, bulk: s.bytesFetchedBulk };
    const frac = s.blocksTotal > 0 ? s.blocksPresent / s.blocksTotal : 0;
    const width = PROGRESS_BAR_WIDTH;
    const filled = Math.round(frac * width);
    const rate = demandRate + bulkRate;
    const etaS = etaSeconds(s, rate);
    const eta = etaS === null ? '--' : `${Math.ceil(etaS)}s`;
    const line =
      `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(frac * 100).toFixed(1)}% ` +
      `${s.phase} link=${s.link} demand ${formatBytes(demandRate)}/s bulk ${formatBytes(bulkRate)}/s ` +
      `only-on-S ${formatBytes(s.bytesOnlyOnSource)} ETA ${eta}`;
    this.#stream.write(`\r${line.padEnd(this.#lastLine)}`);
    this.#lastLine = line.length;
  }

  done(): void {
    if (this.#enabled && this.#lastLine > 0) this.#stream.write('\n');
  }
}
