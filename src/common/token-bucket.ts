// A byte-rate cap for bulk traffic: what S's block server waits on before each bulk chunk and what D's pacing reads
// (urgent traffic never consults it). Live: a new rate applies at once and wakes the waiters.
import { SYSTEM_CLOCK, type Clock } from './clock.js';
import { RATE_BURST_MS, RATE_MIN_BURST_BYTES } from './constants.js';

/** What S's block server and D's streamer consult for bulk bytes (urgent never). */
export interface BulkRateLimit {
  /** null: unlimited. */
  readonly bytesPerSecond: number | null;
  /** Resolves (or returns at once) when `bytes` may go. */
  take(bytes: number): Promise<void> | void;
  /** The rate changed live; returns the unsubscribe. */
  onChange(listener: () => void): () => void;
}

interface Waiter {
  /** Bytes still to be granted: a take larger than the burst is granted in parts as tokens accrue. */
  remaining: number;
  resolve(): void;
}

/**
 * Tokens accrue at the rate up to a small burst (RATE_BURST_MS of the rate, at least one bulk chunk); takes are
 * granted first come, first served. Over any span from the start, bytes granted ≤ ∫ rate + burst.
 */
export class TokenBucket implements BulkRateLimit {
  readonly #clock: Clock;
  readonly #minBurst: number;
  readonly #listeners = new Set<() => void>();
  readonly #waiters: Waiter[] = [];
  #rate: number | null;
  #tokens = 0;
  #at: number;
  #timer: unknown = null;

  constructor(bytesPerSecond: number | null, clock: Clock = SYSTEM_CLOCK, minBurstBytes = RATE_MIN_BURST_BYTES) {
    checkRate(bytesPerSecond);
    this.#clock = clock;
    this.#minBurst = minBurstBytes;
    this.#rate = bytesPerSecond;
    this.#at = clock.now();
    this.#tokens = this.burstBytes;
  }

  get bytesPerSecond(): number | null {
    return this.#rate;
  }

  /** Bytes that may go at once after an idle spell (Infinity: unlimited). */
  get burstBytes(): number {
    return this.#rate === null ? Infinity : Math.max(this.#minBurst, (this.#rate * RATE_BURST_MS) / 1000);
  }

  /** Takes waiting for tokens. */
  get waiting(): number {
    return this.#waiters.length;
  }

  take(bytes: number): Promise<void> | void {
    if (this.#rate === null || bytes <= 0) return;
    this.#refill();
    if (this.#waiters.length === 0 && this.#tokens >= bytes) {
      this.#tokens -= bytes;
      return;
    }
    return new Promise<void>((resolve) => {
      this.#waiters.push({ remaining: bytes, resolve });
      this.#grant();
    });
  }

  /** A new rate, at once: what accrued so far accrued at the old one; waiters are served at the new one. */
  setRate(bytesPerSecond: number | null): void {
    checkRate(bytesPerSecond);
    if (bytesPerSecond === this.#rate) return;
    this.#refill();
    const wasUnlimited = this.#rate === null;
    this.#rate = bytesPerSecond;
    // From unlimited, the bucket starts full (as a new one does); otherwise what it holds, up to the new burst.
    this.#tokens = wasUnlimited ? this.burstBytes : Math.min(this.#tokens, this.burstBytes);
    this.#cancelTimer();
    this.#grant();
    for (const l of [...this.#listeners]) l();
  }

  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  #refill(): void {
    const now = this.#clock.now();
    // Idle, tokens stop at one burst. With takes waiting, every token is theirs the moment it accrues: none is cut off
    // while a timer (whole milliseconds, and late) is due, or a take larger than a burst would get less than the rate.
    const cap = this.#waiters.length > 0 ? Infinity : this.burstBytes;
    if (this.#rate !== null) this.#tokens = Math.min(cap, this.#tokens + (this.#rate * Math.max(0, now - this.#at)) / 1000);
    this.#at = now;
  }

  /** Hand tokens to the waiters in order; set a timer for the first that still lacks some. */
  #grant(): void {
    this.#refill();
    while (this.#waiters.length > 0) {
      const w = this.#waiters[0]!;
      if (this.#rate === null) w.remaining = 0;
      else {
        const part = Math.min(w.remaining, this.#tokens);
        w.remaining -= part;
        this.#tokens -= part;
      }
      if (w.remaining > 0) break;
      this.#waiters.shift();
      w.resolve();
    }
    if (this.#waiters.length === 0) this.#tokens = Math.min(this.#tokens, this.burstBytes);
    if (this.#waiters.length === 0 || this.#timer !== null || this.#rate === null) return;
    // When the head's next part (what it lacks, at most a burst) has accrued; timers fire late, never early enough to spin.
    const need = Math.min(this.#waiters[0]!.remaining, this.burstBytes) - this.#tokens;
    const ms = Math.max(1, Math.ceil((need * 1000) / this.#rate));
    this.#timer = this.#clock.setTimer(ms, () => {
      this.#timer = null;
      this.#grant();
    });
  }

  #cancelTimer(): void {
    if (this.#timer !== null) this.#clock.clearTimer(this.#timer);
    this.#timer = null;
  }
}

function checkRate(bps: number | null): void {
  if (bps !== null && !(Number.isFinite(bps) && bps > 0)) throw new RangeError(`a rate cap must be a positive number of bytes per second or null, got ${bps}`);
}
