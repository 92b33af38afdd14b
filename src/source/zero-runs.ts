// Zero runs of the image as it is after cut-over (it no longer changes), so D never asks for them. A file's holes
// come from its extent map at once and the rest is scanned ahead of D's stream (or all of it, without a map), runs
// sent as found (on whatever link is current); an NBD backend answers BLOCK_STATUS at once. After a reconnect
// everything found so far is sent again.
import type { Extent, SourceImage } from '../common/block-device.js';
import type { Link } from '../link/link.js';
import { MAX_EXTENTS_PER_FRAME } from '../protocol/constants.js';
import type { ZeroRun } from '../protocol/messages.js';
import type { ScanHooks } from '../image/extent-scan.js';
import type { ZeroScanReport } from '../image/file-image.js';
import type { SentDigests } from './sent-digests.js';

export type ScannableImage = SourceImage & { scanZeroRuns?: (onZeroRuns: (runs: Extent[]) => void, hooks?: ScanHooks) => Promise<ZeroScanReport | void> };

/** How the runs were found: the image's extent map (holes not read), a read of all of it, or the backend's own map. */
export type ZeroRunsMethod = ZeroScanReport['method'] | 'backend';

export class ZeroRuns {
  readonly #runs: ZeroRun[] = [];
  #report: ZeroScanReport | null = null;
  #backend = false;

  get count(): number {
    return this.#runs.length;
  }
  get bytes(): number {
    return this.#runs.reduce((a, r) => a + r.length, 0);
  }
  /** Once the scan is done: how the runs were found (null before). */
  get method(): ZeroRunsMethod | null {
    return this.#backend ? 'backend' : (this.#report?.method ?? null);
  }
  /** Bytes of the image the scan did not read (the map said zero); 0 for a scan or a backend's map. */
  get unreadBytes(): number {
    return this.#report?.unreadBytes ?? 0;
  }
  /** Why a file image had no map, when it had none. */
  get fallback(): string | undefined {
    return this.#report?.fallback;
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
    if (image.scanZeroRuns) this.#report = (await image.scanZeroRuns(collect, hooks)) ?? null;
    else {
      collect(await image.extents());
      this.#backend = true;
    }
  }

  #send(link: Link | null, runs: readonly ZeroRun[]): void {
    for (let i = 0; i < runs.length; i += MAX_EXTENTS_PER_FRAME) {
      if (link && !link.closed) link.send({ type: 'EXTENTS', runs: runs.slice(i, i + MAX_EXTENTS_PER_FRAME) });
    }
  }
}
