// Numbers of the shared helpers in src/common, each with why it is what it is.

/** Mode of every file we create that may hold secrets or image data (state, events, logs): the operator's alone. */
export const PRIVATE_FILE_MODE = 0o600;
/** Mode of every directory we create for state: the operator's alone (DESIGN §1). */
export const PRIVATE_DIR_MODE = 0o700;

/** isAllZero compares this much at a time against one zero buffer: memcmp speed, and a small buffer kept for it. */
export const ZERO_COMPARE_GRAIN = 64 * 1024;


/**
 * The events envelope's `schemaVersion` (schema/events.v1.json). Bumped when a field is removed or renamed, changes
 * its type or unit, or an event changes meaning; adding an event or a field does not (readers ignore the unknown).
 */
export const EVENTS_SCHEMA_VERSION = 1;

/**
 * An unchanged `progress` sample still reaches the events file every this many samples: a heartbeat an
 * orchestrator can time out on (10 s at the default --progress-interval of 500 ms) instead of a line per tick.
 */
export const PROGRESS_IDLE_SAMPLES = 20;

/**
 * A bulk rate cap lets this long of its rate go at once (timers fire late: one wake-up sends what came due), so a
 * rate measured over a second or more is within a fraction of a percent of the cap …
 */
export const RATE_BURST_MS = 5;
/**
 * … and at least this many bytes: one bulk chunk (protocol BULK_CHUNK_BYTES, which common may not import; a test
 * checks they agree), so a tiny cap still lets a whole chunk go instead of waiting forever for it.
 */
export const RATE_MIN_BURST_BYTES = 256 * 1024;
