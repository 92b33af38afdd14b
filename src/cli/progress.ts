// A one-line progress bar on a terminal (stderr): blocks present, demand vs bulk rate, ETA, bytes only on S.
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
    const eta = rate > 0 ? `${Math.ceil(s.bytesOnlyOnSource / rate)}s` : '--';
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
