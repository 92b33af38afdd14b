// The handshake run over a link: version choice and mutual HMAC auth for a new session, or a resume.
import { randomBytes } from 'node:crypto';
import { AuthError, BusyError, LinkClosedError, ProtocolError } from '../common/errors.js';
import { CAPABILITIES, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN } from '../protocol/constants.js';
import {
  checkNonce,
  checkTicketValid,
  chooseVersion,
  computeProof,
  deriveResumeKey,
  newNonce,
  resumeProofKey,
  ticketId,
  verifyProof,
  type Ticket,
} from '../protocol/handshake.js';
import { ANSWER_MARGIN_MS, OLD_LINK_POLL_MS, SESSION_ID_BYTES } from './constants.js';
import type { Link } from './link.js';
import { nextMessage } from './next-message.js';

export interface SessionKeys {
  sessionId: string;
  resumeKey: Buffer;
}

export interface HandshakeResult extends SessionKeys {
  version: number;
  resumed: boolean;
  /** The destination's phase at the time of the handshake (tells a resuming source what happened). */
  destPhase: string;
  peerCaps: string[];
}

/**
 * Source side: prove the ticket (and, resuming, the resume key of `resume` too) and verify the destination
 * does the same. The ticket may have expired for a resume.
 */
export async function handshakeAsSource(link: Link, ticket: Ticket | null, resume: SessionKeys | null): Promise<HandshakeResult> {
  if (!ticket) throw new AuthError('PC_ERR_AUTH', resume ? 'a resume proves the ticket too: no ticket given' : 'no ticket and no session to resume');
  if (!resume) checkTicketValid(ticket, Date.now());
  const deadline = Date.now() + link.handshakeTimeoutMs;
  const sourceNonce = newNonce();
  link.send({
    type: 'HELLO',
    versions: [PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX],
    caps: [...CAPABILITIES],
    nonce: sourceNonce,
    ...(resume ? { resumeSession: resume.sessionId } : {}),
    // Always sent: a resume reaches its job through a shared port by the ticket, as a new session does.
    ticketId: ticketId(ticket),
  });
  const ch = await nextMessage(link, ['CHALLENGE'], remaining(deadline));
  const version = chooseVersion([ch.version, ch.version]);
  const key = resume ? resumeProofKey(ticket.secret, resume.resumeKey) : ticket.secret;
  const sessionBinding = resume?.sessionId ?? '';
  const differs = resume ? 'the ticket or the session\'s resume key differs from the destination\'s' : 'the ticket differs from the destination\'s';
  verifyProof(computeProof(key, 'dest', sourceNonce, ch.nonce, sessionBinding), ch.proof, `the destination's proof does not match: ${differs}`);
  link.markAuthenticated();
  link.send({ type: 'AUTH', proof: computeProof(key, 'source', sourceNonce, ch.nonce, sessionBinding) });
  const w = await nextMessage(link, ['WELCOME'], remaining(deadline));
  if (resume) {
    if (!w.resumed || w.sessionId !== resume.sessionId) throw new ProtocolError('PC_ERR_UNEXPECTED', 'destination did not resume the session');
    return { ...resume, version, resumed: true, destPhase: w.phase, peerCaps: ch.caps };
  }
  return {
    sessionId: w.sessionId,
    resumeKey: deriveResumeKey(ticket.secret, sourceNonce, ch.nonce, w.sessionId),
    version,
    resumed: false,
    destPhase: w.phase,
    peerCaps: ch.caps,
  };
}

export interface DestHandshakeOptions {
  ticket: Ticket;
  /** The session this destination holds, if any; only it can be resumed. */
  current: SessionKeys | null;
  /** Whether a new session may start now (false once one exists). */
  acceptNew: boolean;
  /** The destination's phase, reported to the source. */
  phase: string;
  /** Nonces seen recently: a replayed HELLO is refused. Bounded by the caller. */
  seenNonces: Set<string>;
  /** The session's current link (another connection), if any: a resume never displaces it while it is alive. */
  sessionLink?: () => Link | null;
}

