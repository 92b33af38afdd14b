// A GuestStreamChannel over the migration link: the hypervisor's stream as GUEST_STREAM frames within the
// credit the receiving agent grants, so neither side queues more than a window of it.
import { LinkClosedError } from '../common/errors.js';
import { deferred } from '../common/deferred.js';
import type { GuestStreamChannel } from '../common/guest-stream-channel.js';
import { BULK_CHUNK_BYTES } from '../protocol/constants.js';
import type { Link } from './link.js';

// The window lives with the link's other constants; the agents still import it from here.
export { STREAM_CREDIT_WINDOW } from './constants.js';

export interface Credit {
  take(bytes: number, link: Link): Promise<void>;
}

export class LinkStreamChannel implements GuestStreamChannel {
  readonly #link: Link;
  /** Credit the peer granted us (null: the peer's direction needs none, e.g. D's small return path). */
  readonly #credit: Credit | null;
  #handler: ((data: Buffer) => Promise<void> | void) | null = null;
  /** Frames that arrived before a handler was set; bounded by the credit the receiver granted. */
  #held: Array<{ data: Buffer; done: () => void; fail: (e: unknown) => void }> = [];
  readonly #ended = deferred<void>();
  #endSent = false;

  constructor(link: Link, credit: Credit | null) {
    this.#link = link;
    this.#credit = credit;
    link.once('close', (err) => this.#ended.reject(err ?? new LinkClosedError('PC_ERR_LINK_CLOSED')));
  }

  get ended(): Promise<void> {
    return this.#ended.promise;
  }

  async write(data: Buffer): Promise<void> {
    // One bulk chunk per frame, like block data: an urgent frame waits behind one at most.
    for (let at = 0; at < data.length; at += BULK_CHUNK_BYTES) {
      const part = data.subarray(at, Math.min(data.length, at + BULK_CHUNK_BYTES));
      if (this.#failed) throw this.#failed;
      if (this.#credit) await this.#credit.take(part.length, this.#link);
      await this.#link.waitBulkSpace();
      if (this.#link.closed) throw this.#link.closeError ?? new LinkClosedError('PC_ERR_LINK_CLOSED');
      this.#link.send({ type: 'GUEST_STREAM', data: part });
    }
  }

  onData(handler: (data: Buffer) => Promise<void> | void): void {
    this.#handler = handler;
    const held = this.#held;
    this.#held = [];
    // Called in arrival order, synchronously: the handler's own writes keep the stream's order.
    for (const h of held) Promise.resolve(handler(h.data)).then(h.done, h.fail);
  }

  end(): void {
    if (this.#endSent || this.#link.closed) return;
    this.#endSent = true;
    this.#link.send({ type: 'GUEST_STREAM_END' });
  }

  /** Called by the agent for each GUEST_STREAM frame; resolves when the handler has taken the bytes (then credit returns). */
  deliver(data: Buffer): Promise<void> {
    if (this.#handler) return Promise.resolve(this.#handler(data));
    return new Promise((done, fail) => this.#held.push({ data, done, fail }));
  }

  /** The migration was aborted: the other side's direction will never end, and nothing more may be sent. */
  fail(err: Error): void {
    this.#failed = err;
    this.#ended.reject(err);
  }
  #failed: Error | null = null;

  deliverEnd(): void {
    this.#ended.resolve();
  }
}
