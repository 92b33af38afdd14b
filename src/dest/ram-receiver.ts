// D's RAM receiver: applies pages into the guest RAM it will run, within the credit it granted S,
// and keeps the per-page digest that must match S's at cut-over.
import { ProtocolError } from '../common/errors.js';
import { PageDigest } from '../common/ram-digest.js';
import { RAM_PAGE_SIZE, RAM_ZERO_PAGE_BIT } from '../protocol/constants.js';
import type { Message, MessageOf } from '../protocol/messages.js';
import { RAM_CREDIT_WINDOW } from './constants.js';

/** Where credit goes back to S. */
export interface CreditSink {
  send(msg: Message): void;
}

export class RamReceiver {
  readonly ram: Buffer;
  readonly pageCount: number;
  readonly #digest: PageDigest;
  pagesReceived = 0;
  bytesReceived = 0;

  constructor(ramBytes: number) {
    if (ramBytes % RAM_PAGE_SIZE !== 0) throw new ProtocolError('PC_ERR_MALFORMED', `RAM size ${ramBytes} is not whole pages`);
    this.ram = Buffer.alloc(ramBytes);
    this.pageCount = ramBytes / RAM_PAGE_SIZE;
    this.#digest = new PageDigest(this.pageCount, RAM_PAGE_SIZE);
  }

  /** Open the window: S may send this much before waiting for more. */
  grantInitial(link: CreditSink): void {
    link.send({ type: 'CREDIT', bytes: RAM_CREDIT_WINDOW });
  }

  /** Apply a frame of pages; then give its bytes back as credit. */
  apply(msg: MessageOf<'RAM_PAGES'>, link: CreditSink): void {
    // Each frame is applied at once and its credit handed straight back, so S's credit is always the whole
    // window minus what is on the wire: one frame can never exceed it.
    if (msg.data.length > RAM_CREDIT_WINDOW) throw new ProtocolError('PC_ERR_MALFORMED', 'RAM pages beyond granted credit');
    let at = 0;
    for (const raw of msg.indices) {
      const zero = (raw & RAM_ZERO_PAGE_BIT) !== 0;
      const ix = zero ? (raw & ~RAM_ZERO_PAGE_BIT) >>> 0 : raw;
      if (ix >= this.pageCount) throw new ProtocolError('PC_ERR_OUT_OF_RANGE', `RAM page ${ix} of ${this.pageCount}`);
      const dst = ix * RAM_PAGE_SIZE;
      if (zero) {
        // RAM starts zeroed: only a page that held data needs clearing (a memset of all RAM costs the downtime).
        if (!this.#digest.isZero(ix)) this.ram.fill(0, dst, dst + RAM_PAGE_SIZE);
        this.#digest.setZero(ix);
      } else {
        const page = msg.data.subarray(at, at + RAM_PAGE_SIZE);
        page.copy(this.ram, dst);
        this.#digest.setPage(ix, page);
        at += RAM_PAGE_SIZE;
        this.bytesReceived += RAM_PAGE_SIZE;
      }
      this.pagesReceived++;
    }
    if (msg.data.length > 0) link.send({ type: 'CREDIT', bytes: msg.data.length });
  }

  digest(): string {
    return this.#digest.digest();
  }
}
