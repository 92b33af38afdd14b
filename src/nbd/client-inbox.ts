// During the NBD handshake the client reads one message at a time: the next decoded message now, or a promise
// that the next chunk of socket data (or the connection's failure) settles. No I/O of its own.
import type { ClientDecoder } from './client-decoder.js';
import type { ServerMessage } from './codec-types.js';

export class HandshakeInbox {
  readonly #decoder: ClientDecoder;
  #waiter: { resolve: (m: ServerMessage) => void; reject: (e: Error) => void } | undefined;

  constructor(decoder: ClientDecoder) {
    this.#decoder = decoder;
  }

  /** The next message, decoding what is buffered first; `failure` rejects at once. */
  next(failure: Error | undefined): Promise<ServerMessage> {
    if (failure) return Promise.reject(failure);
    try {
      const msg = this.#decoder.next();
      if (msg) return Promise.resolve(msg);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  /** After data arrived: hand a whole message to the waiter. A decoder error rejects the waiter and is rethrown. */
  onData(): void {
    const waiter = this.#waiter;
    if (!waiter) return;
    try {
      const msg = this.#decoder.next();
      if (!msg) return;
      this.#waiter = undefined;
      waiter.resolve(msg);
    } catch (err) {
      this.#waiter = undefined;
      waiter.reject(err as Error);
      throw err;
    }
  }

  /** The connection failed: the waiter, if any, rejects with the failure. */
  fail(failure: Error): void {
    this.#waiter?.reject(failure);
    this.#waiter = undefined;
  }
}
