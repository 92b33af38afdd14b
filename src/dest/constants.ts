// D's numbers, each with why it has that value (wire sizes live in src/protocol/constants.ts).

/** Largest image D accepts (1 PiB): far above any real disk, low enough that block counts stay exact in a double. */
export const MAX_IMAGE_BYTES = 2 ** 50;

/** Nonces remembered against replay; past this the set is cleared (a replay then needs a fresh ticket window anyway). */
export const SEEN_NONCES_CAP = 10_000;

/** Largest simulated guest RAM D allocates for S (64 GiB): a hostile BEGIN must not make D allocate without bound. */
export const MAX_SIM_GUEST_RAM_BYTES = 64 * 2 ** 30;

/** After a rollback caused by a lost link, keep answering S's resume attempts this long so S learns of it. */
export const DEFAULT_ABORT_GRACE_MS = 30_000;

/** Complete but the link lost before CONFIRM: wait this long for S to come back before finishing anyway. */
export const DEFAULT_CONFIRM_GRACE_MS = 60_000;

/**
 * Background-stream bytes in flight at most by default (--bulk-window): the path model sizes the window below it.
 * The model keeps about twice the bandwidth-delay product in flight, so 64 MiB serves 80 ms of round trip at 400 MiB/s;
 * those bytes are requests S has yet to answer or data on the wire, not D's memory.
 */
export const DEFAULT_MAX_STREAM_WINDOW_BYTES = 64 * 1024 * 1024;

/** RAM bytes S may have in flight to a simulated guest at once: enough to keep a fast link busy during pre-copy. */
export const RAM_CREDIT_WINDOW = 32 * 1024 * 1024;

/** While S is away after cut-over, say how much exists only on S this often: often enough to act on, rare enough to read. */
export const AWAY_REPORT_MS = 30_000;
