// Numbers of the shared helpers in src/common, each with why it is what it is.

/** Mode of every file we create that may hold secrets or image data (state, events, logs): the operator's alone. */
export const PRIVATE_FILE_MODE = 0o600;
/** Mode of every directory we create for state: the operator's alone (DESIGN §1). */
export const PRIVATE_DIR_MODE = 0o700;

/** isAllZero compares this much at a time against one zero buffer: memcmp speed, and a small buffer kept for it. */
export const ZERO_COMPARE_GRAIN = 64 * 1024;

