// NBD sizes and caps: the spec's limits and the defaults we chose within them, each with its reason.

// ---- caps and defaults (ours, and the spec's) ----
/** Default (and most widely honoured) maximum payload: 32 MiB. */
export const NBD_DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024;
/** Default preferred block size. */
export const NBD_DEFAULT_PREFERRED_BLOCK = 4096;
/** Largest minimum block size the spec allows. */
export const NBD_MAX_MIN_BLOCK = 64 * 1024;
/** A request payload beyond this is treated as a DoS: the connection is closed. */
export const NBD_DOS_PAYLOAD = 64 * 1024 * 1024;
/** Most extents a BLOCK_STATUS chunk may carry. */
export const NBD_MAX_EXTENTS = 1 << 20;
/** The spec's "unlimited" maximum payload. */
export const NBD_MAX_PAYLOAD_UNLIMITED = 0xffffffff;
/** Smallest preferred block size we advertise: the sector size every client can honour. */
export const NBD_MIN_PREFERRED_BLOCK = 512;

// ---- our client's defaults ----
/** Requests on the wire at once: qemu's queue depth, enough to fill a link without hogging the server. */
export const CLIENT_MAX_IN_FLIGHT = 16;
/** TCP connect plus handshake: long enough for a loaded host, short enough that a dead address is reported. */
export const CLIENT_CONNECT_TIMEOUT_MS = 30_000;
/** close() waits this long for the server's FIN after NBD_CMD_DISC before dropping the socket. */
export const CLIENT_CLOSE_TIMEOUT_MS = 5_000;
/** close() waits this long for requests in flight; generous, since nbdkit 1.32 does not survive a drop mid-request. */
export const CLIENT_DRAIN_TIMEOUT_MS = 60_000;
/** Largest option reply accepted (a REP_SERVER list or info item): far above any honest reply, yet bounded. */
export const CLIENT_MAX_OPTION_REPLY = 1024 * 1024;

// ---- our server's defaults ----
/** Largest option request accepted: names and queries are ≤ 4 KiB each; 1 MiB is generous and bounded. */
export const SERVER_MAX_OPTION_LENGTH = 1024 * 1024;
/** Requests a connection may have being served at once (more wait unread: backpressure). */
export const SERVER_MAX_IN_FLIGHT = 64;
/** Payload bytes a connection may hold in flight: bounds memory per client at one DoS-sized request. */
export const SERVER_MAX_IN_FLIGHT_BYTES = 64 * 1024 * 1024;
/** Options a client may send before GO: real clients send a handful; more is a client stuck in a loop. */
export const SERVER_MAX_OPTIONS = 256;
/** A client that has not finished the handshake by then is dropped (a slowloris holds a slot otherwise). */
export const SERVER_HANDSHAKE_TIMEOUT_MS = 10_000;
/** Connections served at once; more are refused at accept. */
export const SERVER_MAX_CONNECTIONS = 128;
/** TCP keepalive probe interval: finds a vanished client within minutes rather than hours. */
export const SERVER_KEEPALIVE_MS = 30_000;
/** close() waits this long for connections to finish before destroying them. */
export const SERVER_CLOSE_TIMEOUT_MS = 10_000;
/** After our FIN, a client that never reads is destroyed after this long rather than kept half-open. */
export const SERVER_HALF_CLOSE_TIMEOUT_MS = 5_000;
/** A READ's data is handed out as a view when it is at least 1/this of the socket buffer under it, else copied. */
export const CLIENT_VIEW_MIN_SHARE = 2;
