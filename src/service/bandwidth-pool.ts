// The host's --max-bandwidth shared among the jobs running now by water-filling (max-min fairness): each job gets an
// equal share, a job whose own cap is below it keeps only its cap and the rest goes to the others. Every join,
// leave and own-cap change re-rates every share live (each share's limit is a TokenBucket the agent consults).
import { TokenBucket, type BulkRateLimit } from '../common/token-bucket.js';

export interface PoolShare {
  /** Give this to the agent (SourceAgentOptions.bulkRate / DestAgentOptions.bulkRate). */
  readonly limit: BulkRateLimit;
  readonly ownCap: number | null;
  /** min(ownCap, fair share); null: unlimited. */
  readonly effective: number | null;
  /** set-speed, live. */
  setOwnCap(bps: number | null): void;
  /** The job ended: the others get its share. */
  leave(): void;
}

export class BandwidthPool {
  readonly #host: number | null;
  readonly #shares = new Set<Share>();

  constructor(hostBytesPerSecond: number | null) {
    if (hostBytesPerSecond !== null && !(Number.isFinite(hostBytesPerSecond) && hostBytesPerSecond > 0)) throw new RangeError(`host bandwidth must be positive or null, got ${hostBytesPerSecond}`);
    this.#host = hostBytesPerSecond;
  }

  /** A job starts running. */
  join(ownCap: number | null): PoolShare {
    const share = new Share(ownCap, this);
    this.#shares.add(share);
    this.rebalance();
    return share;
  }

  /** Jobs holding a share. */
  get size(): number {
    return this.#shares.size;
  }

  /** @internal a share left or changed its cap. */
  rebalance(left?: Share): void {
    if (left) this.#shares.delete(left);
    const shares = [...this.#shares];
    const rates = waterFill(this.#host, shares.map((s) => s.ownCap));
    shares.forEach((s, i) => s.rate(rates[i]!));
  }
}

class Share implements PoolShare {
  readonly #bucket = new TokenBucket(null);
  readonly #pool: BandwidthPool;
  #ownCap: number | null;
  #left = false;

  constructor(ownCap: number | null, pool: BandwidthPool) {
    checkCap(ownCap);
    this.#ownCap = ownCap;
    this.#pool = pool;
  }

  get limit(): BulkRateLimit {
    return this.#bucket;
  }
  get ownCap(): number | null {
    return this.#ownCap;
  }
  get effective(): number | null {
    return this.#bucket.bytesPerSecond;
  }

  setOwnCap(bps: number | null): void {
    checkCap(bps);
    this.#ownCap = bps;
    if (this.#left) this.#bucket.setRate(bps);
    else this.#pool.rebalance();
  }

  leave(): void {
    if (this.#left) return;
    this.#left = true;
    this.#pool.rebalance(this);
  }

  /** The pool's answer for this share. */
  rate(bps: number | null): void {
    this.#bucket.setRate(bps);
  }
}

/**
 * Max-min fair rates for jobs with these own caps (null: none) under `host` bytes/s (null: none): the smallest caps
 * are filled first, each of the rest gets an equal part of what remains. Whole bytes per second, at least 1 (a zero
 * rate would stall a job for good); their sum never exceeds `host` while there are no more jobs than bytes/s.
 */
export function waterFill(host: number | null, caps: ReadonlyArray<number | null>): Array<number | null> {
  if (host === null) return [...caps];
  const order = caps.map((c, i) => [c ?? Infinity, i] as const).sort((a, b) => a[0] - b[0]);
  const out = new Array<number | null>(caps.length);
  let remaining = Math.floor(host);
  let left = caps.length;
  for (const [cap, i] of order) {
    const equal = Math.floor(remaining / left);
    const r = Math.max(1, Math.min(cap, equal));
    out[i] = r;
    remaining -= r;
    left--;
  }
  return out;
}

function checkCap(bps: number | null): void {
  if (bps !== null && !(Number.isFinite(bps) && bps > 0)) throw new RangeError(`a job's bandwidth cap must be positive or null, got ${bps}`);
}
