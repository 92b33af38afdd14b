// D's per-block state, all of it in one place: what each block of the image holds (nothing yet, S's bytes, S's
// zeroes, the guest's writes, what an earlier run left), whether a fetch of it or the write of S's bytes into the
// image is in flight, whether this run put
// bytes there, and S's crc of it. Pure: no I/O. Each change is a named transition that refuses what the dm-clone
// rules forbid (DESIGN.md §4): S's bytes never land on a present block, a partial guest write never on a missing one.
import { StateError } from '../common/errors.js';
import { CLASS_URGENT } from '../protocol/constants.js';
import type { BlockClass } from '../protocol/messages.js';

/**
 * A block's state as its name: `fetching` is a missing block with a fetch in flight; `writing` a missing block whose
 * bytes from S have arrived and are being written off the event loop: neither missing (nothing is fetched again, a
 * reader waits for the write) nor present (no bit, no commit, no guest write over it until the write returned).
 */
export type BlockState = 'missing' | 'fetching' | 'writing' | 'source' | 'source-zero' | 'guest' | 'guest-zero' | 'restored';

// What a block holds (one byte per block; MISSING is 0 so a scan for the next missing block is indexOf(0)).
const MISSING = 0;
/** S's bytes, untouched by the guest since (the final check compares them with S). */
const SOURCE = 1;
/** S said zeroes and the block reads as zeroes, untouched since. */
const SOURCE_ZERO = 2;
/** The guest wrote it (wholly or over S's bytes): S never replaces it. */
const GUEST = 3;
/** The guest zeroed all of it (write zeroes, trim). */
const GUEST_ZERO = 4;
/** Present from an earlier run (the bitmap said so): its origin is not known, so the final check skips it. */
const RESTORED = 5;
const KIND_NAMES = ['missing', 'source', 'source-zero', 'guest', 'guest-zero', 'restored'] as const;

// Flags beside the kind (one byte per block).
/** This run put bytes in the block's place: in an image created this run every other block is still a hole. */
const TOUCHED = 1;
/** The crc of S's bytes, taken as they were written, is known. */
const DIGEST = 2;
/** A fetch of the block is in flight, urgent (a guest waits) or bulk (the stream). */
const URGENT = 4;
const BULK = 8;
/** S's bytes for the (still missing) block are being written into the image asynchronously. */
const WRITING = 16;

export class BlockTable {
  readonly blockCount: number;
  readonly #kind: Uint8Array;
  readonly #flags: Uint8Array;
  readonly #crcs: Uint32Array;
  #present = 0;

  /** `restored`: blocks present from an earlier run (the bitmap's bits after a restart). */
  constructor(blockCount: number, restored: (block: number) => boolean = () => false) {
    this.blockCount = blockCount;
    this.#kind = new Uint8Array(blockCount);
    this.#flags = new Uint8Array(blockCount);
    this.#crcs = new Uint32Array(blockCount);
    for (let b = 0; b < blockCount; b++) {
      if (restored(b)) {
        this.#kind[b] = RESTORED;
        this.#present++;
      }
    }
  }

  // ---- queries ----

