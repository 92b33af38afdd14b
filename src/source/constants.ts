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
