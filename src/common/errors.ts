// One error hierarchy for the whole project: every error we raise has a stable string code from ERROR_CODES,
// so tests assert class and code, and operators can grep logs for a code.

export const ERROR_CODES = {
  // migration wire (src/protocol)
  PC_ERR_BAD_MAGIC: 'frame does not start with the postcopy magic',
  PC_ERR_FRAME_TOO_LARGE: 'declared payload length exceeds the frame cap',
  PC_ERR_CHECKSUM: 'payload checksum mismatch',
  PC_ERR_UNKNOWN_TYPE: 'unknown frame type',
  PC_ERR_MALFORMED: 'frame payload does not match its type',
  PC_ERR_UNKNOWN_REQUEST: 'frame names a request id that is not outstanding',
  PC_ERR_OUT_OF_RANGE: 'offset or length outside the image',
  PC_ERR_VERSION: 'no common protocol version',
  PC_ERR_AUTH: 'ticket authentication failed',
  PC_ERR_TICKET_EXPIRED: 'ticket has expired',
  PC_ERR_BUSY: 'destination is busy',
  PC_ERR_UNEXPECTED: 'message not valid in the current phase',
  PC_ERR_PEER: 'peer reported an error',
  PC_ERR_DIGEST: 'digest mismatch',
  PC_ERR_LINK_CLOSED: 'migration link closed',
  PC_ERR_TIMEOUT: 'timed out',
  PC_ERR_ROLLBACK: 'migration rolled back before cut-over',
  PC_ERR_STATE: 'illegal state transition',
  PC_ERR_BACKEND: 'image backend I/O failed',
  PC_ERR_DISK_FULL: 'no space left on the disk under the image',
  PC_ERR_USAGE: 'bad command-line usage',
  PC_ERR_STATE_DIR: 'state directory is unusable or inconsistent',
  PC_ERR_SAME_IMAGE: "destination image is the source's own image",
  PC_ERR_IMAGE_EXISTS: 'destination image already exists',
  PC_ERR_HYPERVISOR: 'hypervisor (QEMU) failed',
  // NBD (src/nbd)
  NBD_ERR_BAD_MAGIC: 'NBD magic mismatch',
  NBD_ERR_TOO_LARGE: 'NBD length exceeds cap',
  NBD_ERR_MALFORMED: 'malformed NBD message',
  NBD_ERR_UNKNOWN_COOKIE: 'NBD reply for an unknown cookie',
  NBD_ERR_HANDSHAKE: 'NBD handshake failed',
  NBD_ERR_OPTION: 'NBD option refused by server',
  NBD_ERR_REQUEST: 'NBD request failed',
  NBD_ERR_CLOSED: 'NBD connection closed',
  NBD_ERR_URI: 'bad NBD URI',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class PostcopyError extends Error {
  readonly code: ErrorCode;
  /** The specific part of the message, without the code's fixed text (for wrapping without repeating it). */
  readonly detail: string | undefined;
  constructor(code: ErrorCode, detail?: string, options?: { cause?: unknown }) {
    super(detail ? `${ERROR_CODES[code]}: ${detail}` : ERROR_CODES[code], options);
    this.code = code;
    this.detail = detail;
    this.name = new.target.name;
  }
}

/** The peer's bytes broke the wire format: the stream is out of sync or hostile, so the connection must close. */
export class ProtocolError extends PostcopyError {}
/** Authentication or authorization of the peer failed. */
export class AuthError extends PostcopyError {}
/** An operation did not finish in its allotted time. */
export class TimeoutError extends PostcopyError {}
/** The link went away; the operation may be retried after reconnecting. */
export class LinkClosedError extends PostcopyError {}
/** The image backend (file or NBD server) failed an I/O. */
export class BackendError extends PostcopyError {}
/** A state machine was asked for a transition it does not allow: a bug or a peer out of phase. */
export class StateError extends PostcopyError {}
/** A command-line or configuration mistake, reported as one line. */
export class UsageError extends PostcopyError {}
/** NBD wire or negotiation failure. */
export class NbdError extends PostcopyError {
  /** NBD errno-style value (EIO=5, EINVAL=22, ...) when the error came from a reply. */
  readonly errno: number | undefined;
  constructor(code: ErrorCode, detail?: string, options?: { cause?: unknown; errno?: number }) {
    super(code, detail, options);
    this.errno = options?.errno;
  }
}

export function isPostcopyError(e: unknown): e is PostcopyError {
  return e instanceof PostcopyError;
}

/**
 * The OS error code (ENOSPC, EIO, EACCES, ...) of a failed system call made by our own I/O, or null when `e` is
 * not one (a bug, or a rule the peer broke). One rule for every layer that must tell a local fault from the peer's.
 */
export function systemErrorCode(e: unknown): string | null {
  if (isPostcopyError(e) || !(e instanceof Error)) return null;
  const { code, syscall } = e as NodeJS.ErrnoException;
  return typeof code === 'string' && typeof syscall === 'string' ? code : null;
}
