// Durability batching for the block store (DESIGN.md §4): blocks made present are committed together, in the
// background or on a flush, always in this order: the image's data written, image fdatasync, the blocks' bits
// set, bitmap fdatasync. A crash can lose bits (the block is fetched again), never set one for data not on disk.
import type { Logger } from '../common/logger.js';
import type { PresentBitmap } from './present-bitmap.js';
import { COMMIT_INTERVAL_MS } from './store-constants.js';

export interface CommitterOptions {
  bitmap: PresentBitmap;
  /** fdatasync of the image. */
  syncImage: () => Promise<void>;
  /** The image's sync failed before block b's bit was durable: true when b is missing again (fetched anew). */
  lost: (b: number) => boolean;
  /** A sync or bitmap write failed: turn the local fault on (or throw a bug on). The commit then rejects. */
  diskFailed: (e: unknown) => void;
  /** A commit finished: its blocks are durable. */
  committed: () => void;
  /** A background commit failed on a disk already reported as failing: do not log it again. */
  faultActive: () => boolean;
  log: Logger;
}

export class Committer {
  readonly #o: CommitterOptions;
  /** Present in memory (data written), bits not yet durable: the next commit's batch. */
  #pending: number[] = [];
  #chain: Promise<void> = Promise.resolve();
  #timer: NodeJS.Timeout | null = null;
  #stopped = false;

  constructor(opts: CommitterOptions) {
    this.#o = opts;
  }

  /** Blocks whose bits are not durable yet. */
  get pendingCount(): number {
    return this.#pending.length;
  }

  /** Block b's data is in the image: present now, its bit durable with the next commit (within the interval). */
  track(b: number): void {
    this.#o.bitmap.markPresent(b);
    this.#pending.push(b);
    // After stop() a block landing (a write that was in flight) waits for the caller's last commit, or is lost.
    if (this.#timer === null && !this.#stopped) {
      this.#timer = setTimeout(() => {
        this.#timer = null;
        this.commitInBackground();
      }, COMMIT_INTERVAL_MS);
    }
  }

  /** A commit nobody waits for: a failing disk has been reported by the fault gate already. */
  commitInBackground(): void {
    void this.commit().catch((e) => {
      if (!this.#o.faultActive()) this.#o.log.error({ err: e }, 'bitmap commit failed');
    });
  }

  /** Make every write so far durable: image fdatasync, then the bits of newly present blocks, then bitmap fdatasync. */
  commit(): Promise<void> {
    const run = async () => {
      const batch = this.#pending;
      this.#pending = [];
      try {
        await this.#o.syncImage();
      } catch (e) {
        this.#syncFailed(batch);
        this.#o.diskFailed(e);
        throw e;
      }
      try {
        await this.#o.bitmap.commit(batch);
      } catch (e) {
        this.#pending = batch.concat(this.#pending);
        this.#o.diskFailed(e);
        throw e;
      }
      this.#o.committed();
    };
    // One commit at a time, each after the one before whether it failed or not.
    this.#chain = this.#chain.then(run, run);
    return this.#chain;
  }

  /** No more background commits (the store closes; its last commit is awaited by the caller). */
  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  /**
   * The image's sync failed: the kernel may have dropped what it could not write back. Blocks S can give again
   * are missing again (in memory; their bits never reached the file); the rest wait for the next commit (the
   * guest's FLUSH got the error, as from its own disk).
   */
  #syncFailed(batch: number[]): void {
    const keep: number[] = [];
    const again: number[] = [];
    for (const b of batch) (this.#o.lost(b) ? again : keep).push(b);
    this.#o.bitmap.forget(again);
    this.#pending = keep.concat(this.#pending);
  }
}
