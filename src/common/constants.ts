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
