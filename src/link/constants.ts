// Constants of the migration link's handshake and guest-stream channel (the wire's own are in src/protocol/constants.ts).

/**
 * Bytes of a hypervisor's stream the receiving agent lets the sender have in flight: 64 bulk chunks, enough to
 * keep a loopback or LAN link busy while bounding what either side buffers.
 */
export const STREAM_CREDIT_WINDOW = 16 * 1024 * 1024;

/** Random bytes in a session id D issues: 128 bits, never repeated by chance; not a secret (the resume key is). */
export const SESSION_ID_BYTES = 16;

/** How often a resume waiting on the session's old link looks at it: well under a keepalive interval. */
export const OLD_LINK_POLL_MS = 20;
/** Time kept back from the handshake's deadline to answer the source before its own deadline passes. */
export const ANSWER_MARGIN_MS = 100;
