// The NBD client's bounded request window: at most `max` requests on the wire, the rest waiting in order, and
// a count of requests accepted but not finished so close() can wait for them. No I/O.
export class RequestSlots {
  readonly #max: number;
  readonly #waiters: Array<() => void> = [];
  #inFlight = 0;
  /** Requests accepted by the API but not finished (in flight or waiting for a slot). */
  #active = 0;
  #idleWaiters: Array<() => void> = [];

  constructor(max: number) {
    this.#max = Math.max(1, max);
  }

  get active(): number {
    return this.#active;
  }

  /** Run `work` holding one slot; counts as active from the call until it settles. */
  async run<T>(work: () => Promise<T>): Promise<T> {
    this.#active++;
    try {
      await this.#acquire();
      try {
        return await work();
      } finally {
        this.#release();
      }
    } finally {
      if (--this.#active === 0) this.#idleWaiters.splice(0).forEach((w) => w());
    }
  }

  /** Resolves when nothing is active. */
  idle(): Promise<void> {
    if (this.#active === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** The connection failed: every waiter wakes holding a slot, sees the failure and rejects its own request. */
  wakeAll(): void {
    const waiters = this.#waiters.splice(0);
    this.#inFlight += waiters.length;
    waiters.forEach((w) => w());
  }

  #acquire(): Promise<void> {
    if (this.#inFlight < this.#max) {
      this.#inFlight++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Hand the slot straight to the next waiter, if any, so the in-flight count never overshoots. */
  #release(): void {
    const next = this.#waiters.shift();
    if (next) next();
    else this.#inFlight--;
  }
}
