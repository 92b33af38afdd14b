// Pure pieces of the handshake: ticket parsing, version choice, mutual HMAC proofs, resume-key derivation.
// The ticket never crosses the wire: each side proves it holds the key by an HMAC over both sides' nonces.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { AuthError, ProtocolError, UsageError } from '../common/errors.js';
import { MIN_SECRET_BYTES, NONCE_BYTES, NONCE_HEX_CHARS, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, TICKET_ID_BYTES } from './constants.js';

export interface Ticket {
  secret: Buffer;
  /** ms since epoch after which the ticket may not open a new session (a resume still works). */
  expiresAt?: number;
}

/**
 * Ticket file: the first non-empty line is the shared secret; an optional line `expires=<ISO-8601>`
 * bounds when it may start a session.
 */
export function parseTicket(text: string): Ticket {
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0 && !l.startsWith('#'));
  const secretLine = lines.find((l) => !l.startsWith('expires='));
  if (!secretLine || Buffer.byteLength(secretLine) < MIN_SECRET_BYTES) {
    throw new UsageError('PC_ERR_USAGE', `ticket secret must be at least ${MIN_SECRET_BYTES} bytes`);
  }
  const exp = lines.find((l) => l.startsWith('expires='));
  const ticket: Ticket = { secret: Buffer.from(secretLine, 'utf8') };
  if (exp) {
    const t = Date.parse(exp.slice('expires='.length));
    if (Number.isNaN(t)) throw new UsageError('PC_ERR_USAGE', `bad ticket expiry: ${exp}`);
    ticket.expiresAt = t;
  }
  return ticket;
}

export function checkTicketValid(ticket: Ticket, now: number): void {
  if (ticket.expiresAt !== undefined && now > ticket.expiresAt) {
    throw new AuthError('PC_ERR_TICKET_EXPIRED', new Date(ticket.expiresAt).toISOString());
  }
}

/**
 * The ticket's public name, sent in HELLO so a host's one migration port can hand the connection to the job that
 * holds this ticket. An HMAC under the secret of a fixed label: it names the ticket without revealing it (and
 * proves nothing: the handshake's proofs still decide).
 */
export function ticketId(ticket: Ticket): string {
  return createHmac('sha256', ticket.secret).update('postcopy ticket id v1').digest().subarray(0, TICKET_ID_BYTES).toString('hex');
}

export function newNonce(): string {
  return randomBytes(NONCE_BYTES).toString('hex');
}

/** A peer's nonce must be a whole one (the codec already checked it is hex): a shorter one weakens the proofs. */
export function checkNonce(nonce: string): void {
  if (nonce.length !== NONCE_HEX_CHARS) throw new AuthError('PC_ERR_AUTH', `nonce of ${nonce.length / 2} bytes, must be ${NONCE_BYTES}`);
}

/** Highest version both ranges contain, or a protocol error. */
export function chooseVersion(peer: [number, number], ours: [number, number] = [PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX]): number {
  const v = Math.min(peer[1], ours[1]);
  if (v < Math.max(peer[0], ours[0])) {
    throw new ProtocolError('PC_ERR_VERSION', `peer speaks ${peer[0]}..${peer[1]}, we speak ${ours[0]}..${ours[1]}`);
  }
  return v;
}

export type ProofRole = 'dest' | 'source';

/** HMAC proof that `role` holds `key`, bound to both nonces (and the session when resuming). */
export function computeProof(key: Buffer, role: ProofRole, sourceNonce: string, destNonce: string, sessionId = ''): string {
  return createHmac('sha256', key).update(`postcopy-v1|${role}|${sourceNonce}|${destNonce}|${sessionId}`).digest('hex');
}

/** `detail` says, in the refusal, whose proof it was and what may differ. */
export function verifyProof(expected: string, got: string, detail = 'proof does not match'): void {
  const a = Buffer.from(expected, 'hex');
  const b = Buffer.from(got, 'hex');
  if (a.length !== b.length || !timingSafeEqual(a, b)) throw new AuthError('PC_ERR_AUTH', detail);
}

/** Key that lets S resume this session after the ticket is gone; derived on both sides, never sent. */
export function deriveResumeKey(ticketSecret: Buffer, sourceNonce: string, destNonce: string, sessionId: string): Buffer {
  return createHmac('sha256', ticketSecret).update(`postcopy-v1|resume|${sourceNonce}|${destNonce}|${sessionId}`).digest();
}

/**
 * Key of a resume's proofs: the resume key (kept in state files) bound to the ticket secret, so a resume
 * proves both. An expired ticket still resumes: expiry bounds new sessions only. Never sent.
 */
export function resumeProofKey(ticketSecret: Buffer, resumeKey: Buffer): Buffer {
  return createHmac('sha256', ticketSecret).update('postcopy-v1|resume-proof|').update(resumeKey).digest();
}
