// Numbers of the simulated guest (workload, RAM, demo image, verification), each with why it is what it is.
// The self-describing pattern's and the PRNG's own bit layouts stay in pattern.ts and prng.ts: they are the format.

// --- the guest's clock and disk workload
/** Rate timer period: 5 ms keeps bursts small without costing much CPU. */
export const DEFAULT_TICK_MS = 5;
/** Disk operations in flight at most, by default: a few, like a guest's queue depth. */
export const DEFAULT_MAX_IN_FLIGHT = 4;
/** After an event-loop stall, catch up at most this much time worth of dirtying, not everything. */
export const MAX_TICK_GAP_MS = 1000;
/** Disk operations owed for at most this long (seconds) may start back to back. */
export const MAX_BURST_S = 0.05;
/** Largest disk operation, in write units: 16 × 4 KiB = 64 KiB, a common guest I/O size. */
export const MAX_OP_UNITS = 16;
/** First retry of a failed disk operation after this long; doubled each time up to DISK_RETRY_MAX_MS. */
export const DISK_RETRY_MIN_MS = 50;
/** Longest wait between retries of a failed disk operation: the guest keeps trying while the link is down. */
export const DISK_RETRY_MAX_MS = 2000;
/** At most one warning per this long about disk errors: a dead link must not flood the log. */
export const ERROR_LOG_INTERVAL_MS = 1000;
/** Read mismatches logged one by one up to this many; after that, every MISMATCH_LOG_EVERY-th. */
export const MAX_MISMATCH_LOGS = 20;
/** After MAX_MISMATCH_LOGS, one read mismatch in this many is logged (the count is in the stats anyway). */
export const MISMATCH_LOG_EVERY = 1000;

// --- the demo image
/** The demo image is laid out in slots of 1 MiB, each all data, written zeroes or a hole. */
export const DEMO_SLOT_BYTES = 1 << 20;
/** The layout repeats per group of this many slots: 1–2 zero, 1–2 hole, the rest data, shuffled. */
export const DEMO_GROUP_SLOTS = 8;
/** Zero and hole slots per group are each 1 + nextInt(this): 1 or 2. */
export const DEMO_EXTRA_SLOTS = 2;
/** The zeroed stretches inside data slots are aligned to and sized in 512-byte sectors, like a guest's writes. */
export const DEMO_SECTOR = 512;
/** A data slot's zeroed stretch is 1..96 sectors (0.5–48 KiB): it cuts 4 KiB and 64 KiB blocks part way. */
export const DEMO_MAX_ZERO_SECTORS = 96;
/** AES-128-CTR makes the demo's random data: a 16-byte key, an 8-byte nonce, 16-byte counter blocks. */
export const AES_KEY_BYTES = 16;
export const AES_NONCE_BYTES = 8;
export const AES_BLOCK_BYTES = 16;

// --- verification
/** Bytes read per step when comparing images: big sequential reads, a few MiB of memory. */
export const VERIFY_CHUNK_BYTES = 4 << 20;
/** Give the event loop a turn every this many bytes, so a verifying process still answers its sockets. */
export const VERIFY_YIELD_EVERY = 64 << 20;
/** Mismatches are counted per block of this size unless told otherwise: the migration's default block size. */
export const VERIFY_DEFAULT_BLOCK_BYTES = 64 * 1024;
/** Mismatched blocks described one by one, unless told otherwise: enough to see the pattern of a bug. */
export const VERIFY_DEFAULT_MAX_REPORTED = 10;
