// S's RAM sender: pre-copy rounds of dirty pages while the guest runs, then a cut-over once the remaining
// dirty set fits the downtime budget: pause, last pages, device state and RAM digest.
import type { Logger } from '../common/logger.js';
import type { EventSink } from '../common/events.js';
import { PageDigest } from '../common/ram-digest.js';
import type { Link } from '../link/link.js';
import { RAM_PAGE_SIZE, RAM_ZERO_PAGE_BIT } from '../protocol/constants.js';
import { encodeMessage } from '../protocol/messages.js';
import type { MigratableGuest } from '../guest/types.js';
import { isAllZero } from '../common/zero.js';
import type { PrecopyResult } from '../guest/source-guest.js';

export type { PrecopyResult };

import { DATA_SHARE_OF_DOWNTIME, FIRST_ROUND_DATA_SHARE, MAX_ROUNDS, MIN_ROUND_BYTES_FOR_RATE, PAGES_PER_FRAME, RATE_BEFORE_MEASURED, YIELD_EVERY_MS } from './constants.js';

/** Credit granted by D, in bytes of RAM payload S may still send. */
export class RamCredit {
  #bytes = 0;
  /** Largest credit ever available at once: D's window. When all of it is back, D has applied everything sent. */
  #window = 0;
  #waiters: Array<() => void> = [];
  grant(bytes: number): void {
    this.#bytes += bytes;
    if (this.#bytes > this.#window) this.#window = this.#bytes;
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }
  async take(bytes: number, link: Link): Promise<void> {
    while (this.#bytes < bytes && !link.closed) await new Promise<void>((r) => this.#waiters.push(r));
    this.#bytes -= bytes;
  }
  /** Resolves once D has applied every page sent so far (all credit returned). */
  async drained(link: Link): Promise<void> {
    while (this.#bytes < this.#window && !link.closed) await new Promise<void>((r) => this.#waiters.push(r));
  }

  /** Wake waiters so they notice a closed link. */
  wake(): void {
    this.grant(0);
  }
}

export class RamSender {
  readonly #link: Link;
  readonly #guest: MigratableGuest;
  readonly #credit: RamCredit;
  readonly #digest: PageDigest;
  readonly #log: Logger;
  readonly #events: EventSink;
  /** Read at each round: the service changes it live (max-downtime). */
  readonly #maxDowntimeMs: () => number;

  constructor(opts: { link: Link; guest: MigratableGuest; credit: RamCredit; log: Logger; events: EventSink; maxDowntimeMs: () => number }) {
    this.#link = opts.link;
    this.#guest = opts.guest;
    this.#credit = opts.credit;
    this.#log = opts.log;
    this.#events = opts.events;
    this.#maxDowntimeMs = opts.maxDowntimeMs;
    this.#digest = new PageDigest(opts.guest.pageCount, RAM_PAGE_SIZE);
  }

  /** Rounds of dirty pages until the rest fits the budget; returns with the guest paused and its last pages sent. */
  async precopy(): Promise<PrecopyResult> {
    let rounds = 0;
    let pagesSent = 0;
    let bytesSent = 0;
    let bandwidth = 0;
    let converged = false;
    for (;;) {
      rounds++;
      const started = performance.now();
      const pages = this.#guest.takeDirtyPages();
      const bytes = await this.#sendPages(pages);
      // Wait for D to apply the round: the rate then counts D's work too, and nothing queued is left to
      // drain during the downtime.
      await this.#credit.drained(this.#link);
      const elapsed = (performance.now() - started) / 1000;
      pagesSent += pages.length;
      bytesSent += bytes;
      // A round of only zero pages says nothing about the link's rate; keep the last real figure.
      if (bytes >= MIN_ROUND_BYTES_FOR_RATE && elapsed > 0) bandwidth = bytes / elapsed;
      const dirtyRemaining = this.#guest.dirtyPageCount();
      this.#link.send({ type: 'RAM_ROUND_END', round: rounds, pagesSent: pages.length, dirtyRemaining });
      const rate = bandwidth > 0 ? bandwidth : RATE_BEFORE_MEASURED;
      const expectedMs = ((dirtyRemaining * RAM_PAGE_SIZE) / rate) * 1000;
      this.#events.emit('ram-round', { round: rounds, pages: pages.length, bytes, dirtyRemaining, expectedDowntimeMs: round3(expectedMs) });
      this.#log.info({ round: rounds, pages: pages.length, dirtyRemaining, expectedMs: round3(expectedMs) }, 'pre-copy round');
      // The rest of the budget is the cut-over's own cost (device state, D loading the last pages and checking the
      // RAM digest, the Finish round trip). After the first round (all of RAM, long, so many pages dirtied
      // meanwhile) the pages get a quarter of it; after later, short rounds half, or a fast dirtier never converges.
      if (expectedMs <= this.#maxDowntimeMs() * (rounds === 1 ? FIRST_ROUND_DATA_SHARE : DATA_SHARE_OF_DOWNTIME)) {
        converged = true;
        break;
      }
      if (rounds >= MAX_ROUNDS) {
        this.#log.warn({ rounds, dirtyRemaining }, 'pre-copy did not converge; cutting over anyway');
        break;
      }
    }
    await this.#guest.pause();
    const pausedAt = Date.now();
    const last = this.#guest.takeDirtyPages();
    // The final pass goes urgent: DEVICE_STATE (urgent) follows it, and must not overtake any of its pages.
    const lastBytes = await this.#sendPages(last, true);
    return { rounds, pagesSent: pagesSent + last.length, bytesSent: bytesSent + lastBytes, finalPages: last.length, bandwidthBytesPerSec: bandwidth, converged, pausedAtEpochMs: pausedAt };
  }

  ramDigest(): string {
    return this.#digest.digest();
  }

  /** Send pages (zero pages as a flag only), honouring D's credit and the link's bulk space. Returns bytes of page data. */
  async #sendPages(pages: Uint32Array, urgent = false): Promise<number> {
    const ram = this.#guest.ram;
    let bytes = 0;
    let yielded = performance.now();
    for (let i = 0; i < pages.length; i += PAGES_PER_FRAME) {
      // Credit and bulk space are often there already, and their awaits then never leave the microtask queue:
      // let timers, keepalives and signals (an operator's Ctrl-C) in now and then.
      if (performance.now() - yielded > YIELD_EVERY_MS) {
        await new Promise((r) => setImmediate(r));
        yielded = performance.now();
      }
      const indices: number[] = [];
      const data: Buffer[] = [];
      for (const ix of pages.subarray(i, i + PAGES_PER_FRAME)) {
        const page = Buffer.from(ram.buffer, ram.byteOffset + ix * RAM_PAGE_SIZE, RAM_PAGE_SIZE);
        if (isAllZero(page)) {
          indices.push((ix | RAM_ZERO_PAGE_BIT) >>> 0);
          this.#digest.setZero(ix);
        } else {
          indices.push(ix);
          // Copy now: the guest keeps running and may change the page before the frame is written.
          const copy = Buffer.from(page);
          data.push(copy);
          this.#digest.setPage(ix, copy);
        }
      }
      const payload = Buffer.concat(data);
      await this.#credit.take(payload.length, this.#link);
      if (!urgent) await this.#link.waitBulkSpace();
      if (this.#link.closed) throw this.#link.closeError ?? new Error('link closed');
      this.#link.sendFrame(encodeMessage({ type: 'RAM_PAGES', indices, data: payload }), urgent);
      bytes += payload.length;
    }
    return bytes;
  }
}


function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
