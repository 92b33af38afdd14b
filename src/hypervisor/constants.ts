// Numbers of the QEMU adapters (QMP client, process, options), each with why it is what it is.

/** A QMP line longer than this is not QEMU talking to us: drop the connection before buffering more. */
export const QMP_MAX_LINE_BYTES = 4 * 1024 * 1024;
/** A QMP command QEMU does not answer within this is hung: migration commands answer at once, the work runs after. */
export const QMP_COMMAND_TIMEOUT_MS = 30_000;
/** How long QmpClient.connect waits for a just-started QEMU to create its socket and greet, unless told otherwise. */
export const QMP_CONNECT_TIMEOUT_MS = 10_000;
/** The greeting always gets at least this long, even when connect's deadline is nearly spent (QEMU greets at once). */
export const QMP_MIN_GREETING_MS = 1000;
/** Pause between attempts to reach a QMP socket that is not there yet: short next to QEMU's start-up time. */
export const QMP_RETRY_MS = 50;
/** Characters of a non-JSON QMP line quoted in the error: enough to recognise it, one log line at most. */
export const QMP_QUOTE_CHARS = 80;

/** Unix socket paths must fit sun_path (108 bytes with the NUL); kept a little under, for the names we append. */
export const MAX_SOCKET_PATH = 100;
/** Room left for a socket's file name under its directory ('qemu-qmp.sock' and the stream sockets are shorter). */
export const SOCKET_NAME_BUDGET = 32;
/** Characters of QEMU's serial log quoted when it exits early: its last words, still one line on stderr. */
export const QEMU_LOG_QUOTE_CHARS = 400;
/** Lines of QEMU's serial log quoted when it exits early (the error is usually the last one or two). */
export const QEMU_LOG_QUOTE_LINES = 2;

/** The local image's node and the mirror job of the pivot: fixed names, so a retry after a failure finds them. */
export const PIVOT_NODE_NAME = 'postcopy-local';
export const PIVOT_JOB_ID = 'postcopy-pivot';
/** A `sync: none` mirror has nothing to copy: ready as soon as the guest's in-flight requests drain (6 ms measured). */
export const PIVOT_READY_TIMEOUT_MS = 30_000;
/** job-complete swaps the nodes in one drained step (50 ms measured); a guest stuck on a slow disk can stretch it. */
export const PIVOT_COMPLETE_TIMEOUT_MS = 60_000;
