// Numbers of the `postcopy` command itself (the agents' own are in their areas), each with why it is what it is.

/** sun_path holds 108 bytes with the terminating NUL: a longer socket path cannot be bound. */
export const MAX_SOCKET_PATH_BYTES = 107;

/** After a command's work is done, pending handles (a socket's close timer) get this long before the process exits. */
export const EXIT_GRACE_MS = 200;

/** Characters of the terminal progress bar: fits an 80-column line beside the rates. */
export const PROGRESS_BAR_WIDTH = 30;
/** Progress sampled (event written, bar redrawn) this often by default: smooth on a terminal, light in an events file. */
export const DEFAULT_PROGRESS_INTERVAL_MS = 500;
/** Off a terminal, a progress line at least this often even when nothing changed: a stall still shows. */
export const PROGRESS_QUIET_LINE_MS = 30_000;

/** Random bytes in the demo's throwaway ticket: 256 bits, well over MIN_SECRET_BYTES. */
export const DEMO_TICKET_BYTES = 32;
/** How often the demo reads the agents' event files: phase changes show with no noticeable lag. */
export const DEMO_EVENTS_POLL_MS = 250;
/** The demo prints a post-copy progress line at most this often: readable, not a flood. */
export const DEMO_PROGRESS_EVERY_MS = 2000;