  stateOf(b: number): BlockState {
    const kind = this.#kind[b]!;
    if (kind === MISSING && this.isWriting(b)) return 'writing';
    if (kind === MISSING && this.isInflight(b)) return 'fetching';
    return KIND_NAMES[kind]!;
  }
  isPresent(b: number): boolean {
    return (this.#kind[b] ?? MISSING) !== MISSING;
  }
  /** S's content, untouched by the guest since: the blocks the final check compares with S. */
  isPristine(b: number): boolean {
    const kind = this.#kind[b];
    return kind === SOURCE || kind === SOURCE_ZERO;
  }
  /** Known to read as zeroes (block status says so). */
  isZero(b: number): boolean {
    const kind = this.#kind[b];
    return kind === SOURCE_ZERO || kind === GUEST_ZERO;
  }
  /** This run put bytes there (or may have, when a write failed part way). */
  isTouched(b: number): boolean {
    return (this.#flags[b]! & TOUCHED) !== 0;
  }
  /** A fetch of b, or the write of the bytes one brought, is in flight: nothing more to ask S for. */
  isInflight(b: number): boolean {
    return (this.#flags[b]! & (URGENT | BULK | WRITING)) !== 0;
  }
  /** S's bytes for b are being written: b becomes present (or stays missing, if the write fails) when it returns. */
  isWriting(b: number): boolean {
    return ((this.#flags[b] ?? 0) & WRITING) !== 0;
  }
  isFetching(b: number, cls: BlockClass): boolean {
    return (this.#flags[b]! & fetchFlag(cls)) !== 0;
  }
  /** S's crc of a pristine block, when it was taken as the block was written. */
  digestOf(b: number): number | undefined {
    return this.isPristine(b) && (this.#flags[b]! & DIGEST) !== 0 ? this.#crcs[b] : undefined;
  }
  get presentCount(): number {
    return this.#present;
  }
  get complete(): boolean {
    return this.#present === this.blockCount;
  }
  /** First missing block at or after `from`, or -1. */
  nextMissing(from: number): number {
    if (from < 0) return -1;
    return this.#kind.indexOf(MISSING, from);
  }
  pristineCount(): number {
    let n = 0;
    for (let b = 0; b < this.blockCount; b++) if (this.isPristine(b)) n++;
    return n;
  }

  // ---- fetches: missing → fetching → (S's bytes arrive) ----

  /** A fetch of b went out. An urgent one only for a missing block not already fetched urgently. */
  fetchIssued(b: number, cls: BlockClass): void {
    if (cls === CLASS_URGENT && (this.isPresent(b) || this.isFetching(b, cls))) this.#refuse(b, 'urgent fetch');
    this.#flags[b]! |= fetchFlag(cls);
  }
  /** The fetch of that class ended (all of it arrived, or it failed). */
  fetchSettled(b: number, cls: BlockClass): void {
    this.#flags[b]! &= ~fetchFlag(cls);
  }

  /** S's bytes were written into the missing block b; `crc` when the final check keeps digests. */
  sourceArrived(b: number, crc?: number): void {
    if (this.isWriting(b)) this.#refuse(b, 'S\'s bytes written beside a write in flight');
    this.#becomePresent(b, SOURCE, 'S\'s bytes');
    this.#flags[b]! |= TOUCHED;
    this.#setDigest(b, crc);
  }
  /** S said the missing block b is zeroes, and it reads so now (a hole, or zeroes written). */
  zeroArrived(b: number, crc?: number): void {
    if (this.isWriting(b)) this.#refuse(b, 'S\'s zeroes beside a write in flight');
    this.#becomePresent(b, SOURCE_ZERO, 'S\'s zeroes');
    this.#setDigest(b, crc);
  }
  // ---- S's bytes written off the event loop: missing → writing → present (or missing again) ----

  /** An asynchronous write of S's bytes into the missing block b began. */
  writeStarted(b: number): void {
    if (this.isPresent(b) || this.isWriting(b)) this.#refuse(b, 'write start');
    this.#flags[b]! |= WRITING | TOUCHED;
  }
  /** That write returned: b holds S's bytes (present; its bit is set by the next commit). */
  writeLanded(b: number, crc?: number): void {
    if (!this.isWriting(b)) this.#refuse(b, 'write landed');
    this.#flags[b]! &= ~WRITING;
    this.sourceArrived(b, crc);
  }
  /** That write failed (or the image closed under it): b stays missing; its place may hold part of the bytes. */
  writeFailed(b: number): void {
    if (!this.isWriting(b)) this.#refuse(b, 'write failed');
    this.#flags[b] = (this.#flags[b]! & ~WRITING) | TOUCHED;
  }

  /** Writing S's bytes into b failed part way: b stays missing, but its place may no longer be a hole. */
  landedPartly(b: number): void {
    this.#flags[b]! |= TOUCHED;
  }

  // ---- the guest ----

  /** The guest wrote b: wholly (any block), or partly (only a present one: a missing one is brought in first). */
  guestWrote(b: number, whole: boolean): void {
    if (!whole && !this.isPresent(b)) this.#refuse(b, 'partial guest write');
    // The write in flight would land over the guest's bytes: the guest waits for it first.
    if (this.isWriting(b)) this.#refuse(b, 'guest write');
    if (!this.isPresent(b)) this.#present++;
    this.#kind[b] = GUEST;
    this.#flags[b] = (this.#flags[b]! | TOUCHED) & ~DIGEST;
  }
  /** The guest's write over b (wholly) was of zeroes. */
  guestZeroed(b: number): void {
    const kind = this.#kind[b];
    if (kind !== GUEST && kind !== GUEST_ZERO) this.#refuse(b, 'guest zeroes');
    this.#kind[b] = GUEST_ZERO;
  }
  /** A guest write over b failed: a missing b stays missing; a present b may hold part of it, so it is the guest's. */
  guestWriteFailed(b: number): void {
    const kind = this.#kind[b];
    if (kind === SOURCE || kind === SOURCE_ZERO || kind === GUEST_ZERO) this.#kind[b] = GUEST;
    this.#flags[b] = (this.#flags[b]! | TOUCHED) & ~DIGEST;
  }

  // ---- durability and the final check ----

  /**
   * The image's sync failed before b's bit was durable: true when b went back to missing (S's bytes this run
   * wrote, which the kernel may have dropped; S gives them again). The guest's blocks cannot be fetched and stay;
   * so does a hole of a fresh image, whose content never depended on a write.
   */
  syncLost(b: number): boolean {
    if (!this.isPristine(b) || !this.isTouched(b)) return false;
    this.#becomeMissing(b);
    return true;
  }
  /** The final check found pristine b differs from S: missing again, and whatever is in its place is untrusted. */
  invalidated(b: number): void {
    if (!this.isPristine(b)) this.#refuse(b, 'invalidate');
    this.#becomeMissing(b);
    this.#flags[b]! |= TOUCHED;
  }

  #becomePresent(b: number, kind: number, what: string): void {
    if (this.isPresent(b)) this.#refuse(b, what);
    this.#kind[b] = kind;
    this.#present++;
  }
  #becomeMissing(b: number): void {
    this.#kind[b] = MISSING;
    this.#flags[b]! &= ~DIGEST;
    this.#present--;
  }
  #setDigest(b: number, crc: number | undefined): void {
    if (crc === undefined) {
      this.#flags[b]! &= ~DIGEST;
      return;
    }
    this.#crcs[b] = crc;
    this.#flags[b]! |= DIGEST;
  }
  #refuse(b: number, what: string): never {
    throw new StateError('PC_ERR_STATE', `block ${b}: ${what} refused in state ${this.stateOf(b)}`);
  }
}

function fetchFlag(cls: BlockClass): number {
  return cls === CLASS_URGENT ? URGENT : BULK;
}
