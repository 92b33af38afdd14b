// Read a stranger's first frame off a fresh socket, which must be a HELLO, without consuming it: the bytes read
// come back so the caller can unshift them for whoever runs the real handshake on that socket.
import type { Socket } from 'node:net';
import { LinkClosedError, ProtocolError, TimeoutError, toPostcopyError, type PostcopyError } from '../common/errors.js';
import { MAX_PREAUTH_PAYLOAD } from '../protocol/constants.js';
import { FrameDecoder } from '../protocol/frame-codec.js';
import { decodeMessage, type MessageOf } from '../protocol/messages.js';

export interface FirstHello {
  hello: MessageOf<'HELLO'>;
  /** Every byte read from the socket so far, the HELLO first (reading is paused when this resolves). */
  bytes: Buffer;
}

/**
 * Resolves with the HELLO and the bytes read, with the socket paused; rejects (the socket left as it is) when the
 * peer sends anything else, a frame over the pre-authentication cap, nothing within `timeoutMs`, or leaves.
 */
export function readFirstHello(socket: Socket, timeoutMs: number): Promise<FirstHello> {
  return new Promise((resolve, reject) => {
    const decoder = new FrameDecoder();
    // A stranger makes us hold no more than the handshake's own messages need.
    decoder.setPayloadLimit(MAX_PREAUTH_PAYLOAD, 'before authentication');
    const chunks: Buffer[] = [];
    const stop = () => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onGone);
      socket.off('close', onGone);
      socket.off('error', onError);
    };
    const fail = (err: PostcopyError) => {
      stop();
      reject(err);
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      try {
        const frames = decoder.push(chunk);
        if (frames.length === 0) return;
        const msg = decodeMessage(frames[0]!);
        if (msg.type !== 'HELLO') throw new ProtocolError('PC_ERR_UNEXPECTED', `got ${msg.type}, expected HELLO`);
        socket.pause();
        stop();
        resolve({ hello: msg, bytes: Buffer.concat(chunks) });
      } catch (e) {
        fail(toPostcopyError(e, (detail, options) => new ProtocolError('PC_ERR_MALFORMED', detail, options)));
      }
    };
    const onGone = () => fail(new LinkClosedError('PC_ERR_LINK_CLOSED', 'the peer left before its HELLO'));
    const onError = (e: Error) => fail(new LinkClosedError('PC_ERR_LINK_CLOSED', e.message, { cause: e }));
    const timer = setTimeout(() => fail(new TimeoutError('PC_ERR_TIMEOUT', `no HELLO within ${timeoutMs} ms`)), timeoutMs);
    socket.on('data', onData);
    socket.on('end', onGone);
    socket.on('close', onGone);
    socket.on('error', onError);
  });
}
