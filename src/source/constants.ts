// S's own numbers, each with why it is what it is. Wire values live in src/protocol/constants.ts.

/** Read buffers kept for reuse: the bulk queue, the socket's high-water mark and the scan's lead in flight. */
export const READ_BUFFERS_KEPT = 64;

/** D's PREPARED may take this long: it creates a sparse image and readies a hypervisor (a QEMU start is slow). */
export const PREPARED_WAIT_MS = 60_000;

/** Read-ahead cache by default: 32 MiB, four scan leads, so the scan's data waits there for the stream. */
export const READ_AHEAD_DEFAULT_BYTES = 32 * 1024 * 1024;

/**
 * Backoff for reaching D (fresh connect, D busy, and reconnects after cut-over): start fast (a blip heals in
 * 100 ms), back off to 5 s so a long outage costs D little, never longer (D waits on S's blocks).
 */
export const RECONNECT_BACKOFF = { initialMs: 100, maxMs: 5000 } as const;

/** One TCP/TLS connect attempt: a SYN answered within 5 s or the host is away (the backoff tries again). */
export const CONNECT_ATTEMPT_TIMEOUT_MS = 5000;

/** Blocks listed in the final check's error log: enough to find a pattern, few enough for one log line. */
export const MISMATCH_LOG_BLOCKS = 16;

/** Most requests D may have outstanding at once; more is a flood and cuts D off. */
export const MAX_OUTSTANDING_REQUESTS = 4096;
/** The errno a failed read is reported to D with (BLOCK_ERROR): EIO, what a disk says when a read fails. */
export const EIO = 5;

/** Pages per RAM_PAGES frame (1 MiB of data at most). */
export const PAGES_PER_FRAME = 256;
/** Give up converging after this many rounds and cut over anyway (reported): a dirtier faster than the link never converges. */
export const MAX_ROUNDS = 30;
/** After the first round (all of RAM, long, so many pages dirtied meanwhile) the pages get a quarter of the downtime budget. */
export const FIRST_ROUND_DATA_SHARE = 0.25;
/** After later, short rounds half of it: the rest is the cut-over's own cost (device state, digest, Finish). */
export const DATA_SHARE_OF_DOWNTIME = 0.5;
/** Longest stretch of page sending without a turn of the event loop (timers, keepalives, Ctrl-C get in). */
export const YIELD_EVERY_MS = 20;
/** A round under 1 MiB (mostly zero pages) says nothing about the link's rate. */
export const MIN_ROUND_BYTES_FOR_RATE = 1024 * 1024;
/** The rate assumed before one is measured: 500 MB/s, a fast LAN, so the first estimate errs toward another round. */
export const RATE_BEFORE_MEASURED = 500e6;
