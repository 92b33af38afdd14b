// What one NBD connection has in flight: requests being served and the payload bytes they pin. The connection
// pauses reading while either is at its cap (backpressure toward the client). No I/O.
import type { NbdRequest } from './codec-types.js';
import * as C from './constants.js';

/** Memory a request pins while in flight: the WRITE payload held, or the READ data to come. */
function payloadBytes(req: NbdRequest): number {
  return req.command === C.NBD_CMD_WRITE || req.command === C.NBD_CMD_READ ? req.length : 0;
}

export class InFlightLoad {
  readonly #maxRequests: number;
  readonly #maxBytes: number;
  #requests = 0;
  #bytes = 0;

  constructor(maxRequests: number, maxBytes: number) {
    this.#maxRequests = maxRequests;
    this.#maxBytes = maxBytes;
  }

  get requests(): number {
    return this.#requests;
  }

  /** A request starts being served; returns the bytes to give back to end(). */
  begin(req: NbdRequest): number {
    const bytes = payloadBytes(req);
    this.#requests++;
    this.#bytes += bytes;
    return bytes;
  }

  end(bytes: number): void {
    this.#requests--;
    this.#bytes -= bytes;
  }

  get overloaded(): boolean {
    return this.#requests >= this.#maxRequests || this.#bytes >= this.#maxBytes;
  }
}
