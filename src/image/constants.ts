// Constants of the image files S serves from and D's CLI opens (a fallback image): reading them, scanning them for zeroes.
import { BULK_CHUNK_BYTES } from '../protocol/constants.js';

/** Granularity of the zero map: runs are whole multiples of this (the tail may be shorter); 64 KiB, one default block. */
export const ZERO_SCAN_GRAIN = 64 * 1024;
/** Bytes the zero scan reads per step: the block server's chunk, so a step's buffer can be sent as it is. */
export const SCAN_CHUNK = BULK_CHUNK_BYTES;
/** The scan hands its zero runs over at least this often (bytes scanned): D skips them soon, in frames of a useful size. */
export const ZERO_RUN_REPORT_BYTES = 2 * 1024 * 1024;

/** Unit of fstat's st_blocks (POSIX leaves it open; Linux counts 512-byte units). */
export const STAT_BLOCK_BYTES = 512;
/** Unit of Linux's /sys/dev/block/M:m/size, whatever the device's own sector size. */
export const SYSFS_SECTOR_BYTES = 512;

/** The field tool that maps a file's holes (Debian qemu-utils): `qemu-img map --output=json`. */
export const MAP_TOOL = 'qemu-img';
/** A map the tool has not finished in this long is given up (the scan runs instead): it is one lseek walk. */
export const MAP_TIMEOUT_MS = 60_000;
/** One extent object of the tool's JSON is a short line: longer is not its output, refused before it is buffered. */
export const MAP_MAX_OBJECT_CHARS = 4096;
/** What is kept of the tool's stderr for the log line when it fails. */
export const MAP_STDERR_KEEP_CHARS = 2048;
/** The map's zero runs go to D in batches of at most this many (each batch yields the event loop). */
export const MAP_RUNS_PER_REPORT = 4096;
/** Allocated bytes a file may have beyond the data its map names (the filesystem's own extent blocks) ... */
export const MAP_ALLOCATED_SLACK_BYTES = 1024 * 1024;
/** ... plus this much per extent of the map. */
export const MAP_ALLOCATED_SLACK_PER_EXTENT = 64;