/**
 * Destination side: answer HELLO with our proof, check the source's, issue or confirm the session.
 * The whole exchange must finish within the link's handshake timeout.
 */
export async function handshakeAsDest(link: Link, opts: DestHandshakeOptions): Promise<HandshakeResult> {
  const deadline = Date.now() + link.handshakeTimeoutMs;
  const hello = await nextMessage(link, ['HELLO'], remaining(deadline));
  const version = chooseVersion(hello.versions);
  if (opts.seenNonces.has(hello.nonce)) throw new AuthError('PC_ERR_AUTH', 'replayed nonce');
  checkNonce(hello.nonce);
  opts.seenNonces.add(hello.nonce);
  let key: Buffer;
  const resuming = hello.resumeSession !== undefined;
  if (resuming) {
    if (!opts.current || opts.current.sessionId !== hello.resumeSession) throw new AuthError('PC_ERR_AUTH', 'unknown session');
    key = resumeProofKey(opts.ticket.secret, opts.current.resumeKey);
  } else {
    if (!opts.acceptNew) throw new ProtocolError('PC_ERR_UNEXPECTED', 'a migration session is already in progress');
    checkTicketValid(opts.ticket, Date.now());
    key = opts.ticket.secret;
  }
  const destNonce = newNonce();
  const binding = hello.resumeSession ?? '';
  link.send({
    type: 'CHALLENGE',
    version,
    caps: [...CAPABILITIES],
    nonce: destNonce,
    proof: computeProof(key, 'dest', hello.nonce, destNonce, binding),
  });
  const auth = await nextMessage(link, ['AUTH'], remaining(deadline));
  verifyProof(computeProof(key, 'source', hello.nonce, destNonce, binding), auth.proof, 'the source\'s proof does not match');
  if (resuming) await awaitSessionLinkGone(link, opts.sessionLink?.() ?? null, deadline);
  link.markAuthenticated();
  if (resuming) {
    link.send({ type: 'WELCOME', sessionId: opts.current!.sessionId, resumed: true, phase: opts.phase });
    return { ...opts.current!, version, resumed: true, destPhase: opts.phase, peerCaps: hello.caps };
  }
  const sessionId = randomBytes(SESSION_ID_BYTES).toString('hex');
  link.send({ type: 'WELCOME', sessionId, resumed: false, phase: opts.phase });
  return {
    sessionId,
    resumeKey: deriveResumeKey(opts.ticket.secret, hello.nonce, destNonce, sessionId),
    version,
    resumed: false,
    destPhase: opts.phase,
    peerCaps: hello.caps,
  };
}

/**
 * A resume while the session's link is alive is refused (PC_ERR_BUSY), never a takeover. A source that reconnects
 * after a cut its old link has not noticed yet should not have to retry for that: within the handshake's time the
 * old link is watched, and the resume goes on as soon as it is dead (closed, or silent past its keepalive
 * timeout); it is refused as soon as its peer is heard again, or when the time is up. Told only to a peer that
 * proved both keys.
 */
async function awaitSessionLinkGone(link: Link, old: Link | null, deadline: number): Promise<void> {
  if (old === null) return;
  const heard = old.bytesReceived;
  while (old.peerAlive) {
    if (link.closed) throw link.closeError ?? new LinkClosedError('PC_ERR_LINK_CLOSED', 'the resuming source left');
    if (old.bytesReceived !== heard || Date.now() + OLD_LINK_POLL_MS > deadline - ANSWER_MARGIN_MS) {
      throw new BusyError('PC_ERR_BUSY', 'the session\'s link is alive (its peer was heard within the keepalive timeout); retry once it is gone');
    }
    await new Promise((r) => setTimeout(r, OLD_LINK_POLL_MS));
  }
}

/** Time left until `deadline`, at least 1 ms (a step already late times out at once). */
function remaining(deadline: number): number {
  return Math.max(1, deadline - Date.now());
}
