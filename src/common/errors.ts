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
  PC_ERR_BEYOND_IMAGE: 'a local read or write reaches outside the image',
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

/** The peer's bytes broke the wire format or the protocol's rules: the connection must close. */
export class ProtocolError extends PostcopyError {}
/** Authentication or authorization of the peer failed. */
export class AuthError extends PostcopyError {}
/** Refused at the door: too many connections are authenticating; the peer may retry. */
export class BusyError extends PostcopyError {}
/** An operation did not finish in its allotted time. */
export class TimeoutError extends PostcopyError {}
/** The link went away; the operation may be retried after reconnecting. */
export class LinkClosedError extends PostcopyError {}
/** The image backend (file or NBD server) or the disk under D's image failed an I/O. */
export class BackendError extends PostcopyError {}
/** A state machine was asked for a transition it does not allow: a bug or a peer out of phase. */
export class StateError extends PostcopyError {}
/** A command-line or configuration mistake, reported as one line. */
export class UsageError extends PostcopyError {}
/** The hypervisor (QEMU) or its QMP monitor failed. */
export class HypervisorError extends PostcopyError {}
/** The migration was rolled back before cut-over: the guest runs on S, nothing of it is left on D. */
export class RolledBackError extends PostcopyError {
  /** The rollback an error caused: the cause's own words (not "rolled back: rolled back: ..."). */
  static from(cause: PostcopyError): RolledBackError {
    if (cause instanceof RolledBackError) return cause;
    return new RolledBackError('PC_ERR_ROLLBACK', cause.code === 'PC_ERR_ROLLBACK' ? cause.detail : cause.message, { cause });
  }
}
/** NBD wire or negotiation failure. */
export class NbdError extends PostcopyError {
  /** NBD errno-style value (EIO=5, EINVAL=22, ...) when the error came from a reply. */
  readonly errno: number | undefined;
  constructor(code: ErrorCode, detail?: string, options?: { cause?: unknown; errno?: number }) {
    super(code, detail, options);
    this.errno = options?.errno;
  }
}

/**
 * Which class owns each code: an error with a code is always of that class (tests in test/common/errors.test.ts
 * hold every construction in src to it), so `catch` can test the class and logs can grep the code.
 */
export const CODE_OWNER = {
  PC_ERR_BAD_MAGIC: ProtocolError,
  PC_ERR_FRAME_TOO_LARGE: ProtocolError,
  PC_ERR_CHECKSUM: ProtocolError,
  PC_ERR_UNKNOWN_TYPE: ProtocolError,
  PC_ERR_MALFORMED: ProtocolError,
  PC_ERR_UNKNOWN_REQUEST: ProtocolError,
  PC_ERR_OUT_OF_RANGE: ProtocolError,
  PC_ERR_VERSION: ProtocolError,
  PC_ERR_UNEXPECTED: ProtocolError,
  PC_ERR_PEER: ProtocolError,
  PC_ERR_DIGEST: ProtocolError,
  PC_ERR_AUTH: AuthError,
  PC_ERR_TICKET_EXPIRED: AuthError,
  PC_ERR_BUSY: BusyError,
  PC_ERR_LINK_CLOSED: LinkClosedError,
  PC_ERR_TIMEOUT: TimeoutError,
  PC_ERR_ROLLBACK: RolledBackError,
  PC_ERR_STATE: StateError,
  PC_ERR_BACKEND: BackendError,
  PC_ERR_DISK_FULL: BackendError,
  PC_ERR_BEYOND_IMAGE: BackendError,
  PC_ERR_USAGE: UsageError,
  PC_ERR_STATE_DIR: UsageError,
  PC_ERR_SAME_IMAGE: UsageError,
  PC_ERR_IMAGE_EXISTS: UsageError,
  PC_ERR_HYPERVISOR: HypervisorError,
  NBD_ERR_BAD_MAGIC: NbdError,
  NBD_ERR_TOO_LARGE: NbdError,
  NBD_ERR_MALFORMED: NbdError,
  NBD_ERR_UNKNOWN_COOKIE: NbdError,
  NBD_ERR_HANDSHAKE: NbdError,
  NBD_ERR_OPTION: NbdError,
  NBD_ERR_REQUEST: NbdError,
  NBD_ERR_CLOSED: NbdError,
  NBD_ERR_URI: NbdError,
} as const satisfies Record<ErrorCode, new (code: ErrorCode, detail?: string, options?: { cause?: unknown }) => PostcopyError>;

/** A PostcopyError of the class that owns `code` (for code that picks the code at run time, e.g. from a peer). */
export function errorFor(code: ErrorCode, detail?: string, options?: { cause?: unknown }): PostcopyError {
  return new CODE_OWNER[code](code, detail, options);
}

/**
 * Anything thrown, as a PostcopyError: ours pass through unchanged; anything else (a bug, a system error) is
 * wrapped by `wrap`, given its message and itself as the cause. The one place that decides "ours or not".
 */
export function toPostcopyError(e: unknown, wrap: (detail: string, options: { cause: unknown }) => PostcopyError): PostcopyError {
  if (e instanceof PostcopyError) return e;
  return wrap(e instanceof Error ? e.message : String(e), { cause: e });
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
