// A clock whose time moves only when a test says: timers fire in order as it advances, with the microtasks their
// callbacks start (promise resolutions) run before the next one fires, so "when" a promise settled is exact.

export class ManualClock {
  #now: number;
  #seq = 0;
  readonly #timers = new Map<number, { at: number; fire: () => void }>();

  constructor(start = 0) {
    this.#now = start;
  }

  now = (): number => this.#now;

  setTimer = (ms: number, fire: () => void): unknown => {
    const id = ++this.#seq;
    this.#timers.set(id, { at: this.#now + Math.max(0, ms), fire });
    return id;
  };

  clearTimer = (handle: unknown): void => {
    this.#timers.delete(handle as number);
  };

  get pendingTimers(): number {
    return this.#timers.size;
  }

  /** Move to `t`, firing every timer due by then in time order (earliest set first on a tie). */
  async advanceTo(t: number): Promise<void> {
    for (;;) {
      let next: [number, { at: number; fire: () => void }] | undefined;
      for (const e of this.#timers) if (e[1].at <= t && (next === undefined || e[1].at < next[1].at)) next = e;
      if (!next) break;
      this.#timers.delete(next[0]);
      this.#now = Math.max(this.#now, next[1].at);
      next[1].fire();
      await flushMicrotasks();
    }
    this.#now = Math.max(this.#now, t);
    await flushMicrotasks();
  }

  advance(ms: number): Promise<void> {
    return this.advanceTo(this.#now + ms);
  }
}

/** Let every queued promise callback run (a few rounds: a then may queue another). */
export async function flushMicrotasks(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await Promise.resolve();
}
