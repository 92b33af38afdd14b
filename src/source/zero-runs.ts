// Zero runs of the image as it is after cut-over (it no longer changes), so D never asks for them. A file is
// scanned once, ahead of D's stream, runs sent as found (on whatever link is current); an NBD backend answers
// BLOCK_STATUS at once. After a reconnect everything found so far is sent again.
import type { Extent, SourceImage } from '../common/block-device.js';
import type { Link } from '../link/link.js';
import { MAX_EXTENTS_PER_FRAME } from '../protocol/constants.js';
import type { ZeroRun } from '../protocol/messages.js';
import type { ScanHooks } from '../image/extent-scan.js';
import type { SentDigests } from './sent-digests.js';

export type ScannableImage = SourceImage & { scanZeroRuns?: (onZeroRuns: (runs: Extent[]) => void, hooks?: ScanHooks) => Promise<void> };

export class ZeroRuns {
  readonly #runs: ZeroRun[] = [];

  get count(): number {
    return this.#runs.length;
  }
  get bytes(): number {
    return this.#runs.reduce((a, r) => a + r.length, 0);
  }

  /** Every run found so far on `link`, and EXTENTS_END when the scan is done. */
  sendAll(link: Link | null, end: boolean): void {
    this.#send(link, this.#runs);
    if (end && link && !link.closed) link.send({ type: 'EXTENTS_END', count: this.#runs.length });
  }

  /** Scan the image; each batch of runs is recorded (the final check need not read them) and sent on `current()`. */
  async scan(image: ScannableImage, hooks: ScanHooks, sent: SentDigests, current: () => Link | null): Promise<void> {
    const collect = (extents: Extent[]) => {
      const runs = extents.filter((e) => e.zero).map((e) => ({ offset: e.offset, length: e.length }));
      this.#runs.push(...runs);
      for (const r of runs) sent.recordZero(r.offset, r.length);
      this.#send(current(), runs);
    };
    if (image.scanZeroRuns) await image.scanZeroRuns(collect, hooks);
    else collect(await image.extents());
  }

  #send(link: Link | null, runs: readonly ZeroRun[]): void {
    for (let i = 0; i < runs.length; i += MAX_EXTENTS_PER_FRAME) {
      if (link && !link.closed) link.send({ type: 'EXTENTS', runs: runs.slice(i, i + MAX_EXTENTS_PER_FRAME) });
    }
  }
}
