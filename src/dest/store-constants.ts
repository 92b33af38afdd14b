// Constants of D's data plane (block store, committer, fetcher, streamer, local-fault gate): each with why that
// value. Wire sizes (BULK_CHUNK_BYTES, …) live in src/protocol/constants.ts and are imported, not repeated.
import { BULK_CHUNK_BYTES } from '../protocol/constants.js';

/** Batch bitmap commits: one image fdatasync + one bitmap write per interval, not per block. */
export const COMMIT_INTERVAL_MS = 25;
/** writeZeroes writes at most this many bytes of zeroes at once: a huge TRIM never allocates a huge buffer. */
export const ZERO_CHUNK_BYTES = 4 * 1024 * 1024;
/** While the disk fails, the retry writes this many bytes of zeroes into missing blocks to see if it takes
 * writes: about what a refill of the stream writes, so a disk with room for one block only is still full to us. */
export const PROBE_BYTES = 1024 * 1024;
/** The final check reads the image in runs of this many bytes, yielding between them. */
export const DIGEST_READ_BYTES = 4 * 1024 * 1024;

/** A request S fails (BLOCK_ERR) is asked again this many times before its readers get the error. */
export const MAX_FETCH_ERROR_RETRIES = 5;
/** A failed block read is asked again after 100 ms, doubling per failure (100 ms … 1.6 s over the five retries). */
export const FETCH_RETRY_BACKOFF = { initialMs: 50, maxMs: 50 * 2 ** MAX_FETCH_ERROR_RETRIES };
/** A local failure to keep fetched data is logged at most this often (it repeats for every part until fixed). */
export const SINK_FAILURE_LOG_MS = 30_000;
/** Fallback reads go in parts of one wire chunk (whole blocks for any block size up to it). */
export const FALLBACK_CHUNK_BYTES = BULK_CHUNK_BYTES;
/** Request ids wrap below 2^32 with room to spare: an id is a u32 on the wire, and 0 is never used. */
export const LAST_REQUEST_ID = 0xfffffff0;

/** The window's floor while demand reads are recent on a short path: a demand reply queues behind little bulk data. */
export const DEMAND_WINDOW_BYTES = 512 * 1024;
/** How long after the last demand miss the smaller window holds. */
export const DEMAND_QUIET_MS = 100;

/** A failing disk is first probed again after this long (doubling per failed probe). */
export const FAULT_RETRY_MIN_MS = 200;
/** … up to this long between probes: a freed disk is noticed within seconds. */
export const FAULT_RETRY_MAX_MS = 5_000;
/** While a local fault lasts it is reported again at most this often. */
export const FAULT_REPORT_EVERY_MS = 30_000;
/** A fault's start and end are said at most this often (a disk that fills and frees over and over stays quiet). */
export const FAULT_FLIP_EVERY_MS = 2_000;

// The present-bitmap file: a header, then one bit per block (src/common/bits.ts's layout).
// Header: magic(8) · version u32 · blockSize u32 · blockCount u64 · reserved(8), big-endian.
/** Says the file is ours (8 latin1 bytes at offset 0). */
export const BITMAP_MAGIC = 'PCBITMAP';
/** The layout's version: a file of another version is refused, never guessed at. */
export const BITMAP_VERSION = 1;
/** Header size: the fields below plus 8 reserved bytes, so the bits start on a 32-byte boundary. */
export const BITMAP_HEADER_BYTES = 32;
/** Where the version (u32) sits, right after the magic. */
export const BITMAP_VERSION_AT = 8;
/** Where the block size (u32) sits. */
export const BITMAP_BLOCK_SIZE_AT = 12;
/** Where the block count (u64) sits. */
export const BITMAP_BLOCK_COUNT_AT = 16;

/** The streamer tops its window up once at most this fraction of it is in flight (one batch, not one per reply). */
export const STREAM_REFILL_FRACTION = 0.5;
/** … or once this much is free, whichever is less: a large window is not refilled in one burst. */
export const STREAM_REFILL_MAX_BYTES = 1024 * 1024;

/**
 * Bytes of bulk writes in flight at most (kept beside RSS: the parts stay referenced until written). The stream's
 * window releases a request once its bytes arrived, not once written: this bounds what a slow disk lets pile up.
 */
export const WRITE_WINDOW_BYTES = 8 * 1024 * 1024;
