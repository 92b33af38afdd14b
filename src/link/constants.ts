// The migration link's constants, each with its reason: handshake, guest-stream channel, send scheduling, keepalive
// (the wire's own are in src/protocol/constants.ts).

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

// The link's own defaults (send scheduling, keepalive, handshake budget).

/** Unsent bytes the socket may hold before we stop handing it frames: shallow, so an urgent frame waits behind little. */
export const LINK_SOCKET_HIGH_WATER_BYTES = 512 * 1024;
/** Queued urgent frames: far above any honest burst of control and demand traffic; beyond is a bug or a flood. */
export const LINK_MAX_URGENT_FRAMES = 8192;
/** Queued bulk bytes before producers wait: a few bulk chunks, enough to keep the socket busy. */
export const LINK_MAX_BULK_QUEUE_BYTES = 4 * 1024 * 1024;
/** Send a PING after this long without hearing the peer. */
export const LINK_KEEPALIVE_INTERVAL_MS = 1000;
/** Declare the peer dead after this long without a whole frame from it: ten missed keepalives. */
export const LINK_KEEPALIVE_TIMEOUT_MS = 10_000;
/** The whole handshake (hello, challenge, auth, welcome) on a loaded host. */
export const LINK_HANDSHAKE_TIMEOUT_MS = 10_000;
/** The keepalive check runs at least this far apart, however short the configured interval. */
export const LINK_MIN_TICK_MS = 50;
/** Checks per keepalive timeout: a silent peer is noticed within a quarter of the timeout past it. */
export const LINK_TICKS_PER_TIMEOUT = 4;
/** After our FIN, a peer that neither reads nor closes is dropped after this long. */
export const LINK_LINGER_MS = 1000;
/** PING sequence numbers are u32 on the wire: they wrap. */
export const PING_SEQ_MASK = 0xffffffff;
