// After cut-over S holds the only copy of the blocks D lacks: while S is away, say so at a bounded rate
// (log line + event), with how many bytes exist only on S and what the operator can do about it.
import type { EventSink } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import { AWAY_REPORT_MS } from './constants.js';

export interface AwayFigures {
  bytesOnlyOnSource: number;
  /** 'none': no --fallback given; 'armed': it takes over once S has been away long enough; 'active': serving. */
  fallback: 'none' | 'armed' | 'active';
}

export class AwayReporter {
  readonly #log: Logger;
  readonly #events: EventSink;
  readonly #intervalMs: number;
  readonly #figures: () => AwayFigures;
  #timer: NodeJS.Timeout | null = null;
  #since = 0;

  constructor(log: Logger, events: EventSink, figures: () => AwayFigures, intervalMs = AWAY_REPORT_MS) {
    this.#log = log;
    this.#events = events;
    this.#figures = figures;
    this.#intervalMs = intervalMs;
  }

  /** S went away (or is not back after a restart): report every interval until back() or stop(). */
  away(): void {
    if (this.#timer) return;
    this.#since = Date.now();
    this.#timer = setInterval(() => this.#report(), this.#intervalMs);
    this.#timer.unref();
  }

  back(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  #report(): void {
    const { bytesOnlyOnSource, fallback } = this.#figures();
    const awayMs = Date.now() - this.#since;
    const todo =
      fallback === 'active'
        ? 'the fallback is serving them; restarting the source with its --state-dir also resumes'
        : fallback === 'armed'
          ? 'restart the source with its --state-dir to resume; the --fallback takes over when its wait is up'
          : 'restart the source with its --state-dir to resume, or restart this destination with --fallback (a replica of the source image as of cut-over)';
    this.#log.warn({ awayMs, bytesOnlyOnSource, fallback }, `source away for ${Math.round(awayMs / 1000)}s: ${bytesOnlyOnSource} bytes exist only on the source; ${todo}`);
    this.#events.emit('source-away', { awayMs, bytesOnlyOnSource, fallback });
  }
}
