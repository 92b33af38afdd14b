// Await the next message on a link during a request/answer exchange (handshake, Begin/Prepare), with a deadline.
import { LinkClosedError, ProtocolError, TimeoutError } from '../common/errors.js';
import type { Message, MessageOf } from '../protocol/messages.js';
import { withTimeout } from '../common/retry.js';
import type { Link } from './link.js';

/** Resolves with the next message; rejects on close, timeout, an ERROR frame, or a message not in `accept`. */
export function nextMessage<T extends Message['type']>(link: Link, accept: readonly T[], timeoutMs: number): Promise<MessageOf<T>> {
  let cleanup = () => {};
  const answer = new Promise<MessageOf<T>>((resolve, reject) => {
    if (link.closed) {
      reject(link.closeError ?? new LinkClosedError('PC_ERR_LINK_CLOSED'));
      return;
    }
    cleanup = () => {
      link.setHandler(null);
      link.off('close', onClose);
    };
    const onMessage = (msg: Message) => {
      cleanup();
      if (msg.type === 'ERROR') {
        reject(new ProtocolError('PC_ERR_PEER', `${msg.code}: ${msg.message}`));
      } else if ((accept as readonly string[]).includes(msg.type)) {
        resolve(msg as MessageOf<T>);
      } else {
        // Thrown inside the link's dispatch: the link closes with an error frame to the peer.
        const err = new ProtocolError('PC_ERR_UNEXPECTED', `got ${msg.type}, expected ${accept.join('|')}`);
        reject(err);
        throw err;
      }
    };
    const onClose = (err?: Error) => {
      cleanup();
      reject(err ?? new LinkClosedError('PC_ERR_LINK_CLOSED'));
    };
    link.on('close', onClose);
    link.setHandler(onMessage);
  });
  // A late answer finds no handler left: the link treats it as any message nobody waits for.
  return withTimeout(answer, timeoutMs, () => new TimeoutError('PC_ERR_TIMEOUT', `waiting for ${accept.join('|')}`)).finally(() => cleanup());
}
